"""Numeric series from tables or Hub datasets: columns checked and split into periods, statistics from the
training period, one-hot categories, windows of L rows that predict the next."""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn.data import read_hub, read_table
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks.forecasting.config import NEXT, ForecastDataConfig

log = logging.getLogger(__name__)


TRUE, FALSE = {"true", "1", "yes", "train", "t"}, {"false", "0", "no", "test", "f"}  # split column values


@dataclass
class Series:
    """A table's columns: numbers (float64, (N,)), categorical strings, the training-period mask, dates."""

    name: str
    numbers: dict[str, torch.Tensor]
    categories: dict[str, list[str]]
    train: Optional[torch.Tensor]  # (N,) bool; None without a split rule
    dates: Optional[list[str]]

    @property
    def rows(self) -> int:
        return len(next(iter(self.numbers.values())))


def _row_name(path: str, index: int, table: bool) -> str:
    return f"{path}:{index + 2}" if table else f"{path} (row {index + 1})"


def _numbers(values: list, column: str, where: str, table: bool) -> torch.Tensor:
    out = []
    for i, value in enumerate(values):
        text = "" if value is None else str(value).strip()
        if text == "":
            raise NlpRnnError(f"{_row_name(where, i, table)}: empty value in column '{column}'")
        try:
            number = float(text)
        except ValueError:
            raise NlpRnnError(
                f"{_row_name(where, i, table)}: column '{column}' holds {text!r}, not a number"
            ) from None
        if not math.isfinite(number):
            raise NlpRnnError(
                f"{_row_name(where, i, table)}: column '{column}' holds {text}; NaN and infinite values are refused"
            )
        out.append(number)
    return torch.tensor(out, dtype=torch.float64)


def _columns(cfg: ForecastDataConfig, path: Optional[str], columns: list[str]) -> tuple[dict, str, bool]:
    """The named columns of a file (CSV/TSV/JSONL/Parquet) or Hub dataset split."""
    if path is not None:
        if Path(path).suffix.lower() == ".parquet":
            import datasets

            if not Path(path).is_file():
                raise NlpRnnError(f"{path}: file not found")
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
            missing = [c for c in columns if c not in ds.column_names]
            if missing:
                raise NlpRnnError(
                    f"{path}: missing column '{missing[0]}' (has: {', '.join(ds.column_names)})"
                )
            return {c: list(ds[c]) for c in columns}, str(path), False
        return (
            read_table(path, columns),
            str(path),
            Path(path).suffix.lower() not in (".jsonl", ".json", ".ndjson"),
        )
    if cfg.dataset:
        return (
            read_hub(cfg.dataset, cfg.dataset_split, columns, cfg.dataset_config),
            f"{cfg.dataset}:{cfg.dataset_split}",
            False,
        )
    raise NlpRnnError("no data: give --data FILE (CSV/TSV/JSONL/Parquet) or --dataset NAME")


def read_series(cfg: ForecastDataConfig, path: Optional[str] = None, split: bool = True) -> Series:
    """Reads the target, features, categorical and split columns; `split` False ignores the split rule."""
    if not cfg.target:
        raise NlpRnnError("no target: give --target COLUMN")
    numeric = list(dict.fromkeys([cfg.target, *cfg.inputs]))
    rule = (
        [c for c in (cfg.split_column, cfg.date_column) if c]
        if split
        else ([cfg.date_column] if cfg.date_column else [])
    )
    cols, where, table = _columns(cfg, path, list(dict.fromkeys(numeric + list(cfg.categorical) + rule)))
    numbers = {c: _numbers(cols[c], c, where, table) for c in numeric}
    categories = {c: [str(v).strip() for v in cols[c]] for c in cfg.categorical}
    dates = [str(v).strip() for v in cols[cfg.date_column]] if cfg.date_column else None
    train = None
    if split and cfg.split_column:
        flags = []
        for i, value in enumerate(cols[cfg.split_column]):
            text = str(value).strip().lower()
            if text not in TRUE | FALSE:
                raise NlpRnnError(
                    f"{_row_name(where, i, table)}: split column '{cfg.split_column}' holds {value!r} "
                    f"(use TRUE/FALSE, 1/0, yes/no or train/test)"
                )
            flags.append(text in TRUE)
        train = torch.tensor(flags)
    elif split and cfg.date_column:
        if not cfg.test_from:
            raise NlpRnnError("--date-column needs --test-from DATE (the first date of the test period)")
        unsorted = next((i for i in range(1, len(dates)) if dates[i] < dates[i - 1]), None)
        if unsorted is not None:
            raise NlpRnnError(
                f"{_row_name(where, unsorted, table)}: date {dates[unsorted]!r} comes before the row above it; "
                f"rows must be in time order (ISO dates, YYYY-MM-DD)"
            )
        train = torch.tensor([d < cfg.test_from for d in dates])
    return Series(where, numbers, categories, train, dates)


def check_periods(series: Series) -> None:
    """A training period, then a test period: training rows before the first test row and none after it."""
    train = series.train
    if not bool(train.any()):
        raise NlpRnnError(f"{series.name}: the split rule leaves no training rows")
    if bool(train.all()):
        raise NlpRnnError(f"{series.name}: the split rule leaves no test rows")
    first_test = int((~train).nonzero()[0])
    if not bool(train[:first_test].any()):
        raise NlpRnnError(
            f"{series.name}: the test period (from row {first_test + 1}) has no training rows before it"
        )
    if bool(train[first_test:].any()):
        late = first_test + int(train[first_test:].nonzero()[0])
        raise NlpRnnError(
            f"{series.name} (row {late + 1}): a training row after the test period began (row {first_test + 1}); "
            f"the training period must come first"
        )


@dataclass
class Windows:
    """Inputs for every row t >= L: windows (N-L, L, F) standardised, one-hot (N-L, C), targets (N-L,)."""

    windows: torch.Tensor
    onehot: torch.Tensor
    target: torch.Tensor  # standardised


def statistics(series: Series, columns: Sequence[str]) -> dict[str, list[float]]:
    """Mean and standard deviation of each column over the training period only."""
    mask = series.train if series.train is not None else torch.ones(series.rows, dtype=torch.bool)
    stats = {}
    for c in columns:
        values = series.numbers[c][mask]
        std = float(values.std()) if values.numel() > 1 else 0.0
        if std == 0.0:
            raise NlpRnnError(
                f"{series.name}: column '{c}' is constant over the training period; it cannot be standardised"
            )
        stats[c] = [float(values.mean()), std]
    return stats


def category_values(series: Series, columns: Sequence[str]) -> dict[str, list[str]]:
    mask = series.train.tolist() if series.train is not None else [True] * series.rows
    return {c: sorted({v for v, m in zip(series.categories[c], mask) if m}) for c in columns}


def one_hot(series: Series, known: dict[str, list[str]], warn: bool = True) -> torch.Tensor:
    """(N, C) one-hot of every categorical column; a value never seen in training gets all zeros."""
    blocks, unknown = [], 0
    for column, values in known.items():
        index = {v: i for i, v in enumerate(values)}
        block = torch.zeros(series.rows, len(values))
        for row, value in enumerate(series.categories[column]):
            if value in index:
                block[row, index[value]] = 1.0
            elif value != NEXT:
                unknown += 1
        blocks.append(block)
    if unknown and warn:
        log.warning(
            "%s: %d categorical values never seen in training map to the 'unknown' slot (all-zero one-hot)",
            series.name,
            unknown,
        )
    return torch.cat(blocks, dim=1) if blocks else torch.zeros(series.rows, 0)


def make_windows(
    series: Series, inputs: Sequence[str], target: str, lags: int, stats: dict, known: dict
) -> Windows:
    if series.rows <= lags:
        raise NlpRnnError(
            f"{series.name}: {series.rows} rows, but a window needs {lags} earlier rows and a row to predict"
        )
    z = torch.stack(
        [(series.numbers[c] - stats[c][0]) / stats[c][1] for c in inputs], dim=1
    ).float()  # (N, F)
    windows = z.unfold(0, lags, 1).transpose(1, 2)[
        :-1
    ]  # (N-L, L, F): entry i covers rows i .. i+L-1, predicts i+L
    onehot = one_hot(series, known)[lags:]  # (N-L, C)
    y = ((series.numbers[target] - stats[target][0]) / stats[target][1]).float()[lags:]  # (N-L,)
    return Windows(windows.contiguous(), onehot, y)
