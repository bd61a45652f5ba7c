"""The adding problem (demos/adding.py): gated cells learn long sums, exact gradient norms, the demo command."""

import json
import math
from pathlib import Path

import pytest
import torch

from nlp_rnn.cli import main
from nlp_rnn.demos import adding


@pytest.mark.slow
def test_lstm_learns_the_adding_problem_for_a_short_sequence() -> None:
    _, mse = adding.train_adding("lstm", length=10, lr=0.01, steps=400, seed=1, hidden=16)
    assert mse < 0.05 < adding.BASELINE_MSE


def test_gradient_norms_are_exact_for_a_scaled_identity_recurrence() -> None:
    """rnn_tanh with W_hh = a·I and zero inputs, biases and start: h stays 0, tanh' = 1, so with
    L = sum(h_T) the norms are a^(T-t) · sqrt(H)."""
    hidden, length, a = 6, 12, 0.8
    rnn = torch.nn.RNN(3, hidden, batch_first=True).double()
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(a * torch.eye(hidden, dtype=torch.double))
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    x = torch.zeros(1, length, 3, dtype=torch.double)
    norms = adding.gradient_norms(
        rnn, "rnn_tanh", x, lambda h: h.sum(), h0=torch.zeros(1, hidden, dtype=torch.double)
    )
    expected = torch.tensor(
        [a ** (length - t) * math.sqrt(hidden) for t in range(1, length + 1)], dtype=torch.double
    )
    torch.testing.assert_close(norms, expected)


def test_demo_adding_command_reports_every_cell_and_draws_the_gradients(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "demo",
                "adding",
                "--cell",
                "rnn_tanh",
                "--cell",
                "lstm",
                "--length",
                "6",
                "--lr",
                "0.01",
                "--seeds",
                "1",
                "--steps",
                "20",
                "--hidden",
                "8",
                "--gradients",
                str(tmp_path / "g.png"),
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rnn_tanh  T=6" in out and "lstm      T=6" in out and (tmp_path / "g.png").stat().st_size > 5000
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [(r["cell"], r["length"], len(r["mse"])) for r in runs] == [("rnn_tanh", 6, 1), ("lstm", 6, 1)]
    assert main(["demo", "adding", "--cell", "transformer"]) == 2
    assert "--cell must be one of" in capsys.readouterr().err
