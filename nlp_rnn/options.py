"""Command-line options that several commands share, declared once (typer reads an option's settings
from a parameter's default value, so a command uses one as `device: str = DEVICE`)."""

from typing import Optional

import typer

from nlp_rnn.errors import NlpRnnError

DEVICE = typer.Option("auto", "--device", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N.")
ENGINE = typer.Option(
    "torch", "--engine", help="torch, or onnxruntime with --model an exported folder (nlp-rnn export)."
)
PRECISION_AUTO = typer.Option(
    "auto",
    "--precision",
    help="auto (the fastest measured within tolerance on this CPU kind, docs/deployment.md), fp32 (exact), bf16 "
    "or int8 (CPU).",
)
PRETRAINED = typer.Option(
    None,
    "--pretrained-embeddings",
    help="Word vectors (word2vec/GloVe/fastText text format, "
    ".txt/.vec, .gz too) for the embeddings; pair with a word tokenizer (tokenizer.model_type: word).",
)
FREEZE = typer.Option(
    None, "--freeze-embeddings/--no-freeze-embeddings", help="Keep the embeddings fixed during training."
)
DATASET = typer.Option(None, "--dataset", help="Hugging Face Hub dataset (or a local dataset folder).")
TRAIN_SPLIT = typer.Option(None, "--train-split", help="Hub training split.")
VALID_SPLIT = typer.Option(None, "--valid-split", help="Hub validation split.")


def output(help_text: str = "Write the results here instead of standard output."):
    return typer.Option(None, "--output", help=help_text)


def input_file(help_text: str = "File with one text per line."):
    return typer.Option(None, "--input", help=help_text)


def model(default_hint: str):
    return typer.Option(None, "--model", help=f"Bundle or training folder (default: {default_hint}).")


def models(default_hint: str):
    """--model, repeatable: two or more make an ensemble (same task and tokenizer; probabilities averaged)."""
    return typer.Option(
        None,
        "--model",
        help=f"Bundle, training folder or hf://ORG/NAME (default: {default_hint}); repeat it for an ensemble.",
    )


def columns(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """'a, b,c' -> ('a', 'b', 'c'); None stays None."""
    return None if text is None else tuple(c.strip() for c in text.split(",") if c.strip())


def mapping(text: Optional[str], option: str) -> Optional[dict[str, str]]:
    """'0=negative,1=positive' -> {'0': 'negative', '1': 'positive'}."""
    if text is None:
        return None
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise NlpRnnError(f"{option} must look like 0=negative,1=positive, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}
