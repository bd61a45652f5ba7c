"""Raw text in, raw text out: `Translator` translates sentences with greedy or beam search."""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from nlp_rnn import devices
from nlp_rnn.bundle import Bundle
from nlp_rnn.data import (
    encode_sources,
)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.seq2seq import Seq2Seq, Shortlisted
from nlp_rnn.nn.shortlist import Shortlist
from nlp_rnn.search import SearchOptions
from nlp_rnn.tasks.predict import chunked, precision_for, search_ids, with_precision
from nlp_rnn.tasks.translation.config import NAME

SHORTLIST_CHOICES = ("auto", "on", "off")


@dataclass
class Translation:
    text: str
    score: float
    log_prob: float
    pieces: list[str]
    src_pieces: list[str]
    attention: Optional[torch.Tensor] = None  # (len(pieces), len(src_pieces))


class Translator:
    """Raw text in, raw text out. `precision` bf16 runs a bfloat16 copy of the model (about 2-3x faster
    where bf16 products are fast, AMD Zen 4 and Zen 5; slower than fp32 on the Intel Xeon without AMX;
    BLEU within a few tenths); fp32 is exact and bit-stable across batches."""

    def __init__(self, bundle: Bundle, precision: str = "fp32", shortlist: str = "auto") -> None:
        """`shortlist`: on (the bundle's vocabulary shortlist; refused without one), off, or auto (on
        where the bundle has one and the model runs on the CPU: on a GPU the whole output layer is one cheap
        product and the shortlist's gathers cost more than they save, see `_shortlist`)."""
        if bundle.task != NAME:
            raise NlpRnnError(
                f"{bundle.path}: this is a {bundle.task} model; translate needs a translation model"
            )
        if shortlist not in SHORTLIST_CHOICES:
            raise NlpRnnError(f"--shortlist must be on, off or auto, got {shortlist!r}")
        self.precision = precision_for(bundle.model, precision, bundle.task)
        self.bundle, self.model, self.tokenizer = bundle, bundle.model, bundle.tokenizer
        self.model = with_precision(bundle.model, self.precision)
        self.max_src_len = bundle.config.data.max_src_len
        self.shortlist = self._shortlist(shortlist)

    @property
    def device(self) -> torch.device:
        """Where the model runs (the CPU for an exported ONNX model)."""
        return devices.of(self.model)

    def batch_size(self, beam_size: int) -> int:
        """Sentences per batch when none is asked for: 256, greedy or with a beam (its rows are sentences x beam), on
        a CPU or a GPU. A larger batch takes fewer steps for the same sentences. On a GPU, a step costs about the same
        kernel launches for 64 sentences as for 256 (one NVIDIA H200, fp32 beam 5: 827 sentences/s at 64, 1,462 at
        256, 1,176 at 1,000). On the 2-core AMX Xeon (2026-12-04, docs/results.md), beam 5 at 64 against 256:
        int8 272-279 against 290 sentences/s, fp32 166 against 178; the whole command over 1,000 lines 6.75 against
        6.55 s, at 470 against 650 MB of peak memory. An exported model on ONNX Runtime keeps 64 with a beam: its
        step graph takes the encoder states and keys per beam row (`PerRowMemory`), and 256 was not measured there."""
        return 64 if beam_size > 1 and not isinstance(self.model, Seq2Seq) else 256

    def _shortlist(self, choice: str) -> Optional[Shortlist]:
        # auto is off on a GPU: decoding there is bound by kernel launches, and the shortlist adds gathers and a
        # union per batch (one NVIDIA H200, fp32: greedy 4,594 without against 3,306 with, beam 5 714 against
        # 626 sentences/s; at 256 sentences a batch 1,462 against 1,199).
        if choice == "off" or (choice == "auto" and self.device.type != "cpu"):
            return None
        if not isinstance(self.model, Seq2Seq):  # an exported model (--engine onnxruntime)
            if choice == "on":
                raise NlpRnnError(
                    "--shortlist on works with one torch model: an ensemble or an exported ONNX model (--engine "
                    "onnxruntime) computes the whole output layer"
                )
            return None
        found = (
            None
            if self.bundle.path is None
            else Shortlist.load(
                self.bundle.path, self.model.src_embed.num_embeddings, self.model.decoder.vocab_size
            )
        )
        if found is None and choice == "on":
            raise NlpRnnError(
                f"--shortlist on: {self.bundle.path} has no vocabulary shortlist; build one with "
                "`nlp-rnn shortlist MODEL --train-src F --train-tgt F`"
            )
        return found

    def options(self, **overrides) -> SearchOptions:
        d = self.bundle.config.decode
        base = dict(beam_size=d.beam_size, max_len_a=d.max_len_a, max_len_b=d.max_len_b)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return SearchOptions(**base)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_sources(self.tokenizer, texts, self.max_src_len)

    def translate(
        self, texts: Sequence[str], opts: Optional[SearchOptions] = None, batch_size: int = 0
    ) -> list[list[Translation]]:
        """n-best translations per text (an empty list for an empty text); `batch_size` 0: `batch_size(beam)`."""
        opts = opts or self.options()
        batch_size = batch_size or self.batch_size(opts.beam_size)
        out: list[list[Translation]] = [[] for _ in texts]
        encoded = self.encode(texts)
        # (EOS alone: nothing was left after normalising)
        todo = [i for i, ids in enumerate(encoded) if len(ids) > 1]
        if not todo:
            return out
        src_ids = [encoded[i] for i in todo]
        model = self.model  # with a shortlist: one union for the whole call, the model itself unchanged
        if self.shortlist is not None:
            model = Shortlisted(self.model, self.shortlist.over(src_ids, opts.beam_size))
        for i, ids, hyps in zip(todo, src_ids, search_ids(model, src_ids, opts, batch_size)):
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

    def stream(
        self, lines: Iterable[str], opts: Optional[SearchOptions] = None, batch_size: int = 0
    ) -> Iterator[tuple[str, list[Translation]]]:
        """Translates an endless iterable in chunks; yields (line, n-best list) in input order."""
        opts = opts or self.options()
        batch_size = batch_size or self.batch_size(opts.beam_size)
        for chunk in chunked(lines, batch_size * 8):
            yield from zip(chunk, self.translate(chunk, opts, batch_size))
