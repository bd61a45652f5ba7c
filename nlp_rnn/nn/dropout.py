"""Dropout that is fast on the CPU.

torch's CPU dropout draws its mask with `bernoulli_`, about 2.5x slower than drawing uniforms and
comparing (forward and backward of a (250, 21, 512) tensor: 33 ms against 13 ms on a 2-core EPYC),
and it is called at every decoder step. Same distribution: each element kept with probability
1 - p and scaled by 1 / (1 - p). Small tensors (a few ops cost more than the mask) and other
devices use torch's own kernel.
"""

import torch
import torch.nn.functional as F
from torch import nn

SMALL = 1 << 16  # below this many elements the mask's cost is per-call overhead: torch's single kernel wins


def dropped(x: torch.Tensor, p: float) -> torch.Tensor:
    """x with each element kept with probability 1 - p and scaled by 1 / (1 - p) (training's dropout)."""
    if x.device.type != "cpu" or x.numel() < SMALL:
        return F.dropout(x, p, True)
    mask = torch.rand(x.shape, device=x.device).ge_(p).div_(1 - p)  # (..) 0 or 1/(1-p)
    return x * mask.to(x.dtype)


class Dropout(nn.Module):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return dropped(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
