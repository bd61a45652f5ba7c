"""The fused cross-entropy equals torch's, value and gradient, with and without label smoothing."""

import pytest
import torch
import torch.nn.functional as F

from nlp_rnn.loss import cross_entropy_sum


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_matches_torch_cross_entropy(smoothing: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(600, 101, dtype=torch.float64) * 3
    target = torch.randint(0, 101, (600,))
    mine = logits.clone().requires_grad_()
    ref = logits.clone().requires_grad_()
    a = cross_entropy_sum(mine, target, smoothing)
    b = F.cross_entropy(ref, target, reduction="sum", label_smoothing=smoothing)
    (a * 0.7).backward()
    (b * 0.7).backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(mine.grad, ref.grad)
