"""The forecaster's commands: `nlp-rnn train forecaster` options and `nlp-rnn forecast`."""

import csv
import logging
from pathlib import Path
from typing import Optional

import typer

from nlp_rnn import options, textio
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.forecasting.interface import Predictor

log = logging.getLogger(__name__)


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
