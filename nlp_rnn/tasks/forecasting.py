"""The forecasting task: numeric series in a table -> the next value of a target column.

The input of row t is the window of rows t-L .. t-1 (all feature columns, standardised with the
statistics of the training period only); the categorical values of row t itself (e.g. its weekday)
join the head. A split rule — a boolean column, or a date column and the first test date — separates
the training period from the test period; test rows' windows may reach back into training rows.
The last `valid_fraction` of the training period validates for early stopping; with `refit`, a
second run then trains the same initial model on the whole training period for the number of epochs
and the learning rates the first run's best model had (the first run is kept in `selection/`), so
the shipped model has seen the most recent training rows. Evaluation scores
the test period with R², MSE and MAE beside baselines fitted in the same run: yesterday's value, a
linear AR(L) model on the same lagged features, and AR(L) with the categorical columns.
"""

import bisect
import csv
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch
import typer

from nlp_rnn import devices, distributed, options, textio
from nlp_rnn.bundle import Bundle
from nlp_rnn.config import TrainConfig, _positive
from nlp_rnn.data import read_hub, read_table, split_by_weight
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.forecaster import Forecaster, ForecastModelConfig
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.evaluation import model_info, table

log = logging.getLogger(__name__)
TRUE, FALSE = {"true", "1", "yes", "train", "t"}, {"false", "0", "no", "test", "f"}
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


# ----------------------------------------------------------------------------- reading


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


# ----------------------------------------------------------------------------- windows


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


# ----------------------------------------------------------------------------- baselines and scores


def r2(y: torch.Tensor, predicted: torch.Tensor) -> float:
    """1 - SSE / sum (y - mean y)^2 over these rows (as ISLP's `score` computes it)."""
    return float(1 - ((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def scores(y: torch.Tensor, predicted: torch.Tensor) -> dict:
    return {
        "r2": round(r2(y, predicted), 4),
        "mse": round(float(((y - predicted) ** 2).mean()), 5),
        "mae": round(float((y - predicted).abs().mean()), 5),
    }


def lagged_design(
    series: Series, inputs: Sequence[str], lags: int, onehot: Optional[torch.Tensor]
) -> torch.Tensor:
    """(N-L, 1 + L*F [+ C]) raw lagged values (lag 1 first) with an intercept, for rows t >= L."""
    columns = [torch.ones(series.rows - lags, dtype=torch.float64)]
    for lag in range(1, lags + 1):
        for c in inputs:
            columns.append(series.numbers[c][lags - lag : series.rows - lag])
    design = torch.stack(columns, dim=1)
    return design if onehot is None else torch.cat([design, onehot.double()], dim=1)


def fit_linear(design: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares coefficients (minimum norm where columns are collinear, e.g. a full one-hot and the intercept)."""
    return torch.linalg.lstsq(design, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)


def baselines(
    series: Series,
    inputs: Sequence[str],
    target: str,
    lags: int,
    known: dict,
    fit_rows: torch.Tensor,
    test_rows: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Predictions of the baselines for test_rows (indices into rows t >= L), fitted on fit_rows."""
    y = series.numbers[target][lags:]
    out = {"yesterday": series.numbers[target][lags - 1 : series.rows - 1][test_rows]}
    plain = lagged_design(series, inputs, lags, None)
    out[f"AR({lags})"] = plain[test_rows] @ fit_linear(plain[fit_rows], y[fit_rows])
    if known:
        full = lagged_design(series, inputs, lags, one_hot(series, known, warn=False)[lags:])
        out[f"AR({lags}) + {', '.join(known)}"] = full[test_rows] @ fit_linear(full[fit_rows], y[fit_rows])
    return out


# ----------------------------------------------------------------------------- raw table in, forecasts out


class Predictor:
    """Forecasts for every row of a table (NaN for the first L rows) and for the step after the last row."""

    def __init__(self, bundle: Bundle) -> None:
        if bundle.task != ForecastTask.name:
            raise NlpRnnError(f"{bundle.path}: this is a {bundle.task} model; forecast needs a forecaster")
        self.bundle, self.model, self.meta = bundle, bundle.model.eval(), bundle.meta
        self.cfg: ForecastConfig = bundle.config

    def read(self, path: Optional[str] = None, dataset: Optional[str] = None, split: bool = False) -> Series:
        data = self.cfg.data
        if dataset is not None:
            data = ForecastDataConfig(**{**vars(data), "dataset": dataset})
        return read_series(data, path, split=split)

    @torch.no_grad()
    def predict(self, series: Series) -> tuple[torch.Tensor, float]:
        """(N,) forecasts in the target's units (NaN for rows without L earlier rows), and the next step's."""
        d, stats, lags = self.cfg.data, self.meta["stats"], self.cfg.data.lags
        extended = Series(
            series.name,
            {c: torch.cat([v, v[-1:]]) for c, v in series.numbers.items()},
            {c: v + [NEXT] for c, v in series.categories.items()},
            None,
            None,
        )
        win = make_windows(extended, d.inputs, d.target, lags, stats, self.meta["categories"])
        z = self.model(*devices.move((win.windows, win.onehot), devices.of(self.model))).double().cpu()
        y = z * stats[d.target][1] + stats[d.target][0]
        out = torch.full((series.rows,), float("nan"), dtype=torch.float64)
        out[lags:] = y[:-1]
        return out, float(y[-1])


# ----------------------------------------------------------------------------- the task

SELECTION, SELECTED = "selection", "refit.json"


class RefitSchedule:
    """Phase 2 of a refit: phase 1's best step count and learning rates, scaled from its epochs to the longer ones."""

    def __init__(self, plan: dict, phase1_epoch_steps: int, epoch_steps: int) -> None:
        self.scale = epoch_steps / phase1_epoch_steps
        self.steps = max(1, round(plan["best"]["step"] * self.scale))
        pairs = sorted(tuple(pair) for pair in plan["lrs"])  # (phase-1 step k, the lr its steps up to k used)
        self.steps_logged, self.lrs = [k for k, _ in pairs], [lr for _, lr in pairs]

    def lr_at(self, step: int) -> float:
        """The learning rate of (0-based) `step`: that of the same point of phase 1's epochs."""
        i = bisect.bisect_left(
            self.steps_logged, step / self.scale + 1
        )  # the first record at or after that step
        return self.lrs[min(i, len(self.lrs) - 1)]


# ----------------------------------------------------------------------------- command line


def train_options(
    data: Optional[str] = typer.Option(
        None, "--data", help="CSV/TSV/JSONL/Parquet, one row per time step, in time order."
    ),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Hugging Face Hub dataset holding the series."
    ),
    target: Optional[str] = typer.Option(None, "--target", help="Column to forecast."),
    features: Optional[str] = typer.Option(
        None, "--features", help="Comma-separated input columns (default: the target)."
    ),
    categorical: Optional[str] = typer.Option(
        None, "--categorical", help="Comma-separated columns of the predicted row (one-hot)."
    ),
    lags: Optional[int] = typer.Option(
        None, "--lags", help="Window length L: rows t-L .. t-1 predict row t."
    ),
    split_column: Optional[str] = typer.Option(
        None, "--split-column", help="TRUE/FALSE column: the training period."
    ),
    date_column: Optional[str] = typer.Option(
        None, "--date-column", help="ISO date column (with --test-from)."
    ),
    test_from: Optional[str] = typer.Option(None, "--test-from", help="First date of the test period."),
    valid_fraction: Optional[float] = typer.Option(
        None, "--valid-fraction", help="Last part of the training period that validates."
    ),
    refit: Optional[bool] = typer.Option(
        None,
        "--refit/--no-refit",
        help="After early stopping, train again on the whole "
        "training period for the epochs and learning rates chosen (first run kept in "
        "selection/).",
    ),
) -> dict:
    """Train a recurrent forecaster on numeric columns (e.g. NYSE trading volume)."""
    return {
        "data": dict(
            data=data,
            dataset=dataset,
            target=target,
            features=options.columns(features),
            categorical=options.columns(categorical),
            lags=lags,
            split_column=split_column,
            date_column=date_column,
            test_from=test_from,
            valid_fraction=valid_fraction,
            refit=refit,
        )
    }


def forecast(
    model: Path = typer.Option(..., "--model", help="Forecaster bundle or training folder."),
    data: Path = typer.Option(..., "--data", help="The series: the bundle's columns, one row per time step."),
    output: Optional[Path] = options.output("Write the CSV here instead of standard output."),
    device: str = options.DEVICE,
) -> None:
    """Forecast every row of a series from its previous rows, and the step after the last row (CSV out)."""
    predictor = Predictor(tasks.load(model, device=device))
    series = predictor.read(str(data))
    predicted, next_value = predictor.predict(series)
    lags, target = predictor.cfg.data.lags, predictor.cfg.data.target
    log.info("the first %d rows have no %d earlier rows: their forecast is empty", lags, lags)
    dates = series.dates or None
    with textio.output_file(output, newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(["row"] + (["date"] if dates else []) + [target, "forecast"])
        for i in range(series.rows):
            value = "" if i < lags else f"{float(predicted[i]):.6g}"
            actual = f"{float(series.numbers[target][i]):.6g}"
            writer.writerow([i + 1] + ([dates[i]] if dates else []) + [actual, value])
        writer.writerow(["next"] + ([""] if dates else []) + ["", f"{next_value:.6g}"])


class ForecastTask(tasks.Task):
    name = "forecasting"
    config_cls = ForecastConfig
    needs_tokenizer = False
    components = (("recurrent layers", ("rnn.",)), ("head", ("head.",)))
    train_command = tasks.TrainCommand(
        "forecaster", train_options, config_required=False, example_config="configs/nyse.yaml"
    )

    def commands(self) -> list:
        return [forecast]

    def build_model(self, cfg: ForecastConfig, tokenizer, meta: dict) -> Forecaster:
        categories = sum(len(v) for v in meta["categories"].values())
        return Forecaster(cfg.model, len(cfg.data.inputs), cfg.data.lags, categories)

    def fit(
        self,
        cfg: ForecastConfig,
        out_dir: Path,
        tokenizer: tasks.TokenizerChoice,
        resume: bool,
        progress_bar: bool,
        device: torch.device,
    ) -> dict:
        if not cfg.data.refit:
            return super().fit(cfg, out_dir, tokenizer, resume, progress_bar, device)
        from nlp_rnn.train import METRICS, Trainer

        selection = out_dir / SELECTION
        if not (selection / SELECTED).is_file():
            if (out_dir / "last").is_dir() and not resume:
                raise NlpRnnError(
                    f"{out_dir}: already holds a training run; use --resume, or another --output"
                )
            log.info(
                "refit, phase 1 of 2: choosing the number of epochs on the validation rows (in %s)", selection
            )
            setup = self.prepare(cfg, selection, tokenizer)
            summary = Trainer(cfg.train, setup, selection, progress_bar, device).run(
                resume and (selection / "last").is_dir()
            )
            if not summary["best"]:
                raise NlpRnnError(f"{selection}: the selection run validated no model to refit")
            lrs = [
                (r["step"], r["lr"])
                for r in map(json.loads, (selection / METRICS).read_text().splitlines())
                if "lr" in r
            ]
            plan = {"best": summary["best"], "lrs": lrs or [(summary["best"]["step"], cfg.train.lr)]}
            if distributed.is_main():
                (selection / SELECTED).write_text(json.dumps(plan))
            distributed.barrier()
        plan = json.loads((selection / SELECTED).read_text())
        log.info(
            "refit, phase 2 of 2: the whole training period, as long as the best model of phase 1 trained"
        )
        setup = self.prepare(cfg, out_dir, tokenizer, refit=plan)
        summary = Trainer(
            replace(cfg.train, max_steps=setup.bundle.meta["refit"]["steps"], max_epochs=0, max_minutes=0),
            setup,
            out_dir,
            progress_bar,
            device,
        ).run(resume and (out_dir / "last").is_dir())
        return dict(summary, score_key=setup.score_key)

    def prepare(
        self,
        cfg: ForecastConfig,
        out_dir: Path,
        tokenizer: tasks.TokenizerChoice,
        refit: Optional[dict] = None,
    ) -> tasks.TrainingSetup:
        """The training set-up; with `refit` (phase 1's best record and learning rates), the whole training period."""
        d = cfg.data
        series = read_series(d, d.data)
        if series.rows <= d.lags:
            raise NlpRnnError(
                f"{series.name}: {series.rows} rows, but a window needs {d.lags} earlier rows and a row to predict"
            )
        if series.train is None:
            raise NlpRnnError(
                "no split rule: give --split-column COLUMN, or --date-column COLUMN and --test-from DATE"
            )
        check_periods(series)
        stats = statistics(series, list(dict.fromkeys([d.target, *d.inputs])))
        known = category_values(series, d.categorical)
        win = make_windows(series, d.inputs, d.target, d.lags, stats, known)
        period = series.train[d.lags :]  # (N-L,)
        train_idx = period.nonzero().squeeze(1)
        if train_idx.numel() < 10:
            raise NlpRnnError(
                f"{series.name}: only {train_idx.numel()} training rows with {d.lags} earlier rows; need at least 10"
            )
        cut = int(train_idx.numel() * (1 - d.valid_fraction))
        fit, valid = train_idx[:cut], train_idx[cut:]
        if fit.numel() < 1 or valid.numel() < 2:
            raise NlpRnnError(
                f"{series.name}: data.valid_fraction {d.valid_fraction} leaves {fit.numel()} training and "
                f"{valid.numel()} validation rows; need at least 1 and 2"
            )
        schedule = None
        if refit is not None:
            schedule = RefitSchedule(
                refit, math.ceil(fit.numel() / d.batch_size), math.ceil(train_idx.numel() / d.batch_size)
            )
            fit, valid = train_idx, train_idx[:0]
        meta = {
            "target": d.target,
            "features": list(d.inputs),
            "categorical": list(d.categorical),
            "categories": known,
            "lags": d.lags,
            "stats": stats,
            "split": {"column": d.split_column, "date_column": d.date_column, "test_from": d.test_from},
            "data": {
                "train": series.name,
                "training_rows": int(fit.numel()),
                "validation_rows": int(valid.numel()),
                "test_rows": int((~period).sum()),
            },
        }
        if schedule is not None:
            meta["refit"] = {"selection": refit["best"], "steps": schedule.steps}
            log.info(
                "refit: %d steps on %d rows (phase 1's best: step %d of %d-row epochs, val_mse %.4g)",
                schedule.steps,
                fit.numel(),
                refit["best"]["step"],
                cut,
                refit["best"]["val_mse"],
            )
        bundle = tasks.new_bundle(self, cfg, None, meta, cfg.train.seed)
        model: Forecaster = bundle.model
        if cfg.model.linear_skip and cfg.model.start_linear:
            design = torch.cat(
                [win.onehot[fit], win.windows[fit].flatten(1), torch.ones(fit.numel(), 1)], dim=1
            ).double()
            coefs = fit_linear(design, win.target[fit].double()).float()
            categories = win.onehot.size(1)
            model.start_from_linear(coefs[categories:-1], coefs[:categories], float(coefs[-1]))
        seed, size = cfg.train.seed, d.batch_size

        class Batcher:
            def epoch(self, epoch: int) -> list[list[int]]:
                order = fit.tolist()
                random.Random(seed * 100_003 + epoch).shuffle(order)
                return [order[i : i + size] for i in range(0, len(order), size)]

            def shard(self, index: list[int], rank: int, world: int) -> list[int]:
                return split_by_weight(index, [1] * len(index), rank, world)

        def collate(index: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            rows = torch.tensor(index, device="cpu")
            return win.windows[rows], win.onehot[rows], win.target[rows]

        def loss_fn(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], step: int):
            windows, onehot, target = batch
            predicted = model(windows, onehot)
            return ((predicted - target) ** 2).sum(), target.numel()

        def validate() -> dict:
            rows, name = (valid, "val") if schedule is None else (fit, "train")  # a refit has no unseen rows
            predicted = model(*devices.move((win.windows[rows], win.onehot[rows]), devices.of(model))).cpu()
            y = win.target[rows]
            return {f"{name}_mse": float(((predicted - y) ** 2).mean()), f"{name}_r2": r2(y, predicted)}

        return tasks.TrainingSetup(
            bundle=bundle,
            batcher=Batcher(),
            collate=collate,
            loss_fn=loss_fn,
            validate=validate,
            score_key="val_mse" if schedule is None else "train_mse",
            higher_is_better=False,
            select=schedule is None,
            lr_at=schedule and schedule.lr_at,
        )

    def wrap(self, bundle: Bundle) -> Predictor:
        return Predictor(bundle)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        predictor = Predictor(bundle)
        d, lags = predictor.cfg.data, predictor.cfg.data.lags
        sets = [predictor.read(str(p), split=True) for p in request.data]
        if request.dataset:
            sets.append(predictor.read(dataset=request.dataset, split=True))
        if not sets:
            raise NlpRnnError(
                "no test set: give --data FILE or --dataset NAME (the whole series; the bundle's split rule "
                "picks the test period)"
            )
        results = []
        for series in sets:
            if series.train is None:
                raise NlpRnnError(f"{series.name}: the bundle has no split rule to find the test period")
            check_periods(series)
            started = time.perf_counter()
            predicted, _ = predictor.predict(series)
            seconds = time.perf_counter() - started
            period = series.train[lags:]
            test = (~period).nonzero().squeeze(1)
            if test.numel() == 0:
                raise NlpRnnError(f"{series.name}: no test-period rows with {lags} earlier rows")
            y = series.numbers[d.target][lags:][test]
            model_pred = predicted[lags:][test]
            fit = period.nonzero().squeeze(1)
            rows = {"nlp-rnn " + predictor.cfg.model.cell: scores(y, model_pred)}
            for name, pred in baselines(
                series, d.inputs, d.target, lags, predictor.meta["categories"], fit, test
            ).items():
                rows[name] = scores(y, pred)
            results.append(
                {"name": series.name, "rows": int(test.numel()), "models": rows, "seconds": round(seconds, 3)}
            )
            if request.plot is not None:
                plot_forecast(series, test + lags, y, model_pred, d.target, request.plot)
        return {
            "task": self.name,
            "model": model_info(bundle),
            "target": d.target,
            "lags": lags,
            "sets": results,
        }

    def report(self, result: dict) -> list[str]:
        lines = []
        for s in result["sets"]:
            lines.append(
                f"{s['name']}: {s['rows']} test rows, target {result['target']}, {result['lags']} lags"
            )
            lines += table(
                ["model", "R²", "MSE", "MAE"],
                [
                    [name, f"{m['r2']:.4f}", f"{m['mse']:.5f}", f"{m['mae']:.5f}"]
                    for name, m in s["models"].items()
                ],
            )
        return lines

    def describe(self, bundle: Bundle) -> dict:
        m = bundle.meta
        return {
            "target": m["target"],
            "features": m["features"],
            "lags": m["lags"],
            "categorical": [f"{c} ({len(v)} values)" for c, v in m["categories"].items()] or None,
        }


def plot_forecast(
    series: Series, rows: torch.Tensor, actual: torch.Tensor, predicted: torch.Tensor, target: str, path: Path
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NlpRnnError("--plot needs matplotlib: pip install 'nlp-rnn[plot]'") from None
    fig, ax = plt.subplots(figsize=(10, 4))
    x = rows.tolist()
    ax.plot(x, actual.tolist(), linewidth=0.8, label="actual", color="#444444")
    ax.plot(x, predicted.tolist(), linewidth=0.8, label="forecast", color="#d62728", alpha=0.85)
    if series.dates:
        ticks = x[:: max(1, len(x) // 8)]
        ax.set_xticks(ticks, [series.dates[i] for i in ticks], rotation=20)
    ax.set_ylabel(target)
    ax.set_title(f"{Path(series.name).name}: test period, R² {r2(actual, predicted):.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


TASK = tasks.register(ForecastTask())
