"""The language-model task (registered on import): config, data and scores, `Generator`, its commands, the task."""

from nlp_rnn.tasks.language_model.cli import endpoint, generate, train_options
from nlp_rnn.tasks.language_model.config import NAME, TABLES, GenerateConfig, LMConfig, LMDataConfig
from nlp_rnn.tasks.language_model.data import (
    Corpus,
    Sequences,
    StreamBatcher,
    Window,
    cache_nll,
    condition_ids,
    dynamic_nll,
    make_sequences,
    read_corpus,
    scores,
    sentence_ids,
    sequences_nll,
    split_off_validation,
    stream_ids,
    stream_nll,
)
from nlp_rnn.tasks.language_model.generator import Generator, Sample, check_sampling
from nlp_rnn.tasks.language_model.task import TASK, LanguageModelTask, train_lm

__all__ = [
    "Corpus",
    "GenerateConfig",
    "Generator",
    "LMConfig",
    "LMDataConfig",
    "LanguageModelTask",
    "NAME",
    "Sample",
    "Sequences",
    "StreamBatcher",
    "TABLES",
    "TASK",
    "Window",
    "cache_nll",
    "dynamic_nll",
    "check_sampling",
    "condition_ids",
    "endpoint",
    "generate",
    "make_sequences",
    "read_corpus",
    "scores",
    "sentence_ids",
    "sequences_nll",
    "split_off_validation",
    "stream_ids",
    "stream_nll",
    "train_lm",
    "train_options",
]
