"""The translation task's config: data, tokenizer, model, training and decoding settings."""

from dataclasses import dataclass, field

from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig, _positive
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.seq2seq_config import Seq2SeqModelConfig

NAME = "translation"  # the task's name in the registry and in bundles


@dataclass(frozen=True)
class DecodeConfig:
    beam_size: int = 1
    max_len_a: float = 1.5  # maximum output length = a * source length + b
    max_len_b: int = 10
    batch_size: int = 128
    # The vocabulary shortlist built when training ends (`nn.shortlist`; `nlp-rnn shortlist` for a bundle):
    # per source piece its `shortlist_per_source` most associated target pieces, plus the
    # `shortlist_frequent` most frequent target pieces. 0 per source: build none.
    shortlist_per_source: int = 50
    shortlist_frequent: int = 300

    def __post_init__(self) -> None:
        _positive("decode.beam_size", self.beam_size)
        _positive("decode.batch_size", self.batch_size)
        if self.shortlist_per_source < 0 or self.shortlist_frequent < 0:
            raise NlpRnnError("config: decode.shortlist_per_source and shortlist_frequent must be >= 0")


@dataclass(frozen=True)
class TranslationConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: Seq2SeqModelConfig = field(default_factory=Seq2SeqModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
