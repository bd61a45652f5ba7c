"""Cross-entropy over a large vocabulary with a hand-written, chunked backward.

torch's log_softmax + nll_loss makes about eight passes over the (N, V) logits in training (casts,
log-softmax, a zero-filled one-hot gradient, the softmax backward), each over a matrix far larger
than the cache. This works through row chunks that fit in cache: logsumexp forward, then one fused
`softmax - target` gradient per chunk in backward. Label smoothing spreads `smoothing` of the
target mass uniformly over the vocabulary, as torch does.
"""

import torch

CHUNK_ROWS = 256


def _wide(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits are reduced in fp32; fp32 and fp64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
        lse = torch.empty(logits.size(0), dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device)
        mean = torch.empty_like(lse) if smoothing > 0 else None
        for start in range(0, logits.size(0), CHUNK_ROWS):
            rows = _wide(logits[start : start + CHUNK_ROWS])  # (C, V)
            lse[start : start + CHUNK_ROWS] = torch.logsumexp(rows, dim=-1)
            if mean is not None:
                mean[start : start + CHUNK_ROWS] = rows.mean(dim=-1)
        loss = lse - _wide(logits.gather(1, target.unsqueeze(1)).squeeze(1))  # (N,)
        if mean is not None:
            loss = (1 - smoothing) * loss + smoothing * (lse - mean)
        ctx.save_for_backward(logits, target, lse)
        ctx.smoothing = smoothing
        return loss.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, target, lse = ctx.saved_tensors
        smoothing, vocab = ctx.smoothing, logits.size(1)
        out = torch.empty_like(logits)
        for start in range(0, logits.size(0), CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, logits.size(0))
            probs = (_wide(logits[start:stop]) - lse[start:stop].unsqueeze(1)).exp_()  # (C, V) softmax
            probs[torch.arange(stop - start, device=logits.device), target[start:stop]] -= 1.0 - smoothing
            if smoothing > 0:
                probs.sub_(smoothing / vocab)
            out[start:stop] = probs.mul_(grad)
        return out, None, None


def cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of logits (N, V) against target ids (N,); equals torch's with reduction='sum'."""
    return _CrossEntropy.apply(logits, target, smoothing)
