"""The classification task: labelled text, the sentence classifier, accuracy validation, test-set reports."""

import logging
import random
import time
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import devices, embeddings
from nlp_rnn.bundle import Bundle
from nlp_rnn.config import DataConfig
from nlp_rnn.data import (
    LabeledSource,
    TokenBatcher,
    encode_sources,
    label_ids,
    label_names,
    make_batch,
    ordered_batches,
    read_labeled,
)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn import exported
from nlp_rnn.nn.classifier import DocumentClassifier, build, embeddings_of
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.classification import transfer
from nlp_rnn.tasks.classification.cli import classify, endpoint, train_options
from nlp_rnn.tasks.classification.config import DEFAULT_BUNDLE, NAME, ClassifierConfig
from nlp_rnn.tasks.classification.interface import Predictor, display_names, gold_ids
from nlp_rnn.tasks.evaluation import hyps_file, model_info, table
from nlp_rnn.tasks.metrics import classification_report

log = logging.getLogger(__name__)


def held_out(texts: list[str], labels: list[str], fraction: float) -> tuple[list, list, list, list]:
    """Training rows shuffled with a fixed seed, the last `fraction` of them split off for validation."""
    order = list(range(len(texts)))
    random.Random(20_13).shuffle(order)
    cut = len(order) - max(1, round(fraction * len(order)))
    keep, out = sorted(order[:cut]), sorted(order[cut:])
    return (
        [texts[i] for i in keep],
        [labels[i] for i in keep],
        [texts[i] for i in out],
        [labels[i] for i in out],
    )


def labeled_source(data: DataConfig, split: str) -> LabeledSource:
    where = tasks.hub_or_table(data, split)
    if not where:
        raise NlpRnnError(f"no {split} data: give --{split} TABLE or --dataset NAME")
    return LabeledSource(**where, text_column=data.text_column, label_column=data.label_column)


NOT_EXPORTED = (
    "a document classifier (model.encoder language_model) reads in windows of a loop that ONNX does not take; "
    "serve it with torch (int8 works: --precision int8)"
)


class ClassificationTask(tasks.Task):
    name = NAME
    config_cls = ClassifierConfig
    default_bundle = DEFAULT_BUNDLE
    plural = "classifiers"
    train_command = tasks.TrainCommand("classifier", train_options, example_config="configs/sst2.yaml")

    def commands(self) -> list:
        return [classify]

    def endpoint(self, limits) -> tasks.Endpoint:
        return endpoint(limits)

    def build_model(self, cfg: ClassifierConfig, tokenizer, meta: dict) -> torch.nn.Module:
        return build(cfg.model, tokenizer.src_vocab_size, len(meta["labels"]))

    def prepare(
        self, cfg: ClassifierConfig, out_dir: Path, tokenizer: tasks.TokenizerChoice
    ) -> tasks.TrainingSetup:
        # checked here, not in the config: --init-from may come from the command line after the file
        if cfg.model.init_head and not cfg.model.init_from:
            raise NlpRnnError("config: model.init_head goes with model.init_from (a document classifier)")
        train_spec = labeled_source(cfg.data, "train")
        train_texts, train_labels = read_labeled(train_spec)
        if cfg.data.valid_fraction and not (cfg.data.valid or cfg.data.dataset):
            train_texts, train_labels, valid_texts, valid_labels = held_out(
                train_texts, train_labels, cfg.data.valid_fraction
            )
            valid_spec = LabeledSource(table=f"{train_spec.describe()} (held out: {cfg.data.valid_fraction})")
        else:
            valid_spec = labeled_source(cfg.data, "valid")
            valid_texts, valid_labels = read_labeled(valid_spec)
        start = transfer.start_from(cfg) if cfg.model.init_from else None
        if start and tokenizer.folder is not None:
            raise NlpRnnError(
                f"--tokenizer {tokenizer.folder} and --init-from {cfg.model.init_from}: a classifier started "
                "from a language model takes its tokenizer; give one of them"
            )
        cfg = start.config if start else cfg
        values = label_names(train_labels)
        if len(values) < 2:
            raise NlpRnnError(
                f"{train_spec.describe()}: column '{cfg.data.label_column}' has only one label ({values[0]!r})"
            )
        names = display_names(values, cfg.data.label_names, train_spec.describe())
        if start:
            start.check_labels(values, train_spec.describe())
        y_train = label_ids(train_labels, values, train_spec.describe())
        y_valid = gold_ids(valid_labels, values, names, valid_spec.describe())
        log.info(
            "data: %d training, %d validation examples; labels: %s",
            len(train_texts),
            len(valid_texts),
            ", ".join(v if v == n else f"{v} ({n})" for v, n in zip(values, names)),
        )
        tok = (
            start.tokenizer if start else tokenizer.get(cfg.tokenizer, [t for t in train_texts if t.strip()])
        )
        limit = cfg.data.max_src_len if cfg.model.encoder == "rnn" else 0  # documents are read whole
        x_train = encode_sources(tok, train_texts, limit)
        x_valid = encode_sources(tok, valid_texts, limit)
        meta = {
            "labels": names,
            "label_values": values,
            "data": {
                "train": train_spec.describe(),
                "valid": valid_spec.describe(),
                "train_examples": len(train_texts),
                "text_column": cfg.data.text_column,
                "label_column": cfg.data.label_column,
                "unknown_share": round(tok.unknown_share(x_train), 6),
            },
        }
        if start:
            meta["init_from"] = start.describe()
        bundle = tasks.new_bundle(self, cfg, tok, meta)
        model = bundle.model
        if start:
            start.copy_into(model)
        embeddings.apply(
            cfg.model,
            model,
            tok,
            bundle.meta,
            tokenizer.resume,
            [("pretrained_embeddings", embeddings_of(model), "src")],
        )
        batcher = TokenBatcher(
            [len(x) for x in x_train], cfg.train.batch_tokens, cfg.train.max_batch_sentences, cfg.train.seed
        )

        def validate() -> dict:
            total, correct = 0.0, 0
            for index in ordered_batches([len(x) for x in x_valid], 256):
                batch = devices.move(
                    make_batch([x_valid[i] for i in index], labels=[y_valid[i] for i in index]),
                    devices.of(model),
                )
                logits = model.logits(batch)
                total += float(
                    torch.nn.functional.cross_entropy(logits.float(), batch.labels, reduction="sum")
                )
                correct += int((logits.argmax(-1) == batch.labels).sum())
            return {"val_loss": total / len(x_valid), "val_acc": correct / len(x_valid)}

        return tasks.TrainingSetup(
            bundle=bundle,
            layer_groups=model.layer_groups() if hasattr(model, "layer_groups") else None,
            batcher=batcher,
            collate=lambda index: make_batch([x_train[i] for i in index], labels=[y_train[i] for i in index]),
            loss_fn=lambda batch, step: model(batch),
            validate=validate,
            score_key="val_acc",
        )

    def wrap(self, bundle: Bundle, precision: str = "fp32") -> Predictor:
        return Predictor(bundle, precision)

    def export_refusal(self, cfg: ClassifierConfig) -> Optional[str]:
        return NOT_EXPORTED if cfg.model.encoder == "language_model" else None

    def export_onnx(self, model: torch.nn.Module, folder: Path) -> dict:
        if isinstance(model, DocumentClassifier):
            raise NlpRnnError(f"export: {NOT_EXPORTED}")
        return exported.export_classifier(model, folder)

    def onnx_model(self, folder: Path, manifest: dict) -> torch.nn.Module:
        return exported.OrtClassifier(folder, manifest)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        predictor = Predictor(bundle, request.precision)
        columns = dict(
            text_column=request.text_column or bundle.meta["data"].get("text_column", "sentence"),
            label_column=request.label_column or bundle.meta["data"].get("label_column", "label"),
        )
        sources = [LabeledSource(table=str(t), **columns) for t in request.data]
        if request.dataset:
            sources += [
                LabeledSource(dataset=request.dataset, split=s, **columns)
                for s in (request.splits or ["test"])
            ]
        if not sources:
            raise NlpRnnError("no test set: give --data TABLE or --dataset NAME")
        results = []
        for source in sources:
            texts, labels = read_labeled(source)
            gold = gold_ids(labels, predictor.values, predictor.labels, source.describe())
            started = time.perf_counter()
            src_ids = predictor.encode(texts)
            predictions = predictor.classify_ids(src_ids, request.batch_size or 128)
            seconds = time.perf_counter() - started
            predicted = [predictor.labels.index(p.label) for p in predictions]
            if request.hyps is not None:
                hyps_file(Path(request.hyps), Path(source.describe()).stem, len(sources) > 1).write_text(
                    "".join(p.label + "\n" for p in predictions), encoding="utf-8"
                )
            report = classification_report(gold, predicted, predictor.labels)
            results.append(
                {
                    "name": source.describe(),
                    **report,
                    "seconds": round(seconds, 2),
                    "sentences_per_s": round(len(texts) / max(seconds, 1e-9), 1),
                    # pieces the tokenizer could only spell as <unk> or bytes: text unlike its training text
                    "unknown_share": round(bundle.tokenizer.unknown_share(src_ids), 6),
                }
            )
        return {"task": self.name, "model": model_info(bundle), "sets": results}

    def report(self, result: dict) -> list[str]:
        lines = []
        for s in result["sets"]:
            lines.append(
                f"{s['name']}: accuracy {100 * s['accuracy']:.2f}%  macro-F1 "
                f"{100 * s['macro_f1']:.2f}%  ({s['examples']} examples)  <unk>/byte-fallback pieces "
                f"{100 * s['unknown_share']:.2f}%"
            )
            lines += table(
                ["label", "precision", "recall", "F1", "support"],
                [
                    [k, 100 * v["precision"], 100 * v["recall"], 100 * v["f1"], v["support"]]
                    for k, v in s["per_class"].items()
                ],
            )
            lines.append("confusion matrix (rows: gold, columns: predicted):")
            lines += table(
                ["gold \\ pred"] + s["labels"],
                [[g] + row for g, row in zip(s["labels"], s["confusion_matrix"])],
            )
        return lines

    def describe(self, bundle: Bundle) -> dict:
        names, values = (
            bundle.meta.get("labels", []),
            bundle.meta.get("label_values", bundle.meta.get("labels", [])),
        )
        info = {"labels": [n if n == v else f"{v} {n}" for v, n in zip(values, names)]}
        body = getattr(bundle.config.model, "body", None)
        if body is not None and body.reverse:
            info["direction"] = "backward (a backward language model's body: documents read last token first)"
        if bundle.meta.get("embeddings"):
            info["pretrained embeddings"] = [
                f"{e['file']}: {e['covered']:,} of {e['words']:,} words ({100 * e['coverage']:.1f}%)"
                f"{', frozen' if e['frozen'] else ''}"
                for e in bundle.meta["embeddings"].values()
            ]
        return info


TASK = tasks.register(ClassificationTask())


def train_classifier(
    cfg: ClassifierConfig, out_dir: str | Path, resume: bool = False, progress_bar: bool = True
) -> dict:
    return tasks.train(TASK.name, cfg, out_dir, resume, None, progress_bar)
