"""The fused cross-entropy equals torch's, value and gradient, with and without label smoothing."""

import pytest
import torch
import torch.nn.functional as F

from nlp_rnn.nn.loss import cross_entropy_sum


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


@pytest.mark.parametrize("smoothing,bias", [(0.0, True), (0.1, False)])
def test_the_output_layer_fused_into_the_loss_equals_linear_then_cross_entropy(
    smoothing: float, bias: bool, monkeypatch
) -> None:
    from nlp_rnn.nn import loss as losses

    monkeypatch.setattr(losses, "FUSE_ABOVE", 0)  # the fused path even for this small problem
    torch.manual_seed(1)
    hidden, weight = torch.randn(700, 24, dtype=torch.float64), torch.randn(101, 24, dtype=torch.float64)
    b = torch.randn(101, dtype=torch.float64) if bias else None
    target = torch.randint(0, 101, (700,))
    mine = [t.clone().requires_grad_() for t in (hidden, weight) + ((b,) if bias else ())]
    ref = [t.clone().requires_grad_() for t in (hidden, weight) + ((b,) if bias else ())]
    a = losses.linear_cross_entropy_sum(
        mine[0], mine[1], mine[2] if bias else None, target, smoothing
    )  # 3 chunks of rows
    r = F.cross_entropy(F.linear(*ref), target, reduction="sum", label_smoothing=smoothing)
    (a * 0.7).backward()
    (r * 0.7).backward()
    torch.testing.assert_close(a, r)
    for x, y in zip(mine, ref):
        torch.testing.assert_close(x.grad, y.grad)
    with torch.no_grad():  # no gradient work without autograd
        torch.testing.assert_close(
            losses.linear_cross_entropy_sum(hidden, weight, b, target, smoothing), r.detach()
        )


# groups of 200 rows: the last one partial, or not; chunks of 100 rows: the last one padded (650, 530), or not
@pytest.mark.parametrize("rows", [700, 600, 650, 530])
def test_the_fused_loss_under_bf16_autocast_gathers_weight_gradients_by_group(rows: int, monkeypatch) -> None:
    """Under bf16 autocast the softmax gradients are gathered over groups of chunks before one weight-gradient
    product; loss and gradients stay those of linear-then-cross-entropy in fp32 to bf16's precision."""
    from nlp_rnn.nn import loss as losses

    monkeypatch.setattr(losses, "FUSE_ABOVE", 0)
    monkeypatch.setattr(losses, "LINEAR_CHUNK_ROWS", 100)
    monkeypatch.setattr(losses, "GROUP_ROWS", 200)
    torch.manual_seed(2)
    hidden, weight, b = torch.randn(rows, 32), torch.randn(301, 32) * 0.3, torch.randn(301) * 0.1
    target = torch.randint(0, 301, (rows,))
    mine = [t.clone().requires_grad_() for t in (hidden, weight, b)]
    ref = [t.clone().requires_grad_() for t in (hidden, weight, b)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = losses.linear_cross_entropy_sum(*mine, target, 0.1)
    r = F.cross_entropy(F.linear(*ref), target, reduction="sum", label_smoothing=0.1)
    a.backward()
    r.backward()
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, r, rtol=1e-2, atol=0)
    for x, y in zip(mine, ref):
        assert x.grad.dtype == torch.float32
        torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0.02 * float(y.grad.abs().max()))
