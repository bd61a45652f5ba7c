"""Many-to-one forecaster: a window of L past rows of numeric features -> the next value of the target.

B batch, L lags (window length), F features, H hidden, C categories (one-hot of the predicted row's
categorical values). The recurrent stack reads the window; its last state, the one-hot categories
and (with `linear_skip`) the flattened window itself feed one linear head, so the model contains
the linear AR(L) model with categorical terms as a special case and learns what the RNN adds.
"""

from dataclasses import dataclass

import torch
from torch import nn

from nlp_rnn.config import CELLS, _choice, _positive
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.dropout import Dropout
from nlp_rnn.nn.encoder import rnn_module


@dataclass(frozen=True)
class ForecastModelConfig:
    cell: str = "gru"
    hidden_size: int = 16
    num_layers: int = 1
    dropout: float = 0.0  # on the recurrent state before the head (and between layers)
    linear_skip: bool = True  # the head also sees the flattened window (an AR(L) term)
    start_linear: bool = (
        True  # with linear_skip: start the head at the least-squares AR fit of the training rows
    )

    def __post_init__(self) -> None:
        _choice("model.cell", self.cell, CELLS)
        _positive("model.hidden_size", self.hidden_size)
        _positive("model.num_layers", self.num_layers)
        if not 0 <= self.dropout < 1:
            raise NlpRnnError(f"config: model.dropout must be in [0, 1), got {self.dropout}")


class Forecaster(nn.Module):
    def __init__(self, cfg: ForecastModelConfig, features: int, lags: int, categories: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.rnn = rnn_module(
            cfg.cell, features, cfg.hidden_size, cfg.num_layers, cfg.dropout, bidirectional=False
        )
        self.dropout = Dropout(cfg.dropout)
        head_in = cfg.hidden_size + categories + (features * lags if cfg.linear_skip else 0)
        self.head = nn.Linear(head_in, 1)

    @torch.no_grad()
    def start_from_linear(
        self, window_coefs: torch.Tensor, category_coefs: torch.Tensor, intercept: float
    ) -> None:
        """Sets the head to a fitted linear model (window (L*F,), categories (C,), intercept), the recurrent
        part's share to zero: training starts from the AR model and learns what the recurrent state adds."""
        hidden, categories = self.cfg.hidden_size, category_coefs.numel()
        self.head.weight.zero_()
        self.head.weight[0, hidden : hidden + categories] = category_coefs
        self.head.weight[0, hidden + categories :] = window_coefs
        self.head.bias.fill_(intercept)

    def forward(self, window: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """window (B, L, F) standardised, categories (B, C) one-hot -> standardised forecasts (B,)."""
        out, _ = self.rnn(window)  # (B, L, H)
        parts = [self.dropout(out[:, -1]), categories]
        if self.cfg.linear_skip:
            parts.append(window.flatten(1))  # (B, L*F)
        return self.head(torch.cat(parts, dim=1)).squeeze(1)  # (B,)
