"""Scores (R², MSE) and the linear baselines a forecaster is judged beside: yesterday, AR(L), AR(L) + categories."""

from collections.abc import Sequence
from typing import Optional

import torch

from nlp_rnn.tasks.forecasting.data import Series, one_hot


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
