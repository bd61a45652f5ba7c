"""The forecasting task (registered on import): config, series and windows, baselines, `Predictor`,
its commands, the task."""

from nlp_rnn.tasks.forecasting.baselines import baselines, fit_linear, lagged_design, r2, scores
from nlp_rnn.tasks.forecasting.cli import forecast, train_options
from nlp_rnn.tasks.forecasting.config import NAME, NEXT, ForecastConfig, ForecastDataConfig
from nlp_rnn.tasks.forecasting.data import (
    Series,
    Windows,
    category_values,
    check_periods,
    make_windows,
    one_hot,
    read_series,
    statistics,
)
from nlp_rnn.tasks.forecasting.interface import Predictor
from nlp_rnn.tasks.forecasting.task import TASK, ForecastTask, RefitSchedule, plot_forecast

__all__ = [
    "baselines",
    "fit_linear",
    "lagged_design",
    "r2",
    "scores",
    "ForecastConfig",
    "ForecastDataConfig",
    "ForecastTask",
    "NAME",
    "NEXT",
    "Predictor",
    "RefitSchedule",
    "Series",
    "TASK",
    "Windows",
    "category_values",
    "check_periods",
    "forecast",
    "make_windows",
    "one_hot",
    "plot_forecast",
    "read_series",
    "statistics",
    "train_options",
]
