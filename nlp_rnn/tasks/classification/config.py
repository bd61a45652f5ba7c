"""The classification task's config: data, tokenizer, model and training."""

from dataclasses import dataclass, field

from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig
from nlp_rnn.nn.classifier import ClassifierModelConfig

NAME = "classification"  # the task's name in the registry and in bundles
DEFAULT_BUNDLE = "sentiment"  # under checkpoints/: the model `classify` uses without --model


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
