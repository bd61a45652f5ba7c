"""The classification task: labelled text, the sentence classifier, accuracy validation, `Predictor`, test-set reports.

Reuses the data readers, tokenizer, encoder, training loop and bundles of translation.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from nlp_rnn import task as tasks
from nlp_rnn.bundle import Bundle
from nlp_rnn.classifier import Classifier
from nlp_rnn.config import ClassifierConfig, DataConfig
from nlp_rnn.data import (LabeledSource, TokenBatcher, encode_sources, label_ids, label_names, make_batch, ordered_batches,
                          read_labeled)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.evaluation import hyps_file, model_info, table
from nlp_rnn.metrics import classification_report
from nlp_rnn.predict import chunked

log = logging.getLogger(__name__)


def labeled_source(data: DataConfig, split: str) -> LabeledSource:
    where = tasks.hub_or_table(data, split)
    if not where:
        raise NlpRnnError(f"no {split} data: give --{split} TABLE or --dataset NAME")
    return LabeledSource(**where, text_column=data.text_column, label_column=data.label_column)


# ----------------------------------------------------------------------------- raw text in, label out


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


# ----------------------------------------------------------------------------- the task


class ClassificationTask(tasks.Task):
    name = "classification"
    config_cls = ClassifierConfig
    default_bundle = "sst2"

    def build_model(self, cfg: ClassifierConfig, tokenizer, meta: dict) -> Classifier:
        return Classifier(cfg.model, tokenizer.src_vocab_size, len(meta["labels"]))

    def prepare(self, cfg: ClassifierConfig, out_dir: Path, tokenizer: tasks.TokenizerChoice) -> tasks.TrainingSetup:
        train_spec, valid_spec = labeled_source(cfg.data, "train"), labeled_source(cfg.data, "valid")
        train_texts, train_labels = read_labeled(train_spec)
        valid_texts, valid_labels = read_labeled(valid_spec)
        names = label_names(train_labels)
        if len(names) < 2:
            raise NlpRnnError(f"{train_spec.describe()}: column '{cfg.data.label_column}' has only one label ({names[0]!r})")
        y_train = label_ids(train_labels, names, train_spec.describe())
        y_valid = label_ids(valid_labels, names, valid_spec.describe())
        log.info("data: %d training, %d validation examples; labels: %s", len(train_texts), len(valid_texts), ", ".join(names))
        tok = tokenizer.get(cfg.tokenizer, [t for t in train_texts if t.strip()])
        x_train = encode_sources(tok, train_texts, cfg.data.max_src_len)
        x_valid = encode_sources(tok, valid_texts, cfg.data.max_src_len)
        meta = {"labels": names,
                "data": {"train": train_spec.describe(), "valid": valid_spec.describe(), "train_examples": len(train_texts),
                         "text_column": cfg.data.text_column, "label_column": cfg.data.label_column}}
        bundle = tasks.new_bundle(self, cfg, tok, meta, cfg.train.seed)
        model = bundle.model
        batcher = TokenBatcher([len(x) for x in x_train], cfg.train.batch_tokens, cfg.train.max_batch_sentences, cfg.train.seed)

        def validate() -> dict:
            total, correct = 0.0, 0
            for index in ordered_batches([len(x) for x in x_valid], 256):
                batch = make_batch([x_valid[i] for i in index], labels=[y_valid[i] for i in index])
                logits = model.logits(batch)
                total += float(torch.nn.functional.cross_entropy(logits.float(), batch.labels, reduction="sum"))
                correct += int((logits.argmax(-1) == batch.labels).sum())
            return {"val_loss": total / len(x_valid), "val_acc": correct / len(x_valid)}

        return tasks.TrainingSetup(
            bundle=bundle, batcher=batcher,
            collate=lambda index: make_batch([x_train[i] for i in index], labels=[y_train[i] for i in index]),
            loss_fn=lambda batch, step: model(batch), validate=validate, score_key="val_acc")

    def wrap(self, bundle: Bundle, **_) -> Predictor:
        return Predictor(bundle)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        predictor = Predictor(bundle)
        columns = dict(text_column=request.text_column or bundle.meta["data"].get("text_column", "sentence"),
                       label_column=request.label_column or bundle.meta["data"].get("label_column", "label"))
        sources = [LabeledSource(table=str(t), **columns) for t in request.data]
        if request.dataset:
            sources += [LabeledSource(dataset=request.dataset, split=s, **columns) for s in (request.splits or ["test"])]
        if not sources:
            raise NlpRnnError("no test set: give --data TABLE or --dataset NAME")
        results = []
        for source in sources:
            texts, labels = read_labeled(source)
            gold = label_ids(labels, predictor.labels, source.describe())
            started = time.perf_counter()
            predictions = predictor.classify(texts, request.batch_size or 128)
            seconds = time.perf_counter() - started
            predicted = [predictor.labels.index(p.label) for p in predictions]
            if request.hyps is not None:
                hyps_file(Path(request.hyps), Path(source.describe()).stem, len(sources) > 1).write_text(
                    "".join(p.label + "\n" for p in predictions), encoding="utf-8")
            report = classification_report(gold, predicted, predictor.labels)
            results.append({"name": source.describe(), **report, "seconds": round(seconds, 2),
                            "sentences_per_s": round(len(texts) / max(seconds, 1e-9), 1)})
        return {"task": self.name, "model": model_info(bundle), "sets": results}

    def report(self, result: dict) -> list[str]:
        lines = []
        for s in result["sets"]:
            lines.append(f"{s['name']}: accuracy {100 * s['accuracy']:.2f}%  macro-F1 {100 * s['macro_f1']:.2f}%  ({s['examples']} examples)")
            lines += table(["label", "precision", "recall", "F1", "support"],
                           [[k, 100 * v["precision"], 100 * v["recall"], 100 * v["f1"], v["support"]] for k, v in s["per_class"].items()])
            lines.append("confusion matrix (rows: gold, columns: predicted):")
            lines += table(["gold \\ pred"] + s["labels"], [[g] + row for g, row in zip(s["labels"], s["confusion_matrix"])])
        return lines

    def describe(self, bundle: Bundle) -> dict:
        return {"labels": bundle.meta.get("labels", [])}


TASK = tasks.register(ClassificationTask())


def train_classifier(cfg: ClassifierConfig, out_dir: str | Path, resume: bool = False, progress_bar: bool = True) -> dict:
    return tasks.train(TASK.name, cfg, out_dir, resume, None, progress_bar)
