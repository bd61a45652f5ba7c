"""The language-model task: next-token prediction on raw text, truncated BPTT, `Generator`, perplexity.

Two ways to read a corpus:
- stream (char-rnn, the word-language-model example): each file is one token stream, BOS first,
  EOS last; it is split into `data.streams` contiguous rows and cut into `data.bptt` windows, so
  window k of a row continues window k-1, and the hidden state is carried from one window to the
  next with gradients stopped at the boundary. The tokenizer is byte-exact, so
  `decode(encode(text)) == text`, newlines and runs of spaces included.
- sentence: one line (or table row) is one sequence, BOS ... EOS, padded and masked; optionally
  conditioned on a label column (one-to-many generation from the label's vector).
Validation reports loss and perplexity per token and loss per character (the summed negative
log-likelihood over the raw characters of the text, newlines included), so character and subword
models compare on one scale.
"""

import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import typer

from nlp_rnn import devices, options, textio
from nlp_rnn.bundle import Bundle
from nlp_rnn.config import TokenizerConfig, TrainConfig, _choice, _positive
from nlp_rnn.data import (
    TokenBatcher,
    label_ids,
    label_names,
    make_batch,
    ordered_batches,
    pad,
    read_hub,
    read_table,
    read_text,
    split_by_weight,
    truncate,
)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.language_model import LanguageModel, LMModelConfig, LMState
from nlp_rnn.search import Hypothesis, SampleOptions, SearchOptions, beam_search, greedy, sample
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.defaults import default_model
from nlp_rnn.tasks.evaluation import model_info, table
from nlp_rnn.tasks.predict import precision_for, with_precision
from nlp_rnn.tokenizer import BOS, EOS, Tokenizer

log = logging.getLogger(__name__)
TABLES = (".tsv", ".tab", ".csv", ".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class LMDataConfig:
    train: tuple[str, ...] = ()  # plain text files, or TSV/CSV/JSONL tables with `text_column`
    valid: tuple[str, ...] = ()
    valid_fraction: float = 0.0  # no valid files: the last fraction of the training text (char-rnn's 0.1)
    dataset: Optional[str] = None  # a Hugging Face Hub dataset (or a local dataset folder)
    dataset_config: Optional[str] = None
    train_split: str = "train"
    valid_split: str = "validation"
    text_column: str = "text"
    condition_column: Optional[str] = None  # labels to condition on (sentence mode)
    mode: str = "stream"  # stream | sentence
    streams: int = 64  # stream mode: batch rows, each a contiguous part of the corpus
    bptt: int = 128  # stream mode: window length of truncated backpropagation through time
    max_len: int = 256  # sentence mode: pieces per sequence (longer ones are truncated)

    def __post_init__(self) -> None:
        _choice("data.mode", self.mode, ("stream", "sentence"))
        for name in ("streams", "bptt", "max_len"):
            _positive(f"data.{name}", getattr(self, name))
        if not 0 <= self.valid_fraction < 1:
            raise NlpRnnError(f"config: data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.condition_column and self.mode != "sentence":
            raise NlpRnnError(
                "config: data.condition_column needs data.mode: sentence (one labelled row per sequence)"
            )


@dataclass(frozen=True)
class GenerateConfig:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_tokens: int = 256


@dataclass(frozen=True)
class LMConfig:
    data: LMDataConfig = field(default_factory=LMDataConfig)
    tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(model_type="char", byte_exact=True)
    )
    model: LMModelConfig = field(default_factory=LMModelConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(lr=2e-3, clip_norm=5.0, validate_every=200, patience=10)
    )
    decode: GenerateConfig = field(default_factory=GenerateConfig)


# ----------------------------------------------------------------------------- reading


@dataclass
class Corpus:
    """One split: documents (stream mode: each a token stream) or rows (sentence mode), with conditions."""

    texts: list[str]
    conditions: Optional[list[str]]
    name: str
    rows: bool = False  # True: one sequence per text (sentence mode)

    @property
    def characters(self) -> int:
        """Raw characters the model must predict: sentence mode counts each row's end as its newline."""
        return sum(len(t) for t in self.texts) + (len(self.texts) if self.rows else 0)


def read_corpus(files: Sequence[str], data: LMDataConfig, split: str, hub: bool) -> Corpus:
    """Plain text files (one document each), tables with the text column, or a Hub dataset split."""
    columns = [data.text_column] + ([data.condition_column] if data.condition_column else [])
    sentence = data.mode == "sentence"
    texts: list[str] = []
    conditions: list[str] = []
    if hub:
        hub_split = data.train_split if split == "train" else data.valid_split
        cols = read_hub(data.dataset, hub_split, columns, data.dataset_config)
        name = f"{data.dataset}:{hub_split}"
        rows = [[("" if v is None else str(v)) for v in cols[c]] for c in columns]
        texts, conditions = (rows[0], rows[1] if len(rows) > 1 else [])
        if not sentence:
            texts = ["\n".join(texts) + "\n"]
    else:
        name = " + ".join(str(f) for f in files)
        for path in files:
            if Path(path).suffix.lower() in TABLES:
                cols = read_table(path, columns)
                rows = [str(x) for x in cols[data.text_column]]
                texts += rows if sentence else ["\n".join(rows) + "\n"]
                conditions += (
                    [str(x).strip() for x in cols[data.condition_column]] if data.condition_column else []
                )
            else:
                if data.condition_column:
                    raise NlpRnnError(
                        f"{path}: --condition-column needs a table (TSV/CSV/JSONL), not a plain text file"
                    )
                text = read_text(path, allow_nul=False)
                texts += (
                    [line.rstrip("\r") for line in text.split("\n") if line.strip()] if sentence else [text]
                )
    if sentence:
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if len(keep) < len(texts):
            log.warning("%s: skipped %d empty rows", name, len(texts) - len(keep))
        texts = [texts[i] for i in keep]
        conditions = [conditions[i] for i in keep] if data.condition_column else []
        for row, label in enumerate(conditions):
            if not label:
                raise NlpRnnError(
                    f"{name} (row {row + 1}): empty value in condition column '{data.condition_column}'"
                )
    if not texts:
        raise NlpRnnError(f"{name}: no text")
    return Corpus(texts, conditions if data.condition_column else None, name, rows=sentence)


def split_off_validation(corpus: Corpus, fraction: float) -> tuple[Corpus, Corpus]:
    """The first 1-f of the characters (stream) or rows (sentence) for training, the rest for validation."""
    if corpus.rows:
        cut = int(len(corpus.texts) * (1 - fraction))
        if cut < 1 or cut >= len(corpus.texts):
            raise NlpRnnError(
                f"{corpus.name}: too few rows ({len(corpus.texts)}) to split off a validation fraction of {fraction}"
            )
        pick = lambda c, s: None if c is None else c[s]  # noqa: E731
        return (
            Corpus(corpus.texts[:cut], pick(corpus.conditions, slice(0, cut)), corpus.name, True),
            Corpus(
                corpus.texts[cut:],
                pick(corpus.conditions, slice(cut, None)),
                f"{corpus.name} (last {fraction:g})",
                True,
            ),
        )
    text = "".join(corpus.texts)
    cut = int(len(text) * (1 - fraction))
    return Corpus([text[:cut]], None, corpus.name), Corpus(
        [text[cut:]], None, f"{corpus.name} (last {fraction:g})"
    )


def stream_ids(tokenizer: Tokenizer, corpus: Corpus) -> torch.Tensor:
    """(N,) one stream: every document as BOS, its pieces, EOS."""
    ids: list[int] = []
    for text in corpus.texts:
        ids += [BOS] + tokenizer.encode_stream(text) + [EOS]
    return torch.tensor(ids, dtype=torch.long)


def sentence_ids(tokenizer: Tokenizer, corpus: Corpus, max_len: int) -> list[list[int]]:
    """BOS pieces EOS per row, at most max_len + 2 ids (longer rows truncated, with one warning)."""
    return [[BOS] + p + [EOS] for p in truncate(tokenizer.encode_src(corpus.texts), max_len, corpus.name)]


# ----------------------------------------------------------------------------- batches


@dataclass
class Window:
    """One truncated-BPTT window: inputs and targets (B, T); `first` resets the carried state."""

    inputs: torch.Tensor
    targets: torch.Tensor
    first: bool


class StreamBatcher:
    """Splits a stream into `rows` contiguous parts and cuts them into `bptt` windows, in order.

    Each epoch starts the split at a different offset (a pure function of seed and epoch, so a
    resumed run replays the same windows), so window boundaries move between epochs.
    """

    def __init__(self, ids: torch.Tensor, rows: int, bptt: int, seed: int) -> None:
        if ids.numel() < rows * 2 + 1:
            rows = max(1, (ids.numel() - 1) // 2)
        self.ids, self.rows, self.bptt, self.seed = ids, rows, bptt, seed
        self._epoch: Optional[int] = None
        self._data: Optional[torch.Tensor] = None

    def _matrix(self, epoch: int) -> torch.Tensor:
        if self._epoch != epoch:
            offset = random.Random(self.seed * 100_003 + epoch).randrange(
                min(self.bptt, max(1, self.ids.numel() // (4 * self.rows)))
            )
            usable = (self.ids.numel() - offset - 1) // self.rows
            starts = offset + torch.arange(self.rows) * usable
            self._data = self.ids[
                starts.unsqueeze(1) + torch.arange(usable + 1)
            ]  # (rows, usable+1), neighbours overlap by one
            self._epoch = epoch
        return self._data

    def epoch(self, epoch: int) -> list[tuple[int, int]]:
        length = self._matrix(epoch).size(1) - 1
        return [(epoch, k) for k in range(math.ceil(length / self.bptt))]

    def shard(self, where: tuple[int, int], rank: int, world: int) -> tuple[int, int, int, int]:
        """Process `rank`'s rows of a window: always the same rows, so each process carries its own rows' state."""
        rows = split_by_weight(list(range(self.rows)), [1] * self.rows, rank, world)
        return (*where, rows[0], rows[-1] + 1) if rows else (*where, 0, 0)

    def window(self, where: tuple) -> Window:
        epoch, k = where[:2]
        start, stop = where[2:] if len(where) == 4 else (0, self.rows)
        data = self._matrix(epoch)
        chunk = data[start:stop, k * self.bptt : (k + 1) * self.bptt + 1]  # (rows, T+1)
        return Window(chunk[:, :-1], chunk[:, 1:], k == 0)


@dataclass
class Sequences:
    """A sentence-mode batch: inputs BOS y1..yn, targets y1..yn EOS, mask and conditions, all (B, T)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    conditions: Optional[torch.Tensor]


def make_sequences(seqs: Sequence[Sequence[int]], conditions: Optional[Sequence[int]]) -> Sequences:
    inputs, _, _ = pad([s[:-1] for s in seqs])
    targets, _, mask = pad([s[1:] for s in seqs])
    return Sequences(
        inputs,
        targets,
        mask,
        None if conditions is None else torch.tensor(list(conditions), dtype=torch.long, device="cpu"),
    )


# ----------------------------------------------------------------------------- scoring


@torch.no_grad()
def stream_nll(
    model: LanguageModel, ids: torch.Tensor, rows: int = 32, window: int = 512
) -> tuple[float, int]:
    """Summed NLL of every token of ids after the first, and their number. The stream is read as
    `rows` contiguous parts (each from a fresh state) in windows, carrying the state."""
    model.eval()
    inputs, targets = ids[:-1], ids[1:]
    rows = max(1, min(rows, inputs.numel() // 64))
    width = math.ceil(inputs.numel() / rows)
    pad_to = rows * width - inputs.numel()
    x = torch.cat([inputs, inputs.new_zeros(pad_to)]).view(rows, width)
    y = torch.cat([targets, targets.new_zeros(pad_to)]).view(rows, width)
    mask = (torch.arange(rows * width, device=inputs.device) < inputs.numel()).view(rows, width)
    x, y, mask = devices.move((x, y, mask), devices.of(model))
    state, total = model.initial_state(rows), 0.0
    for start in range(0, width, window):
        cols = slice(start, start + window)
        loss, _, state = model.loss(x[:, cols], y[:, cols], state, mask[:, cols])
        total += float(loss)
    return total, targets.numel()


@torch.no_grad()
def sequences_nll(
    model: LanguageModel, seqs: list[list[int]], conditions: Optional[list[int]], batch_size: int = 128
) -> tuple[float, int]:
    model.eval()
    total, count = 0.0, 0
    for index in ordered_batches([len(s) for s in seqs], batch_size):
        batch = make_sequences(
            [seqs[i] for i in index], None if conditions is None else [conditions[i] for i in index]
        )
        batch = devices.move(batch, devices.of(model))
        cond = model.condition_vectors(batch.conditions)
        loss, n, _ = model.loss(
            batch.inputs, batch.targets, model.initial_state(len(index), cond), batch.mask, cond
        )
        total, count = total + float(loss), count + n
    return total, count


def scores(nll: float, tokens: int, characters: int) -> dict:
    loss = nll / max(tokens, 1)
    return {
        "val_loss": loss,
        "val_ppl": math.exp(min(loss, 50)),
        "val_loss_per_char": nll / max(characters, 1),
        "val_bits_per_char": nll / max(characters, 1) / math.log(2),
    }


# ----------------------------------------------------------------------------- raw text in, raw text out


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
        if bundle.task != LanguageModelTask.name:
            raise NlpRnnError(
                f"{bundle.path}: this is a {bundle.task} model; generate needs a language model"
            )
        self.bundle, self.model, self.tokenizer = bundle, bundle.model.eval(), bundle.tokenizer
        self.precision = precision_for(bundle.model, precision)
        self.model = with_precision(self.model, self.precision)
        self.conditions: list[str] = list(bundle.meta.get("conditions") or [])
        self.defaults: GenerateConfig = bundle.config.decode

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
    ) -> SampleOptions:
        """Sampling options: the given ones over the model's defaults (its config's `decode` section)."""
        d = self.defaults
        return SampleOptions(
            temperature=d.temperature if temperature is None else temperature,
            top_k=d.top_k if top_k is None else top_k,
            top_p=d.top_p if top_p is None else top_p,
            max_tokens=d.max_tokens if max_tokens is None else max_tokens,
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
    ) -> list[list[Sample]]:
        """`num_samples` continuations per prompt. `on_text` receives the text of the first sequence as it grows."""
        opts = self.options(temperature, top_k, top_p, max_tokens)
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
            found = sample(self.model, batch, opts, gen, watcher.step)
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
    if opts.temperature < 0:
        raise NlpRnnError(f"--temperature must be 0 (greedy) or positive, got {opts.temperature}")
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


# ----------------------------------------------------------------------------- the task


# ----------------------------------------------------------------------------- command line


def train_options(
    train: list[str] = typer.Option(
        [], "--train", help="Training text file(s), or TSV/CSV/JSONL tables with --text-column."
    ),
    valid: list[str] = typer.Option([], "--valid", help="Validation file(s)."),
    valid_fraction: Optional[float] = typer.Option(
        None, help="No --valid: hold out this last fraction of the training text (e.g. 0.1)."
    ),
    dataset: Optional[str] = options.DATASET,
    train_split: Optional[str] = options.TRAIN_SPLIT,
    valid_split: Optional[str] = options.VALID_SPLIT,
    text_column: Optional[str] = typer.Option(
        None, help="Text column of tables and Hub datasets (default: text)."
    ),
    condition_column: Optional[str] = typer.Option(
        None, help="Label column to condition generation on (sentence mode)."
    ),
    mode: Optional[str] = typer.Option(
        None, help="stream (one token stream per file, truncated BPTT) or sentence (one row = one sequence)."
    ),
    bptt: Optional[int] = typer.Option(
        None, help="Stream mode: window length of truncated backpropagation through time."
    ),
    streams: Optional[int] = typer.Option(
        None, help="Stream mode: batch rows (contiguous parts of the corpus)."
    ),
) -> dict:
    """Train a recurrent language model on raw text (character or subword level)."""
    if condition_column and mode is None:
        mode = "sentence"
    return {
        "data": dict(
            train=tuple(train) or None,
            valid=tuple(valid) or None,
            valid_fraction=valid_fraction,
            dataset=dataset,
            train_split=train_split,
            valid_split=valid_split,
            text_column=text_column,
            condition_column=condition_column,
            mode=mode,
            bptt=bptt,
            streams=streams,
        )
    }


def generate(
    prompts: Optional[list[str]] = typer.Argument(
        None, help="Prompts to continue; none: --input, standard input (one per line), or an empty prompt."
    ),
    model: Optional[Path] = options.model("checkpoints/shakespeare-char"),
    input: Optional[Path] = options.input_file("File with one prompt per line."),
    output: Optional[Path] = options.output("Write samples here instead of standard output."),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", help="Sampling temperature; 0 is greedy (default: the model's, 1.0)."
    ),
    top_k: Optional[int] = typer.Option(
        None, "--top-k", help="Sample only from the k most probable tokens (0: off)."
    ),
    top_p: Optional[float] = typer.Option(
        None, "--top-p", help="Sample only from the smallest set with probability >= p, in (0, 1]."
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Random seed: the same seed gives the same samples."
    ),
    num_samples: int = typer.Option(1, "--num-samples", help="Samples per prompt."),
    max_tokens: Optional[int] = typer.Option(
        None, "--max-tokens", help="Stop after this many tokens (default: 256)."
    ),
    stop: Optional[str] = typer.Option(
        None, "--stop", help="Stop when this string appears (it is not printed)."
    ),
    greedy: bool = typer.Option(False, "--greedy", help="The most probable token at every step."),
    beam_size: int = typer.Option(
        1, "--beam-size", help="Beam search with this many beams (the best sequence)."
    ),
    condition: Optional[str] = typer.Option(
        None, "--condition", help="Conditional models: the label to generate for."
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, int8 (CPU) or auto."),
    fmt: str = typer.Option("text", "--format", help="text (prompt and continuation) or jsonl."),
    device: str = options.DEVICE,
) -> None:
    """Continue prompts with a language model: sampling, greedy or beam search. Streams to a terminal."""
    textio.check_format(fmt)
    generator = Generator(
        tasks.load(model or default_model(LanguageModelTask.name), device=device), precision
    )
    generator.condition_id(condition)  # an unknown label is refused before any input is read
    settings = dict(
        num_samples=num_samples,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        beam_size=beam_size,
        greedy_search=greedy,
        condition=condition,
    )
    generator.check(**settings)  # bad options fail before anything is printed
    piped = input is not None or (sys.stdin is not None and not sys.stdin.isatty())
    lines = list(prompts) if prompts else list(textio.read_input_lines(input)) if piped else []
    lines = lines or [""]  # nothing given: continue the empty prompt
    with textio.output_file(output) as sink:
        live = output is None and fmt == "text" and sys.stdout.isatty()
        for number, prompt in enumerate(lines, 1):
            step_seed = None if seed is None else seed + 1_000_003 * (number - 1)
            show = _echo(sink, prompt) if live else None  # the first sample is printed as it grows
            samples = generator.generate([prompt], **settings, seed=step_seed, on_text=show)[0]
            for j, sample in enumerate(samples):
                last = number == len(lines) and j + 1 == len(samples)
                sink.write(_format_sample(number, j, prompt, sample, fmt, live, last))


def _echo(sink, prompt: str) -> Callable[[str], None]:
    def show(text: str) -> None:
        sink.write(text)
        sink.flush()

    show(prompt)
    return show


def _format_sample(number: int, j: int, prompt: str, sample, fmt: str, live: bool, last: bool) -> str:
    if fmt == "jsonl":
        return (
            json.dumps(
                {
                    "line": number,
                    "sample": j + 1,
                    "prompt": prompt,
                    "text": sample.text,
                    "log_prob": round(sample.log_prob, 4),
                    "tokens": len(sample.tokens),
                    "condition": sample.condition,
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    if live and j == 0:  # already on the screen
        return "\n" if last else "\n\n"
    return prompt + sample.text + ("\n" if last else "\n\n")


def endpoint(limits) -> tasks.Endpoint:
    """POST /generate: {"texts": [prompts], "max_tokens", "temperature", "top_k", "top_p", "seed", "beam_size"};
    one request at a time, so that a seed gives the same samples whatever else arrives."""
    from pydantic import Field

    def check(generator: "Generator", req) -> None:
        generator.check(1, req.temperature, req.top_k, req.top_p, req.max_tokens, req.beam_size)

    def run(generator: "Generator", texts: list[str], req) -> list:
        return generator.generate(
            texts,
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            max_tokens=req.max_tokens,
            seed=req.seed,
            beam_size=req.beam_size,
        )

    def answer(samples: list, req) -> dict:
        return {
            "generations": [
                {"prompt": s[0].prompt, "text": s[0].text, "log_prob": s[0].log_prob} for s in samples
            ]
        }

    fields = {
        "max_tokens": (Optional[int], Field(None, ge=1, le=limits.max_tokens)),
        "temperature": (Optional[float], Field(None, ge=0)),
        "top_k": (Optional[int], Field(None, ge=0)),
        "top_p": (Optional[float], Field(None, gt=0, le=1)),
        "seed": (Optional[int], None),
        "beam_size": (int, Field(1, ge=1, le=limits.max_beam)),
    }
    return tasks.Endpoint(
        "generate",
        "Continue prompts with a language model (sampling, or beam search with beam_size > 1); one request at a time.",
        fields,
        run,
        answer,
        check,
    )


class LanguageModelTask(tasks.Task):
    name = "language_model"
    config_cls = LMConfig
    default_bundle = "shakespeare-char"
    train_command = tasks.TrainCommand(
        "lm", train_options, config_required=False, example_config="configs/shakespeare_char.yaml"
    )
    components = (
        ("embeddings", ("embed.",)),
        ("condition", ("condition.", "condition_init.")),
        ("recurrent layers", ("rnn.",)),
        ("output layer", ("output.",)),
    )

    def build_model(self, cfg: LMConfig, tokenizer, meta: dict) -> LanguageModel:
        return LanguageModel(cfg.model, tokenizer.src_vocab_size, len(meta.get("conditions") or []))

    def prepare(self, cfg: LMConfig, out_dir: Path, tokenizer: tasks.TokenizerChoice) -> tasks.TrainingSetup:
        data = cfg.data
        hub = not data.train and data.dataset is not None
        if not data.train and not hub:
            raise NlpRnnError("no training data: give --train FILE (text or table), or --dataset NAME")
        train = read_corpus(data.train, data, "train", hub)
        if data.valid or (hub and not data.valid_fraction):
            valid = read_corpus(data.valid, data, "valid", hub and not data.valid)
        elif data.valid_fraction > 0:
            train, valid = split_off_validation(train, data.valid_fraction)
        else:
            raise NlpRnnError(
                "no validation data: give --valid FILE, or --valid-fraction 0.1 to hold out the end of --train"
            )
        log.info(
            "data: %s characters for training (%s), %s for validation",
            f"{sum(map(len, train.texts)):,}",
            train.name,
            f"{valid.characters:,}",
        )
        if data.mode == "stream" and not cfg.tokenizer.byte_exact:
            raise NlpRnnError(
                "config: data.mode stream needs tokenizer.byte_exact: true (newlines and spaces kept exactly)"
            )
        tok = tokenizer.get(cfg.tokenizer, [line for t in train.texts for line in t.split("\n") if line])
        names = label_names(train.conditions) if train.conditions is not None else []
        meta = {
            "mode": data.mode,
            "conditions": names or None,
            "data": {
                "train": train.name,
                "valid": valid.name,
                "train_characters": sum(map(len, train.texts)),
                "text_column": data.text_column,
                "condition_column": data.condition_column,
            },
        }
        bundle = tasks.new_bundle(self, cfg, tok, meta, cfg.train.seed)
        if data.mode == "stream":
            train_ids = stream_ids(tok, train)
            bundle.model.init_output_bias(torch.bincount(train_ids[1:], minlength=tok.src_vocab_size))
            return self._stream_setup(cfg, bundle, train_ids, stream_ids(tok, valid), valid.characters)
        return self._sentence_setup(cfg, bundle, train, valid, names)

    def _stream_setup(
        self, cfg: LMConfig, bundle: Bundle, train_ids: torch.Tensor, valid_ids: torch.Tensor, characters: int
    ) -> tasks.TrainingSetup:
        model: LanguageModel = bundle.model
        if train_ids.numel() <= cfg.data.bptt + 1:
            raise NlpRnnError(
                f"data.bptt {cfg.data.bptt} is longer than the training corpus ({train_ids.numel()} pieces); "
                f"lower --bptt or give more text"
            )
        batcher = StreamBatcher(train_ids, cfg.data.streams, cfg.data.bptt, cfg.train.seed)
        carry: dict[str, Optional[LMState]] = {"state": None}

        def loss_fn(window: Window, step: int):
            state = carry["state"]
            if window.first or state is None or state.h.size(1) != window.inputs.size(0):
                state = model.initial_state(window.inputs.size(0))
            loss, count, state = model.loss(window.inputs, window.targets, state.detach())
            carry["state"] = state.detach()  # gradients stop at the window boundary
            return loss, count

        def validate() -> dict:
            nll, tokens = stream_nll(model, valid_ids)
            return scores(nll, tokens, characters)

        def state_dict() -> dict:
            s = carry["state"]
            return {} if s is None else {"h": s.h, **({} if s.c is None else {"c": s.c})}

        def load_state_dict(saved: dict) -> None:
            carry["state"] = LMState(saved["h"], saved.get("c")) if "h" in saved else None

        return tasks.TrainingSetup(
            bundle=bundle,
            batcher=batcher,
            collate=batcher.window,
            loss_fn=loss_fn,
            validate=validate,
            score_key="val_loss",
            higher_is_better=False,
            state_dict=state_dict,
            load_state_dict=load_state_dict,
        )

    def _sentence_setup(
        self, cfg: LMConfig, bundle: Bundle, train: Corpus, valid: Corpus, names: list[str]
    ) -> tasks.TrainingSetup:
        model: LanguageModel = bundle.model
        tok = bundle.tokenizer
        x_train, x_valid = (
            sentence_ids(tok, train, cfg.data.max_len),
            sentence_ids(tok, valid, cfg.data.max_len),
        )
        y_train = condition_ids(train, names)
        y_valid = condition_ids(valid, names)
        model.init_output_bias(
            torch.bincount(torch.tensor([t for s in x_train for t in s[1:]]), minlength=tok.src_vocab_size)
        )
        batcher = TokenBatcher(
            [len(s) for s in x_train], cfg.train.batch_tokens, cfg.train.max_batch_sentences, cfg.train.seed
        )

        def collate(index: list[int]) -> Sequences:
            return make_sequences(
                [x_train[i] for i in index], None if y_train is None else [y_train[i] for i in index]
            )

        def loss_fn(batch: Sequences, step: int):
            cond = model.condition_vectors(batch.conditions)
            loss, count, _ = model.loss(
                batch.inputs, batch.targets, model.initial_state(batch.inputs.size(0), cond), batch.mask, cond
            )
            return loss, count

        def validate() -> dict:
            return scores(*sequences_nll(model, x_valid, y_valid), valid.characters)

        return tasks.TrainingSetup(
            bundle=bundle,
            batcher=batcher,
            collate=collate,
            loss_fn=loss_fn,
            validate=validate,
            score_key="val_loss",
            higher_is_better=False,
        )

    def commands(self) -> list:
        return [generate]

    def endpoint(self, limits) -> tasks.Endpoint:
        return endpoint(limits)

    def serving(self, bundle: Bundle, precision: str) -> "Generator":
        return Generator(bundle, "fp32" if precision == "auto" else precision)

    def wrap(self, bundle: Bundle, precision: str = "fp32") -> Generator:
        return Generator(bundle, precision)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        cfg: LMConfig = bundle.config
        model: LanguageModel = bundle.model
        data = LMDataConfig(
            mode=cfg.data.mode,
            text_column=request.text_column or cfg.data.text_column,
            condition_column=request.label_column or cfg.data.condition_column,
            dataset=request.dataset,
            dataset_config=None,
        )
        sets = [read_corpus([str(p)], data, "test", False) for p in request.data]
        for split in (request.splits or ["test"]) if request.dataset else []:
            sets.append(read_corpus([], LMDataConfig(**{**vars(data), "valid_split": split}), "valid", True))
        if not sets:
            raise NlpRnnError("no test set: give --data FILE (text or table) or --dataset NAME")
        names = list(bundle.meta.get("conditions") or [])
        results = []
        for corpus in sets:
            started = time.perf_counter()
            if cfg.data.mode == "stream":
                nll, tokens = stream_nll(model, stream_ids(bundle.tokenizer, corpus))
            else:
                nll, tokens = sequences_nll(
                    model,
                    sentence_ids(bundle.tokenizer, corpus, cfg.data.max_len),
                    condition_ids(corpus, names) if names else None,
                )
            seconds = time.perf_counter() - started
            s = scores(nll, tokens, corpus.characters)
            results.append(
                {
                    "name": corpus.name,
                    "tokens": tokens,
                    "characters": corpus.characters,
                    "loss": round(s["val_loss"], 4),
                    "perplexity": round(s["val_ppl"], 3),
                    "loss_per_char": round(s["val_loss_per_char"], 4),
                    "bits_per_char": round(s["val_bits_per_char"], 4),
                    "seconds": round(seconds, 2),
                    "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                }
            )
        return {"task": self.name, "model": model_info(bundle), "sets": results}

    def report(self, result: dict) -> list[str]:
        return table(
            [
                "test set",
                "tokens",
                "characters",
                "loss/token",
                "perplexity",
                "loss/char",
                "bits/char",
                "seconds",
            ],
            [
                [
                    s["name"],
                    s["tokens"],
                    s["characters"],
                    f"{s['loss']:.4f}",
                    f"{s['perplexity']:.3f}",
                    f"{s['loss_per_char']:.4f}",
                    f"{s['bits_per_char']:.4f}",
                    s["seconds"],
                ]
                for s in result["sets"]
            ],
        )

    def describe(self, bundle: Bundle) -> dict:
        extra = {"mode": bundle.meta.get("mode")}
        if bundle.meta.get("conditions"):
            extra["conditions"] = bundle.meta["conditions"]
        return extra


def condition_ids(corpus: Corpus, names: list[str]) -> Optional[list[int]]:
    return None if corpus.conditions is None else label_ids(corpus.conditions, names, corpus.name)


TASK = tasks.register(LanguageModelTask())


def train_lm(
    cfg: LMConfig,
    out_dir: str | Path,
    resume: bool = False,
    tokenizer_dir: Optional[str | Path] = None,
    progress_bar: bool = True,
) -> dict:
    return tasks.train(TASK.name, cfg, out_dir, resume, tokenizer_dir, progress_bar)
