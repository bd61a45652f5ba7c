"""A table in, forecasts out: `Predictor` reads a series with a bundle's columns and forecasts every row."""

from typing import Optional

import torch

from nlp_rnn import devices
from nlp_rnn.bundle import Bundle
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks.forecasting.config import NAME, NEXT, ForecastConfig, ForecastDataConfig
from nlp_rnn.tasks.forecasting.data import Series, make_windows, read_series


class Predictor:
    """Forecasts for every row of a table (NaN for the first L rows) and for the step after the last row."""

    def __init__(self, bundle: Bundle) -> None:
        if bundle.task != NAME:
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
