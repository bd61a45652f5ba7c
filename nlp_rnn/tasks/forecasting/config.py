"""The forecasting task's config: the series' columns and periods, and the whole (model, training)."""

from dataclasses import dataclass, field
from typing import Optional

from nlp_rnn.config import TrainConfig, _positive
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.forecaster import ForecastModelConfig

NAME = "forecasting"  # the task's name in the registry and in bundles
NEXT = "\0next"  # the categorical value of the step after the last row: not known, so the 'unknown' slot


@dataclass(frozen=True)
class ForecastDataConfig:
    data: Optional[str] = None  # a CSV/TSV/JSONL/Parquet file with one row per time step, in time order
    dataset: Optional[str] = None  # or a Hugging Face Hub dataset (one split holds the whole series)
    dataset_config: Optional[str] = None
    dataset_split: str = "train"
    target: Optional[str] = None
    features: tuple[str, ...] = ()  # default: the target alone
    categorical: tuple[str, ...] = ()  # columns of the predicted row that join the head (one-hot)
    lags: int = 5
    split_column: Optional[str] = None  # TRUE/FALSE (1/0, yes/no, train/test): training period or not
    date_column: Optional[str] = None  # ... or ISO dates (sorted) with test_from, the first test date
    test_from: Optional[str] = None
    valid_fraction: float = 0.2  # the last part of the training period validates (early stopping)
    refit: bool = False  # then train again on the whole training period for the epochs early stopping chose
    batch_size: int = 64

    def __post_init__(self) -> None:
        _positive("data.lags", self.lags)
        _positive("data.batch_size", self.batch_size)
        if not 0 < self.valid_fraction < 1:
            raise NlpRnnError(f"config: data.valid_fraction must be in (0, 1), got {self.valid_fraction}")

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.features or ((self.target,) if self.target else ())


@dataclass(frozen=True)
class ForecastConfig:
    data: ForecastDataConfig = field(default_factory=ForecastDataConfig)
    model: ForecastModelConfig = field(default_factory=ForecastModelConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            lr=3e-3, clip_norm=1.0, validate_every=50, log_every=25, patience=8, max_epochs=200
        )
    )
