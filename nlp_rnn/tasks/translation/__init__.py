"""The translation task (registered on import): config, `Translator`, its commands, the task."""

from nlp_rnn.tasks.translation.cli import (
    endpoint,
    format_translation,
    plot_attention,
    train_options,
    translate,
)
from nlp_rnn.tasks.translation.config import NAME, DecodeConfig, TranslationConfig
from nlp_rnn.tasks.translation.interface import Translation, Translator
from nlp_rnn.tasks.translation.task import (
    TASK,
    TranslationTask,
    parallel_source,
    teacher_forcing_ratio,
    test_sets,
    train_translation,
)

__all__ = [
    "DecodeConfig",
    "NAME",
    "TASK",
    "Translation",
    "TranslationConfig",
    "TranslationTask",
    "Translator",
    "endpoint",
    "format_translation",
    "parallel_source",
    "plot_attention",
    "teacher_forcing_ratio",
    "test_sets",
    "train_options",
    "train_translation",
    "translate",
]
