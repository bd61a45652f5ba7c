"""The adding problem and vanishing gradients, made visible (`nlp-rnn demo adding`).

B batch, T sequence length, H hidden. A sequence holds T (value, marker) pairs, values uniform on
(0, 1), one marker in each half; the target is the sum of the two marked values, so always
predicting 1 gives MSE 1/6 (the variance of a sum of two uniforms). Every cell gets the same size,
learning-rate grid, step budget and seeds. `gradient_norms` unrolls a trained (or fresh) network
step by step with the library's own cells and keeps ∂L/∂h_t for every t: a fused `nn.RNN` does not
expose the gradient of its intermediate states.
"""

import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import typer
from torch import nn

from nlp_rnn.config import CELLS
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.cells import cell_update
from nlp_rnn.nn.encoder import rnn_module

BASELINE_MSE = 1 / 6


def adding_batch(size: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 2) inputs (value, marker) and (B,) targets."""
    values = torch.rand(size, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (size,), generator=generator)
    second = torch.randint(half, length, (size,), generator=generator)
    markers = torch.zeros(size, length)
    rows = torch.arange(size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], dim=2), (values * markers).sum(1)


class AddingModel(nn.Module):
    """One recurrent layer read many-to-one into a linear output."""

    def __init__(self, cell: str, hidden: int) -> None:
        super().__init__()
        self.cell = cell
        self.rnn = rnn_module(cell, 2, hidden, 1, 0.0, bidirectional=False)
        self.output = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, H)
        return self.output(out[:, -1]).squeeze(1)  # (B,)


def train_adding(
    cell: str, length: int, lr: float, steps: int, seed: int, hidden: int = 32, batch: int = 64
) -> tuple[AddingModel, float]:
    """Trains from scratch; returns the model and its MSE on 1,000 fresh sequences."""
    torch.manual_seed(seed)
    model = AddingModel(cell, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = adding_batch(batch, length, data)
        loss = ((model(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model, test_mse(model, length, seed + 10_000)


@torch.no_grad()
def test_mse(model: AddingModel, length: int, seed: int, size: int = 1000) -> float:
    x, y = adding_batch(size, length, torch.Generator().manual_seed(seed))
    return float(((model(x) - y) ** 2).mean())


def gradient_norms(
    rnn: nn.RNNBase,
    cell: str,
    x: torch.Tensor,
    loss_of_last: Callable[[torch.Tensor], torch.Tensor],
    h0: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """‖∂L/∂h_t‖ for t = 1 .. T (T,), unrolling the first layer of `rnn` one step at a time.

    x (B, T, I); L = loss_of_last(h_T). The norm is over the whole (B, H) gradient of h_t.
    """
    batch, hidden = x.size(0), rnn.hidden_size
    w_ih, w_hh, b_ih = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0
    b_hh = getattr(rnn, "bias_hh_l0", None)
    h = x.new_zeros(batch, hidden) if h0 is None else h0
    c = x.new_zeros(batch, hidden) if cell == "lstm" else None
    states = []
    for x_t in x.unbind(1):
        h, c = cell_update(
            cell, nn.functional.linear(x_t, w_ih, b_ih), nn.functional.linear(h, w_hh, b_hh), h, c
        )
        h.retain_grad()
        states.append(h)
    loss_of_last(states[-1]).backward()
    return torch.stack([s.grad.norm() for s in states])


@dataclass
class AddingResult:
    cell: str
    length: int
    lr: float
    mses: list[float]  # one per seed

    @property
    def mean(self) -> float:
        return statistics.mean(self.mses)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.mses) if len(self.mses) > 1 else 0.0

    @property
    def solved(self) -> int:
        """Seeds that beat the constant predictor by far (MSE < 0.05, a third of 1/6)."""
        return sum(m < 0.05 for m in self.mses)


def best_per_setting(results: Sequence[AddingResult]) -> list[AddingResult]:
    """For each (cell, length), the learning rate of the lowest mean MSE over seeds."""
    best: dict[tuple[str, int], AddingResult] = {}
    for r in results:
        key = (r.cell, r.length)
        if key not in best or r.mean < best[key].mean:
            best[key] = r
    return list(best.values())


def plot_gradients(norms: dict[str, tuple[torch.Tensor, torch.Tensor]], length: int, path) -> None:
    """One panel per cell: ‖∂L/∂h_t‖ against t, at initialisation and after training (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.4), sharey=True)
    axes = [axes] if len(norms) == 1 else axes
    for ax, (cell, (before, after)) in zip(axes, norms.items()):
        t = range(1, length + 1)
        ax.semilogy(t, before.clamp(min=1e-30).tolist(), label="at initialisation")
        ax.semilogy(t, after.clamp(min=1e-30).tolist(), label="after training")
        ax.set_title(cell)
        ax.set_xlabel("time step t")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("‖∂L/∂h_t‖")
    axes[0].legend()
    fig.suptitle(f"Adding problem, T = {length}: how much of the loss's gradient reaches step t")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mse_loss_of_last(model: AddingModel, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda h_last: ((model.output(h_last).squeeze(1) - y) ** 2).mean()


def describe_lengths(results: Sequence[AddingResult]) -> list[str]:
    """Plain-language lines: which cells solve which lengths."""
    lines = []
    for r in sorted(best_per_setting(results), key=lambda r: (r.cell, r.length)):
        verdict = "solved" if r.solved == len(r.mses) else ("partly solved" if r.solved else "not solved")
        lines.append(
            f"{r.cell:<9} T={r.length:<4} lr={r.lr:g}: MSE {r.mean:.4f} ± {r.sd:.4f} "
            f"({r.solved}/{len(r.mses)} seeds below 0.05; constant predictor {BASELINE_MSE:.4f}) — {verdict}"
        )
    return lines


# ----------------------------------------------------------------------------- the experiment and its command


def run_grid(
    cells: Sequence[str], lengths: Sequence[int], lrs: Sequence[float], seeds: int, steps: int, hidden: int
) -> tuple[list[AddingResult], dict]:
    """Every cell x length x learning rate x seed; the results and the trained models by setting."""
    from tqdm import tqdm

    results, trained = [], {}
    bar = tqdm(total=len(cells) * len(lengths) * len(lrs) * seeds, unit="run", file=sys.stderr)
    for name in cells:
        for t in lengths:
            for rate in lrs:
                runs = []
                for seed in range(1, seeds + 1):
                    runs.append(train_adding(name, t, rate, steps, seed, hidden))
                    bar.update(1)
                results.append(AddingResult(name, t, rate, [mse for _, mse in runs]))
                trained[(name, t, rate)] = [
                    (model, seed) for (model, _), seed in zip(runs, range(1, seeds + 1))
                ]
    bar.close()
    return results, trained


def plot_best_gradients(
    results: list[AddingResult], trained: dict, cells: Sequence[str], length: int, hidden: int, path: Path
) -> None:
    """||dL/dh_t|| at initialisation and after training, for each cell's best model at `length`, drawn to `path`."""
    x, y = adding_batch(64, length, torch.Generator().manual_seed(12345))
    norms = {}
    chosen = {(r.cell, r.length): r for r in best_per_setting(results)}
    for name in cells:
        best = chosen[(name, length)]  # the learning rate of the best mean, its best seed
        model, seed = min(zip(trained[(name, length, best.lr)], best.mses), key=lambda pair: pair[1])[0]
        torch.manual_seed(seed)
        fresh = AddingModel(name, hidden).double()  # float64: tiny gradients stay visible
        model = model.double()
        norms[name] = (
            gradient_norms(fresh.rnn, name, x.double(), mse_loss_of_last(fresh, y.double())),
            gradient_norms(model.rnn, name, x.double(), mse_loss_of_last(model, y.double())),
        )
    plot_gradients(norms, length, path)


def write_report(results: list[AddingResult], steps: int, hidden: int, seeds: int, path: Path) -> None:
    rows = [
        {
            "cell": r.cell,
            "length": r.length,
            "lr": r.lr,
            "mse": r.mses,
            "mean": r.mean,
            "sd": r.sd,
            "solved": r.solved,
        }
        for r in results
    ]
    path.write_text(
        json.dumps({"steps": steps, "hidden": hidden, "seeds": seeds, "runs": rows}, indent=2) + "\n"
    )


def command(
    cell: list[str] = typer.Option(
        ["rnn_tanh", "gru", "lstm"], "--cell", help="Cells to compare (repeat the option)."
    ),
    length: list[int] = typer.Option(
        [50, 100, 200], "--length", help="Sequence lengths T (repeat the option)."
    ),
    lr: list[float] = typer.Option(
        [0.001, 0.003, 0.01], "--lr", help="Learning-rate grid, the same for every cell."
    ),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per setting."),
    steps: int = typer.Option(1500, "--steps", help="Training steps per run (batches of 64)."),
    hidden: int = typer.Option(32, "--hidden", help="Hidden units, the same for every cell."),
    gradients: Optional[Path] = typer.Option(
        None,
        "--gradients",
        help="PNG of ||dL/dh_t|| against t, at initialisation and after training, for the longest T.",
    ),
    report: Optional[Path] = typer.Option(None, "--report", help="Every run's MSE as JSON."),
) -> None:
    """The adding problem: which cells learn a sum of two marked values as T grows (MSE; a constant gives 1/6)."""
    for name in cell:
        if name not in CELLS:
            raise NlpRnnError(f"--cell must be one of {', '.join(CELLS)}, got {name!r}")
    for name, values in (("--length", length), ("--lr", lr)):
        if any(v <= 0 for v in values):
            raise NlpRnnError(f"{name} values must be positive")
    if min(length) < 2 or seeds < 1 or steps < 1 or hidden < 1:
        raise NlpRnnError("--length must be at least 2; --seeds, --steps and --hidden at least 1")
    if gradients is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise NlpRnnError("--gradients needs matplotlib: pip install 'nlp-rnn[plot]'") from None
    results, trained = run_grid(cell, length, lr, seeds, steps, hidden)
    for line in describe_lengths(results):
        typer.echo(line)
    if gradients is not None:
        plot_best_gradients(results, trained, cell, max(length), hidden, gradients)
        typer.echo(f"gradients: {gradients}")
    if report is not None:
        write_report(results, steps, hidden, seeds, report)
        typer.echo(f"report: {report}")
