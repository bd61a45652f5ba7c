"""Raw text in, raw text out: `Generator` continues prompts by sampling, greedy or beam search."""

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from nlp_rnn import devices
from nlp_rnn.bundle import Bundle
from nlp_rnn.data import (
    make_batch,
)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.search import (
    Hypothesis,
    SampleOptions,
    SearchOptions,
    beam_search,
    greedy,
    sample,
    sample_in_place,
)
from nlp_rnn.tasks.language_model.config import NAME, GenerateConfig
from nlp_rnn.tasks.predict import precision_for, with_precision
from nlp_rnn.tokenizer import BOS, EOS, UNK, Tokenizer


@dataclass
class Sample:
    prompt: str
    text: str  # the continuation only
    log_prob: float
    tokens: list[int]
    condition: Optional[str] = None


class Generator:
    """Continues prompts: sampling (temperature, top-k, top-p), greedy or beam search."""

    def __init__(self, bundle: Bundle, precision: str = "fp32") -> None:
        if bundle.task != NAME:
            raise NlpRnnError(
                f"{bundle.path}: this is a {bundle.task} model; generate needs a language model"
            )
        if bundle.config.model.reverse:
            raise NlpRnnError(
                f"{bundle.path}: a backward language model (model.reverse) reads text right to left; it scores "
                "text and starts classifiers, but does not generate"
            )
        self.bundle, self.model, self.tokenizer = bundle, bundle.model.eval(), bundle.tokenizer
        self.precision = precision_for(bundle.model, precision, bundle.task)
        self.model = with_precision(self.model, self.precision)
        self.conditions: list[str] = list(bundle.meta.get("conditions") or [])
        # sampling through the model's `CellKernel` where it has one (`fast = False`: `search.sample`)
        self.fast = True
        self._kernel = None
        self.defaults: GenerateConfig = bundle.config.decode

    def kernel(self):
        """The model's `CellKernel` (built once), or None when it has none."""
        if self._kernel is None:
            # int8: the kernel takes the fp32 weights and packs its own int8 products
            source = self.bundle.model if self.precision == "int8" else self.model
            make = getattr(source, "cell_kernel", None)
            self._kernel = (make(self.precision == "int8") if make is not None else None) or False
        return self._kernel or None

    def condition_id(self, condition: Optional[str]) -> Optional[int]:
        if not self.conditions:
            if condition is not None:
                raise NlpRnnError(f"--condition: {self.bundle.path} is not a conditional language model")
            return None
        if condition is None:
            raise NlpRnnError(
                f"--condition: this model generates for a label; give one of: {', '.join(self.conditions)}"
            )
        if condition not in self.conditions:
            raise NlpRnnError(
                f"--condition: unknown label {condition!r} (known: {', '.join(self.conditions)})"
            )
        return self.conditions.index(condition)

    def options(
        self,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        max_tokens: Optional[int] = None,
        allow_unk: Optional[bool] = None,
    ) -> SampleOptions:
        """Sampling options: the given ones over the model's defaults (its config's `decode` section).
        The unknown token is never drawn unless `allow_unk`."""
        d = self.defaults
        return SampleOptions(
            temperature=d.temperature if temperature is None else temperature,
            top_k=d.top_k if top_k is None else top_k,
            top_p=d.top_p if top_p is None else top_p,
            max_tokens=d.max_tokens if max_tokens is None else max_tokens,
            banned=() if (d.allow_unk if allow_unk is None else allow_unk) else (UNK,),
        )

    def check(
        self,
        num_samples: int = 1,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        max_tokens: Optional[int] = None,
        beam_size: int = 1,
        condition: Optional[str] = None,
        stop: Optional[str] = None,
        greedy_search: bool = False,
        allow_unk: Optional[bool] = None,
    ) -> None:
        """Refuses bad options, one line naming the option, before anything is generated (`stop` and
        `greedy_search` take any value; they are accepted so that `generate`'s settings can be checked whole)."""
        check_sampling(self.options(temperature, top_k, top_p, max_tokens), beam_size, num_samples)
        self.condition_id(condition)

    def encode(self, prompt: str) -> list[int]:
        return [BOS] + (self.tokenizer.encode_stream(prompt) if prompt else [])

    def generate(
        self,
        prompts: Sequence[str],
        num_samples: int = 1,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        max_tokens: Optional[int] = None,
        seed: Optional[int] = None,
        stop: Optional[str] = None,
        beam_size: int = 1,
        greedy_search: bool = False,
        condition: Optional[str] = None,
        on_text: Optional[Callable[[str], None]] = None,
        allow_unk: Optional[bool] = None,
    ) -> list[list[Sample]]:
        """`num_samples` continuations per prompt. `on_text` receives the text of the first sequence as it grows."""
        opts = self.options(temperature, top_k, top_p, max_tokens, allow_unk)
        check_sampling(opts, beam_size, num_samples)
        label = self.condition_id(condition)
        prompt_ids = [self.encode(p) for p in prompts for _ in range(num_samples)]
        if not prompt_ids:
            return []
        batch = devices.move(
            make_batch(prompt_ids, labels=None if label is None else [label] * len(prompt_ids)),
            devices.of(self.model),
        )
        watcher = _Watcher(self.tokenizer, len(prompt_ids), stop, on_text)
        if beam_size > 1 or greedy_search:
            search_opts = SearchOptions(
                beam_size=beam_size, max_len_a=0.0, max_len_b=opts.max_tokens, max_length=opts.max_tokens
            )
            found = (
                greedy(self.model, batch, search_opts)
                if beam_size == 1
                else [h[0] for h in beam_search(self.model, batch, search_opts)]
            )
        else:
            gen = torch.Generator(devices.of(self.model)).manual_seed(
                seed if seed is not None else random.SystemRandom().randrange(2**63)
            )
            kernel = self.kernel() if self.fast else None
            watch = (
                watcher.step if stop is not None or on_text is not None else None
            )  # else: nothing per step
            if kernel is not None:
                found = sample_in_place(self.model, kernel, batch, opts, gen, watch)
            else:
                found = sample(self.model, batch, opts, gen, watch)
        out = [[] for _ in prompts]
        for row, hyp in enumerate(found):
            out[row // num_samples].append(self._sample(prompts[row // num_samples], hyp, stop, condition))
        if on_text is not None and watcher.live is None and out and out[0]:
            on_text(out[0][0].text)  # searches do not stream: the whole text at once
        return out

    def _sample(self, prompt: str, hyp: Hypothesis, stop: Optional[str], condition: Optional[str]) -> Sample:
        text = self.tokenizer.decode_tgt([hyp.tokens])[0]
        if stop and stop in text:
            text = text[: text.index(stop)]
        return Sample(prompt, text, hyp.log_prob, hyp.tokens, condition)


class _Watcher:
    """Follows sampling: stops rows whose text contains the stop string, streams the first row's text."""

    def __init__(
        self, tokenizer: Tokenizer, rows: int, stop: Optional[str], on_text: Optional[Callable[[str], None]]
    ) -> None:
        self.tokenizer, self.stop, self.on_text = tokenizer, stop, on_text
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.shown = ""
        self.live: Optional[bool] = None

    def step(self, rows: torch.Tensor, new: torch.Tensor) -> Optional[torch.Tensor]:
        if self.stop is None and self.on_text is None:
            return None
        done = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
        for j, (row, token) in enumerate(zip(rows.tolist(), new.tolist())):
            self.tokens[row].append(token)
            if self.stop is None and row != 0:
                continue
            text = self.tokenizer.decode_tgt([self.tokens[row]])[0]
            if self.stop is not None and self.stop in text:
                done[j] = True
                text = text[: text.index(self.stop)]
            if row == 0 and self.on_text is not None:
                self._show(text, final=bool(done[j]) or token == EOS)
        return done

    def _show(self, text: str, final: bool) -> None:
        """Sends the new part of row 0's text; holds back a trailing partial character (byte pieces)
        and any tail that may be the start of the stop string."""
        self.live = True
        ready = text if final else text.rstrip("\ufffd")
        if not final and self.stop:
            for size in range(min(len(self.stop) - 1, len(ready)), 0, -1):
                if self.stop.startswith(ready[-size:]):
                    ready = ready[:-size]
                    break
        if ready.startswith(self.shown) and len(ready) > len(self.shown):
            self.on_text(ready[len(self.shown) :])
            self.shown = ready


def check_sampling(opts: SampleOptions, beam_size: int, num_samples: int) -> None:
    if not 0 <= opts.temperature <= 100:
        raise NlpRnnError(f"--temperature must be 0 (greedy) to 100, got {opts.temperature}")
    if opts.top_k < 0:
        raise NlpRnnError(f"--top-k must be 0 (off) or positive, got {opts.top_k}")
    if not 0 < opts.top_p <= 1:
        raise NlpRnnError(f"--top-p must be in (0, 1], got {opts.top_p}")
    if opts.max_tokens < 1:
        raise NlpRnnError(f"--max-tokens must be at least 1, got {opts.max_tokens}")
    if beam_size < 1:
        raise NlpRnnError(f"--beam-size must be at least 1, got {beam_size}")
    if num_samples < 1:
        raise NlpRnnError(f"--num-samples must be at least 1, got {num_samples}")
