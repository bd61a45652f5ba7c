"""Weight averaging, written once: the mean of every iterate since a start (averaged SGD, as in
AWD-LSTM's NT-ASGD; stochastic weight averaging) or an exponential moving average. The Trainer
updates it after each step and validates and saves `best/` with the averaged weights; checkpoint
averaging uses the same running mean over saved models."""

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

KINDS = ("none", "mean", "ema")


def non_monotone_trigger(scores: list[float], patience: int) -> bool:
    """NT-ASGD's trigger (Merity et al. 2018): the latest validation score (higher is better) is worse
    than the best of those before the last `patience` validations."""
    return len(scores) > patience and scores[-1] < max(scores[:-patience])


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
