"""Classification's commands: `nlp-rnn train classifier` options, `nlp-rnn classify`, POST /classify."""

import json
from pathlib import Path
from typing import Optional

import typer

from nlp_rnn import options, textio
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.classification.config import DEFAULT_BUNDLE, NAME
from nlp_rnn.tasks.classification.interface import Predictor
from nlp_rnn.tasks.defaults import default_model
from nlp_rnn.tasks.engines import load_for


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
    init_from: Optional[str] = typer.Option(
        None,
        "--init-from",
        help="Start from a language model (run folder or bundle): its tokenizer, embeddings and recurrent "
        "stack read whole documents (config: model.init_from).",
    ),
    init_head: Optional[bool] = typer.Option(
        None,
        "--init-head/--no-init-head",
        help="With --init-from a document classifier of the same labels: take its head too, so that it "
        "continues on other data (config: model.init_head; default: a fresh head).",
    ),
    valid_fraction: Optional[float] = typer.Option(
        None, "--valid-fraction", help="No --valid: hold out this fraction of the shuffled training rows."
    ),
) -> dict:
    """Train a text classifier (e.g. sentiment) from labelled sentences or documents."""
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
            valid_fraction=valid_fraction,
        ),
        "model": dict(
            pretrained_embeddings=pretrained_embeddings,
            freeze_embeddings=freeze_embeddings,
            init_from=init_from,
            init_head=init_head,
        ),
    }


def classify(
    texts: Optional[list[str]] = typer.Argument(
        None, help="Texts to classify; none: read --input or standard input."
    ),
    model: Optional[list[Path]] = options.models(
        f"checkpoints/{DEFAULT_BUNDLE}, the shipped sentiment model"
    ),
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
    predictor = Predictor(load_for(engine, model or default_model(NAME), device), precision)
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
