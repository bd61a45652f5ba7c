"""Cross-entropy over a large vocabulary with a hand-written backward.

torch's log_softmax + nll_loss makes about eight passes over the (N, V) logits in training (casts,
log-softmax, a zero-filled one-hot gradient, the softmax backward). This makes three: logsumexp
forward, then one fused `softmax - target` gradient in backward. Label smoothing spreads
`smoothing` of the target mass uniformly over the vocabulary, as in torch.
"""

import torch


def _wide(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits are reduced in fp32; fp32 and fp64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
        lse = torch.logsumexp(_wide(logits), dim=-1)  # (N,)
        picked = _wide(logits.gather(1, target.unsqueeze(1)).squeeze(1))  # (N,)
        loss = lse - picked
        if smoothing > 0:
            loss = (1 - smoothing) * loss + smoothing * (lse - _wide(logits).mean(dim=-1))
        ctx.save_for_backward(logits, target, lse)
        ctx.smoothing = smoothing
        return loss.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, target, lse = ctx.saved_tensors
        smoothing = ctx.smoothing
        probs = (logits - lse.unsqueeze(1)).exp_()  # (N, V) softmax, a new wide tensor (type promotion)
        rows = torch.arange(logits.size(0), device=logits.device)
        probs[rows, target] -= 1.0 - smoothing
        if smoothing > 0:
            probs.sub_(smoothing / logits.size(1))
        return probs.mul_(grad).to(logits.dtype), None, None


def cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of logits (N, V) against target ids (N,); equals torch's with reduction='sum'."""
    return _CrossEntropy.apply(logits, target, smoothing)
