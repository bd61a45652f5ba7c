"""The shipped default models, used when `--model` is omitted."""

import os
from pathlib import Path

from nlp_rnn.errors import NlpRnnError

CHECKPOINTS = Path(os.environ.get("NLP_RNN_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))
DEFAULTS = {"translation": "multi30k-de-en", "classification": "sst2"}


def default_model(task: str) -> Path:
    path = CHECKPOINTS / DEFAULTS[task]
    if not (path / "meta.json").is_file():
        raise NlpRnnError(
            f"no --model given and the default {task} model {path} is missing: pass --model DIR, "
            f"or train one (see README: nlp-rnn train ...) and set NLP_RNN_CHECKPOINTS"
        )
    return path
