"""The translation task's config: data, tokenizer, model, training and decoding settings."""

from dataclasses import dataclass, field

from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig, _positive
from nlp_rnn.nn.seq2seq_config import Seq2SeqModelConfig

NAME = "translation"  # the task's name in the registry and in bundles


@dataclass(frozen=True)
class DecodeConfig:
    beam_size: int = 1
    max_len_a: float = 1.5  # maximum output length = a * source length + b
    max_len_b: int = 10
    batch_size: int = 128

    def __post_init__(self) -> None:
        _positive("decode.beam_size", self.beam_size)
        _positive("decode.batch_size", self.batch_size)


@dataclass(frozen=True)
class TranslationConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: Seq2SeqModelConfig = field(default_factory=Seq2SeqModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
