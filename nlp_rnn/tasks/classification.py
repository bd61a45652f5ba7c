"""The classification task: labelled text, the sentence classifier, accuracy validation, `Predictor`, test-set reports.

Reuses the data readers, tokenizer, encoder, training loop and bundles of translation.
"""

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import typer

from nlp_rnn import devices, embeddings, options, textio
from nlp_rnn.bundle import Bundle
from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig
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
from nlp_rnn.nn.classifier import ClassifierModelConfig, build, embeddings_of
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.defaults import default_model
from nlp_rnn.tasks.engines import load_for
from nlp_rnn.tasks.evaluation import hyps_file, model_info, table
from nlp_rnn.tasks.metrics import classification_report
from nlp_rnn.tasks.predict import chunked, precision_for, with_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(vocab_size=8000, model_type="unigram")
    )
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(batch_tokens=2048, validate_every=100, patience=6)
    )


def labeled_source(data: DataConfig, split: str) -> LabeledSource:
    where = tasks.hub_or_table(data, split)
    if not where:
        raise NlpRnnError(f"no {split} data: give --{split} TABLE or --dataset NAME")
    return LabeledSource(**where, text_column=data.text_column, label_column=data.label_column)


# ----------------------------------------------------------------------------- raw text in, label out


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
        if bundle.task != "classification":
            raise NlpRnnError(
                f"{bundle.path}: this is a {bundle.task} model; classify needs a classification model"
            )
        self.precision = precision_for(bundle.model, precision)
        self.bundle, self.model, self.tokenizer = (
            bundle,
            with_precision(bundle.model, self.precision),
            bundle.tokenizer,
        )
        self.labels: list[str] = list(bundle.meta["labels"])  # names
        self.values: list[str] = list(bundle.meta.get("label_values", self.labels))  # as in the training data
        self.ids = [int(v) if v.lstrip("-").isdigit() else i for i, v in enumerate(self.values)]
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
        device = devices.of(self.model)
        out = torch.zeros(len(src_ids), len(self.labels), device="cpu")
        for index in ordered_batches([len(s) for s in src_ids], batch_size):
            logits = self.model.logits(devices.move(make_batch([src_ids[i] for i in index]), device))
            out[torch.tensor(index, device="cpu")] = torch.softmax(logits.float(), dim=-1).cpu()
        return out

    def classify(self, texts: Sequence[str], batch_size: int = 128) -> list[Prediction]:
        if not texts:
            return []
        probs = self.probabilities(self.encode(texts), batch_size)
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


# ----------------------------------------------------------------------------- command line


def train_options(
    train: Optional[str] = typer.Option(None, "--train", help="Training TSV/CSV/JSONL."),
    valid: Optional[str] = typer.Option(None, "--valid", help="Validation TSV/CSV/JSONL."),
    dataset: Optional[str] = typer.Option(None, help="Hugging Face Hub dataset, e.g. stanfordnlp/sst2."),
    train_split: Optional[str] = options.TRAIN_SPLIT,
    valid_split: Optional[str] = options.VALID_SPLIT,
    text_column: Optional[str] = typer.Option(None, help="Text column (default: the config's, 'sentence')."),
    label_column: Optional[str] = typer.Option(None, help="Label column (default: the config's, 'label')."),
    label_names: Optional[str] = typer.Option(
        None,
        "--label-names",
        help="Names the labels are shown as, e.g. '0=negative,1=positive' (config: data.label_names).",
    ),
    pretrained_embeddings: Optional[str] = options.PRETRAINED,
    freeze_embeddings: Optional[bool] = options.FREEZE,
) -> dict:
    """Train a sentence classifier (e.g. sentiment) from labelled text."""
    return {
        "data": dict(
            train=train,
            valid=valid,
            dataset=dataset,
            train_split=train_split,
            valid_split=valid_split,
            text_column=text_column,
            label_column=label_column,
            label_names=options.mapping(label_names, "--label-names"),
        ),
        "model": dict(pretrained_embeddings=pretrained_embeddings, freeze_embeddings=freeze_embeddings),
    }


def classify(
    texts: Optional[list[str]] = typer.Argument(
        None, help="Texts to classify; none: read --input or standard input."
    ),
    model: Optional[Path] = options.model("checkpoints/sst2, the shipped SST-2 sentiment model"),
    input: Optional[Path] = options.input_file(),
    output: Optional[Path] = options.output(),
    batch_size: int = typer.Option(128, "--batch-size", help="Texts per batch."),
    fmt: str = typer.Option(
        "text",
        "--format",
        help="text (label name<TAB>probability) or jsonl (label name, label_id and every class's probability).",
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, int8 (CPU, faster) or auto."),
    device: str = options.DEVICE,
    engine: str = options.ENGINE,
) -> None:
    """Classify raw text (e.g. sentiment): output line N belongs to input line N."""
    textio.check_format(fmt)
    textio.check_at_least(1, batch_size=batch_size)
    predictor = Predictor(
        load_for(engine, model or default_model(ClassificationTask.name), device), precision
    )
    with textio.output_file(output) as sink:
        for number, (text, p) in enumerate(
            predictor.stream(textio.texts_or_input(texts, input), batch_size), 1
        ):
            if fmt == "jsonl":
                row = {
                    "line": number,
                    "text": text,
                    "label": p.label,
                    "label_id": p.label_id,
                    "probability": round(p.probability, 6),
                    "probabilities": {k: round(v, 6) for k, v in p.probabilities.items()},
                }
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                sink.write(f"{p.label}\t{p.probability:.4f}\n")


def endpoint(limits) -> tasks.Endpoint:
    """POST /classify: {"texts": [...]}."""

    def answer(results: list, req) -> dict:
        return {
            "predictions": [
                {
                    "label": p.label,
                    "label_id": p.label_id,
                    "probability": p.probability,
                    "probabilities": p.probabilities,
                }
                for p in results
            ]
        }

    return tasks.Endpoint(
        "classify",
        "Classify texts: the label's name, its id in the training data and every class's probability.",
        {},
        lambda predictor, texts, req: predictor.classify(texts, limits.max_batch),
        answer,
        batch_key=lambda req: (),
    )


# ----------------------------------------------------------------------------- the task


class ClassificationTask(tasks.Task):
    name = "classification"
    config_cls = ClassifierConfig
    default_bundle = "sst2"
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
        train_spec, valid_spec = labeled_source(cfg.data, "train"), labeled_source(cfg.data, "valid")
        train_texts, train_labels = read_labeled(train_spec)
        valid_texts, valid_labels = read_labeled(valid_spec)
        values = label_names(train_labels)
        if len(values) < 2:
            raise NlpRnnError(
                f"{train_spec.describe()}: column '{cfg.data.label_column}' has only one label ({values[0]!r})"
            )
        names = display_names(values, cfg.data.label_names, train_spec.describe())
        y_train = label_ids(train_labels, values, train_spec.describe())
        y_valid = gold_ids(valid_labels, values, names, valid_spec.describe())
        log.info(
            "data: %d training, %d validation examples; labels: %s",
            len(train_texts),
            len(valid_texts),
            ", ".join(v if v == n else f"{v} ({n})" for v, n in zip(values, names)),
        )
        tok = tokenizer.get(cfg.tokenizer, [t for t in train_texts if t.strip()])
        x_train = encode_sources(tok, train_texts, cfg.data.max_src_len)
        x_valid = encode_sources(tok, valid_texts, cfg.data.max_src_len)
        meta = {
            "labels": names,
            "label_values": values,
            "data": {
                "train": train_spec.describe(),
                "valid": valid_spec.describe(),
                "train_examples": len(train_texts),
                "text_column": cfg.data.text_column,
                "label_column": cfg.data.label_column,
            },
        }
        bundle = tasks.new_bundle(self, cfg, tok, meta, cfg.train.seed)
        model = bundle.model
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
            batcher=batcher,
            collate=lambda index: make_batch([x_train[i] for i in index], labels=[y_train[i] for i in index]),
            loss_fn=lambda batch, step: model(batch),
            validate=validate,
            score_key="val_acc",
        )

    def wrap(self, bundle: Bundle, precision: str = "fp32") -> Predictor:
        return Predictor(bundle, precision)

    def export_onnx(self, model: torch.nn.Module, folder: Path) -> dict:
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
            predictions = predictor.classify(texts, request.batch_size or 128)
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
                }
            )
        return {"task": self.name, "model": model_info(bundle), "sets": results}

    def report(self, result: dict) -> list[str]:
        lines = []
        for s in result["sets"]:
            lines.append(
                f"{s['name']}: accuracy {100 * s['accuracy']:.2f}%  macro-F1 "
                f"{100 * s['macro_f1']:.2f}%  ({s['examples']} examples)"
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
