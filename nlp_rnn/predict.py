"""Raw text in, raw text out: `Translator` and `Predictor` wrap a loaded bundle.

Inputs are tokenised, sorted by length into batches (little padding), searched, and returned in
input order. An empty or whitespace-only line gives an empty result, never a shifted one.
"""

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import torch

from nlp_rnn.bundle import Bundle
from nlp_rnn.data import encode_sources, make_batch, ordered_batches
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.search import Hypothesis, SearchOptions, search

log = logging.getLogger(__name__)


def search_ids(model, src_ids: Sequence[Sequence[int]], opts: SearchOptions, batch_size: int) -> list[list[Hypothesis]]:
    """n-best hypotheses for each source id list (each ending in EOS), in input order."""
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    model.eval()
    for index in ordered_batches([len(s) for s in src_ids], batch_size):
        batch = make_batch([src_ids[i] for i in index])
        for i, hyps in zip(index, search(model, batch, opts)):
            results[i] = hyps
    return results


@dataclass
class Translation:
    text: str
    score: float
    log_prob: float
    pieces: list[str]
    src_pieces: list[str]
    attention: Optional[torch.Tensor] = None  # (len(pieces), len(src_pieces))


def resolve_precision(precision: str) -> str:
    """`auto`: bf16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), else fp32."""
    if precision not in ("auto", "fp32", "bf16"):
        raise NlpRnnError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native else "fp32"


class Translator:
    """Raw text in, raw text out. `precision` bf16 runs the model in bfloat16 (about 2x faster on
    CPUs with native bf16, BLEU within a few tenths); fp32 is exact and bit-stable across batches."""

    def __init__(self, bundle: Bundle, precision: str = "fp32") -> None:
        if bundle.task != "translation":
            raise NlpRnnError(f"{bundle.path}: this is a {bundle.task} model; translate needs a translation model")
        self.precision = resolve_precision(precision)
        self.bundle, self.model, self.tokenizer = bundle, bundle.model, bundle.tokenizer
        if self.precision == "bf16":
            self.model = bundle.model.to(torch.bfloat16)
        self.max_src_len = bundle.config.data.max_src_len

    def options(self, **overrides) -> SearchOptions:
        d = self.bundle.config.decode
        base = dict(beam_size=d.beam_size, max_len_a=d.max_len_a, max_len_b=d.max_len_b)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return SearchOptions(**base)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_sources(self.tokenizer, texts, self.max_src_len)

    def translate(self, texts: Sequence[str], opts: Optional[SearchOptions] = None, batch_size: int = 64) -> list[list[Translation]]:
        """n-best translations per text (an empty list for an empty text)."""
        opts = opts or self.options()
        clean = [t.strip() for t in texts]
        todo = [i for i, t in enumerate(clean) if t]
        out: list[list[Translation]] = [[] for _ in texts]
        if not todo:
            return out
        src_ids = self.encode([clean[i] for i in todo])
        for i, ids, hyps in zip(todo, src_ids, search_ids(self.model, src_ids, opts, batch_size)):
            src_pieces = self.tokenizer.src_pieces(ids)
            out[i] = [
                Translation(
                    text=self.tokenizer.decode_tgt([h.tokens])[0],
                    score=h.score,
                    log_prob=h.log_prob,
                    pieces=self.tokenizer.tgt_pieces(h.tokens),
                    src_pieces=src_pieces,
                    attention=h.attention,
                )
                for h in hyps
            ]
        return out

    def stream(self, lines: Iterable[str], opts: Optional[SearchOptions] = None, batch_size: int = 64
               ) -> Iterator[tuple[str, list[Translation]]]:
        """Translates an endless iterable in chunks; yields (line, n-best list) in input order."""
        for chunk in chunked(lines, batch_size * 8):
            yield from zip(chunk, self.translate(chunk, opts, batch_size))


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]


class Predictor:
    """Sentence classification: a label and every class's probability per text."""

    def __init__(self, bundle: Bundle) -> None:
        if bundle.task != "classification":
            raise NlpRnnError(f"{bundle.path}: this is a {bundle.task} model; classify needs a classification model")
        self.bundle, self.model, self.tokenizer = bundle, bundle.model, bundle.tokenizer
        self.labels: list[str] = list(bundle.meta["labels"])
        self.max_len = bundle.config.data.max_src_len

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        empty = sum(not t.strip() for t in texts)
        if empty:
            log.warning("classifying %d empty texts (the model sees only the end-of-sentence token)", empty)
        return encode_sources(self.tokenizer, texts, self.max_len)

    @torch.no_grad()
    def probabilities(self, src_ids: Sequence[Sequence[int]], batch_size: int = 128) -> torch.Tensor:
        """(N, C) class probabilities for id lists, in input order."""
        self.model.eval()
        out = torch.zeros(len(src_ids), len(self.labels))
        for index in ordered_batches([len(s) for s in src_ids], batch_size):
            logits = self.model.logits(make_batch([src_ids[i] for i in index]))
            out[torch.tensor(index)] = torch.softmax(logits.float(), dim=-1)
        return out

    def classify(self, texts: Sequence[str], batch_size: int = 128) -> list[Prediction]:
        if not texts:
            return []
        probs = self.probabilities(self.encode(texts), batch_size)
        best = probs.argmax(dim=-1).tolist()
        return [
            Prediction(self.labels[b], float(p[b]), {name: float(x) for name, x in zip(self.labels, p.tolist())})
            for b, p in zip(best, probs)
        ]

    def stream(self, lines: Iterable[str], batch_size: int = 128) -> Iterator[tuple[str, Prediction]]:
        for chunk in chunked(lines, batch_size * 8):
            yield from zip(chunk, self.classify(chunk, batch_size))


def wrap(bundle: Bundle):
    """The raw-text interface for a bundle's task."""
    return {"translation": Translator, "classification": Predictor}[bundle.task](bundle)
