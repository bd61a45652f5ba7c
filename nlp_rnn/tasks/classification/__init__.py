"""The classification task (registered on import): config, `Predictor`, its commands, the task."""

from nlp_rnn.tasks.classification.cli import classify, endpoint, train_options
from nlp_rnn.tasks.classification.config import NAME, ClassifierConfig
from nlp_rnn.tasks.classification.interface import Prediction, Predictor, display_names, gold_ids
from nlp_rnn.tasks.classification.task import TASK, ClassificationTask, labeled_source, train_classifier

__all__ = [
    "ClassificationTask",
    "ClassifierConfig",
    "NAME",
    "Prediction",
    "Predictor",
    "TASK",
    "classify",
    "display_names",
    "endpoint",
    "gold_ids",
    "labeled_source",
    "train_classifier",
    "train_options",
]
