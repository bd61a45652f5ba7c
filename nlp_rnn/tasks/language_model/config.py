"""The language-model task's config: data, generation settings, and the whole (model, tokenizer, training)."""

from dataclasses import dataclass, field
from typing import Optional

from nlp_rnn.config import TokenizerConfig, TrainConfig, _choice, _positive
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.language_model import LMModelConfig

NAME = "language_model"  # the task's name in the registry and in bundles
TABLES = (".tsv", ".tab", ".csv", ".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class LMDataConfig:
    train: tuple[str, ...] = ()  # plain text files, or TSV/CSV/JSONL tables with `text_column`
    valid: tuple[str, ...] = ()
    valid_fraction: float = 0.0  # no valid files: the last fraction of the training text (char-rnn's 0.1)
    dataset: Optional[str] = None  # a Hugging Face Hub dataset (or a local dataset folder)
    dataset_config: Optional[str] = None
    train_split: str = "train"
    valid_split: str = "validation"
    text_column: str = "text"
    condition_column: Optional[str] = None  # labels to condition on (sentence mode)
    mode: str = "stream"  # stream | sentence
    streams: int = 64  # stream mode: batch rows, each a contiguous part of the corpus
    bptt: int = 128  # stream mode: window length of truncated backpropagation through time
    # Stream mode: AWD-LSTM's variable-length windows (bptt, or bptt/2 one time in 20, then normal with
    # sd 5, at least 5), the learning rate of each step scaled by its window's length / bptt.
    variable_bptt: bool = False
    max_len: int = 256  # sentence mode: pieces per sequence (longer ones are truncated)

    def __post_init__(self) -> None:
        _choice("data.mode", self.mode, ("stream", "sentence"))
        for name in ("streams", "bptt", "max_len"):
            _positive(f"data.{name}", getattr(self, name))
        if not 0 <= self.valid_fraction < 1:
            raise NlpRnnError(f"config: data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.condition_column and self.mode != "sentence":
            raise NlpRnnError(
                "config: data.condition_column needs data.mode: sentence (one labelled row per sequence)"
            )


@dataclass(frozen=True)
class GenerateConfig:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_tokens: int = 256
    allow_unk: bool = False  # let sampling draw the unknown token (a word-level model's <unk>)


@dataclass(frozen=True)
class LMConfig:
    data: LMDataConfig = field(default_factory=LMDataConfig)
    tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(model_type="char", byte_exact=True)
    )
    model: LMModelConfig = field(default_factory=LMModelConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(lr=2e-3, clip_norm=5.0, validate_every=200, patience=10)
    )
    decode: GenerateConfig = field(default_factory=GenerateConfig)
