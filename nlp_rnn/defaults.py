"""The shipped default models, used when `--model` is omitted (each task names its folder)."""

import os
from pathlib import Path

from nlp_rnn import task as tasks
from nlp_rnn.errors import NlpRnnError

CHECKPOINTS = Path(os.environ.get("NLP_RNN_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))


def default_model(task: str) -> Path:
    name = tasks.get(task).default_bundle
    path = CHECKPOINTS / (name or "")
    if name is None or not (path / "meta.json").is_file():
        raise NlpRnnError(
            f"no --model given and the default {task} model {path} is missing: pass --model DIR, "
            f"or train one (see README: nlp-rnn train ...) and set NLP_RNN_CHECKPOINTS"
        )
    return path
