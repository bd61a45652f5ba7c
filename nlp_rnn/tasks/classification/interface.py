"""Raw text in, label out: `Predictor` classifies texts and names their labels."""

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from nlp_rnn import devices
from nlp_rnn.bundle import Bundle
from nlp_rnn.data import (
    encode_sources,
    make_batch,
    ordered_batches,
)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks.classification.config import NAME
from nlp_rnn.tasks.predict import chunked, precision_for, with_precision

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    label: str  # the label's name (data.label_names), else its value in the training data
    probability: float
    probabilities: dict[str, float]  # by name
    label_id: int | str = (
        0  # the label's value in the training data: an integer where it is one, else its index
    )


def display_names(values: Sequence[str], names: Optional[dict[str, str]], where: str) -> list[str]:
    """The name of each data label (in `values` order) from the config's `data.label_names`."""
    if not names:
        return list(values)
    unnamed = [v for v in values if v not in names]
    if unnamed:
        raise NlpRnnError(
            f"{where}: data label {unnamed[0]!r} has no name in data.label_names (named: {', '.join(names)})"
        )
    absent = [k for k in names if k not in values]
    if absent:
        raise NlpRnnError(
            f"data.label_names: label {absent[0]!r} does not occur in {where} (labels: {', '.join(values)})"
        )
    shown = [names[v] for v in values]
    if len(set(shown)) < len(shown):
        raise NlpRnnError(f"data.label_names: two labels share a name ({', '.join(shown)})")
    return shown


def gold_ids(labels: Sequence[str], values: Sequence[str], names: Sequence[str], where: str) -> list[int]:
    """Class index of each gold label, given either as the training data's value or as its name."""
    index = {**{n: i for i, n in enumerate(names)}, **{v: i for i, v in enumerate(values)}}
    for row, label in enumerate(labels):
        if label not in index:
            known = ", ".join(
                values if list(values) == list(names) else [f"{v} ({n})" for v, n in zip(values, names)]
            )
            raise NlpRnnError(
                f"{where} (row {row + 1}): label {label!r} was never seen in training (known: {known})"
            )
    return [index[label] for label in labels]


class Predictor:
    """Sentence classification: a label and every class's probability per text."""

    def __init__(self, bundle: Bundle, precision: str = "fp32") -> None:
        if bundle.task != NAME:
            raise NlpRnnError(
                f"{bundle.path}: this is a {bundle.task} model; classify needs a classification model"
            )
        self.precision = precision_for(bundle.model, precision, bundle.task)
        self.bundle, self.model, self.tokenizer = (
            bundle,
            with_precision(bundle.model, self.precision),
            bundle.tokenizer,
        )
        self.labels: list[str] = list(bundle.meta["labels"])  # names
        self.values: list[str] = list(bundle.meta.get("label_values", self.labels))  # as in the training data
        self.ids = [int(v) if v.lstrip("-").isdigit() else i for i, v in enumerate(self.values)]
        # a document classifier reads every text whole; the sentence encoder its data.max_src_len pieces
        self.max_len = bundle.config.data.max_src_len if bundle.config.model.encoder == "rnn" else 0
        self.reads_documents = self.max_len == 0  # the server lets it take long texts (--max-document-chars)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = encode_sources(self.tokenizer, texts, self.max_len)
        empty = sum(len(x) == 1 for x in ids)  # nothing left after normalising (e.g. only HTML): EOS alone
        if empty:
            log.warning("classifying %d empty texts (the model sees only the end-of-sentence token)", empty)
        return ids

    @torch.no_grad()
    def probabilities(self, src_ids: Sequence[Sequence[int]], batch_size: int = 128) -> torch.Tensor:
        """(N, C) class probabilities for id lists, in input order."""
        self.model.eval()
        device = devices.of(self.model)
        out = torch.zeros(len(src_ids), len(self.labels), device="cpu")
        for index in ordered_batches([len(s) for s in src_ids], batch_size):
            logits = self.model.logits(devices.move(make_batch([src_ids[i] for i in index]), device))
            out[torch.tensor(index, device="cpu")] = torch.softmax(logits.float(), dim=-1).cpu()
        return out

    def classify(self, texts: Sequence[str], batch_size: int = 128) -> list[Prediction]:
        return self.classify_ids(self.encode(texts), batch_size) if texts else []

    def classify_ids(self, src_ids: Sequence[Sequence[int]], batch_size: int = 128) -> list[Prediction]:
        """`classify` of texts already encoded (`encode`)."""
        if not src_ids:
            return []
        probs = self.probabilities(src_ids, batch_size)
        best = probs.argmax(dim=-1).tolist()
        return [
            Prediction(
                self.labels[b],
                float(p[b]),
                {name: float(x) for name, x in zip(self.labels, p.tolist())},
                self.ids[b],
            )
            for b, p in zip(best, probs)
        ]

    def stream(self, lines: Iterable[str], batch_size: int = 128) -> Iterator[tuple[str, Prediction]]:
        for chunk in chunked(lines, batch_size * 8):
            yield from zip(chunk, self.classify(chunk, batch_size))
