"""Weight averaging, written once: the mean of every iterate since a start (averaged SGD, as in
AWD-LSTM's NT-ASGD; stochastic weight averaging) or an exponential moving average. The Trainer
updates it after each step and validates and saves `best/` with the averaged weights. Saved models
(kept checkpoints, a model soup) are averaged whole, buffers included, by `mean_state`."""

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

KINDS = ("none", "mean", "ema")


def non_monotone_trigger(scores: list[float], patience: int) -> bool:
    """NT-ASGD's trigger (Merity et al. 2018): the latest validation score (higher is better) is worse
    than the best of those before the last `patience` validations."""
    return len(scores) > patience and scores[-1] < max(scores[:-patience])


def mean_state(states: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of state dicts with the same names and shapes: floating-point tensors (weights and buffers
    such as a batch norm's running statistics) summed in float64 and cast back to the first's dtype;
    integer tensors (a batch norm's step count) are the first's."""
    first: dict[str, torch.Tensor] = {}
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for state in states:
        if not first:
            first = state
            sums = {k: v.detach().double().clone() for k, v in state.items() if v.is_floating_point()}
        else:
            for name, total in sums.items():
                total += state[name].detach().double()
        count += 1
    if not count:
        raise ValueError("mean_state: no states to average")
    return {k: (sums[k] / count).to(v.dtype) if k in sums else v for k, v in first.items()}


class WeightAverage:
    """A running average of `model`'s parameters (float32, on the parameters' devices)."""

    def __init__(self, model: nn.Module, kind: str = "mean", decay: float = 0.999) -> None:
        if kind not in ("mean", "ema"):
            raise ValueError(f"averaging kind must be mean or ema, got {kind!r}")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.kind, self.decay = kind, decay
        self.average: list[torch.Tensor] = []
        self.count = 0

    @property
    def started(self) -> bool:
        return self.count > 0

    @torch.no_grad()
    def update(self) -> None:
        """Adds the current parameters: the mean of all iterates so far, or the exponential average."""
        if not self.average:
            self.average = [p.detach().float().clone() for p in self.params]
        elif self.kind == "mean":
            for avg, p in zip(self.average, self.params):
                avg.add_(p.detach().float() - avg, alpha=1 / (self.count + 1))
        else:
            for avg, p in zip(self.average, self.params):
                avg.lerp_(p.detach().float(), 1 - self.decay)
        self.count += 1

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        if not self.started:
            yield
            return
        own = [p.detach().clone() for p in self.params]
        for p, avg in zip(self.params, self.average):
            p.copy_(avg)
        try:
            yield
        finally:
            for p, mine in zip(self.params, own):
                p.copy_(mine)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "count": self.count, "average": [a.cpu() for a in self.average]}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state.get("count", 0))
        self.average = [a.to(p.device) for a, p in zip(state.get("average", []), self.params)]
