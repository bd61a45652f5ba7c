"""Cross-entropy over a large vocabulary with a hand-written, chunked backward, and the output layer fused into it.

torch's log_softmax + nll_loss makes about eight passes over the (N, V) logits in training (casts,
log-softmax, a zero-filled one-hot gradient, the softmax backward), each over a matrix far larger
than the cache. `cross_entropy_sum` works through row chunks that fit in cache: logsumexp forward,
then one fused `softmax - target` gradient per chunk in backward. `linear_cross_entropy_sum` goes
further and never makes the (N, V) logits at all: per chunk of rows it computes the logits, the
loss and, in training, the gradients of the hidden states and the output weights while the chunk
is still in cache (backward only scales them), so the largest tensors of a step are never written
to memory. Label smoothing spreads `smoothing` of the target mass uniformly over the vocabulary, as
torch does.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from nlp_rnn.nn.deferred import compute_dtype

CHUNK_ROWS = 256


def _wide(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits are reduced in fp32; fp32 and fp64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
        lse = torch.empty(
            logits.size(0), dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device
        )
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


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, smoothing: float, want_grad: bool, dtype: torch.dtype):
        rows, vocab = hidden.size(0), weight.size(0)
        acc = torch.promote_types(dtype, torch.float32)  # softmax and sums: fp32 (fp64 stays fp64)
        h, w = hidden.to(dtype), weight.to(dtype)
        # In a 16-bit type the softmax gradients of GROUP_ROWS rows are gathered and multiplied into the weight
        # gradient at once: one (V, H) product, cast and add per group instead of per chunk.
        low = want_grad and dtype != acc
        # There every chunk's products run on whole chunks, the last one padded with zero rows (whose softmax
        # gradients are zero): oneDNN compiles a kernel per product shape (~2-19 ms each here), and a last chunk
        # of any size made three new shapes at almost every step.
        padded = (
            -(-rows // LINEAR_CHUNK_ROWS) * LINEAR_CHUNK_ROWS if low and rows > LINEAR_CHUNK_ROWS else rows
        )
        if padded > rows:
            h = torch.cat([h, h.new_zeros(padded - rows, h.size(1))])
        b = None if bias is None else bias.to(dtype)
        loss = torch.empty(rows, dtype=acc, device=hidden.device)
        grad_h = torch.empty(hidden.shape, dtype=acc, device=hidden.device) if want_grad else None
        # 16-bit: the first group's product becomes the weight gradient (no zero-filled (V, H) matrix to add to)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=hidden.device) if want_grad and not low else None
        grad_b = (
            torch.zeros(vocab, dtype=acc, device=hidden.device) if want_grad and bias is not None else None
        )
        pending = (
            torch.empty(min(padded, GROUP_ROWS), vocab, dtype=dtype, device=hidden.device) if low else None
        )
        group = 0  # first row of the gathered group
        for start in range(0, rows, LINEAR_CHUNK_ROWS):
            stop = min(start + LINEAR_CHUNK_ROWS, rows)
            end = min(start + LINEAR_CHUNK_ROWS, padded)  # the chunk's rows with its padding
            logits = F.linear(h[start:end], w, b)[: stop - start].to(acc)  # (C, V), in cache
            gold = target[start:stop]
            lse = torch.logsumexp(logits, dim=-1)  # (C,)
            part = lse - logits.gather(1, gold.unsqueeze(1)).squeeze(1)
            if smoothing > 0:
                part = (1 - smoothing) * part + smoothing * (lse - logits.mean(dim=-1))
            loss[start:stop] = part
            if want_grad:
                probs = logits.sub_(lse.unsqueeze(1)).exp_()  # (C, V) softmax, in place
                probs[torch.arange(stop - start, device=probs.device), gold] -= 1.0 - smoothing
                if smoothing > 0:
                    probs.sub_(smoothing / vocab)
                if not low:
                    grad_h[start:stop] = probs @ w  # (C, H)
                    grad_w.addmm_(probs.t(), h[start:stop])  # (V, H), accumulated in place
                else:
                    g = pending[start - group : end - group]
                    g[: stop - start].copy_(probs)  # cast into the group's buffer
                    g[stop - start :].zero_()  # padding
                    grad_h[start:stop] = (g @ w)[: stop - start]  # (C, H)
                    if end - group == pending.size(0) or stop == rows:
                        product = (pending[: end - group].t() @ h[group:end]).to(acc)
                        grad_w = product if grad_w is None else grad_w.add_(product)
                        group = end
                if grad_b is not None:
                    grad_b += probs.sum(dim=0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss.sum()

    @staticmethod
    def backward(ctx, grad):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        dh, dw, db = ctx.dtypes
        scale = lambda g, dtype: None if g is None else (g * grad).to(dtype)  # noqa: E731
        return scale(grad_h, dh), scale(grad_w, dw), scale(grad_b, db), None, None, None, None


LINEAR_CHUNK_ROWS = 256
GROUP_ROWS = 8 * LINEAR_CHUNK_ROWS  # 16-bit softmax gradients gathered per weight-gradient product
FUSE_ABOVE = 1 << 22  # logits elements (16 MB in fp32): smaller ones fit in cache and are cheaper made whole


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    target: torch.Tensor,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Summed cross-entropy of `F.linear(hidden, weight, bias)` (N, V) against target ids (N,), without making
    the logits: equals `cross_entropy_sum(F.linear(hidden, weight, bias), target, smoothing)`.

    Under autocast the products run in its 16-bit type, the softmax and the sums in fp32.
    """
    if (
        hidden.size(0) * weight.size(0) <= FUSE_ABOVE
    ):  # small (a tiny vocabulary): fewer, larger operations win
        return cross_entropy_sum(F.linear(hidden, weight, bias), target, smoothing)
    want = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    dtype = compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, bias, target, smoothing, want, dtype)
