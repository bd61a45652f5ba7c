"""The shipped default models, used when `--model` is omitted (each task names its folder)."""

import os
from pathlib import Path

from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks import base as tasks

CHECKPOINTS = Path(os.environ.get("NLP_RNN_CHECKPOINTS", Path(__file__).resolve().parents[2] / "checkpoints"))


def default_model(task: str) -> Path:
    name = tasks.get(task).default_bundle
    path = CHECKPOINTS / (name or "")
    if name is None or not (path / "meta.json").is_file():
        raise NlpRnnError(
            f"no --model given and the default {task} model {path} is missing: pass --model DIR, "
            f"or train one (see README: nlp-rnn train ...) and set NLP_RNN_CHECKPOINTS"
        )
    return path


def for_evaluation(src_given: bool) -> Path:
    """`evaluate` without --model: the shipped translation model for --src/--ref, else the shipped classifier."""
    return default_model("translation" if src_given else "classification")


def for_info() -> Path:
    """`info` without a model: the shipped translation model."""
    return default_model("translation")
