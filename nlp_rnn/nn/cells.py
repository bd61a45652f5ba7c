"""One step of a recurrent cell from its precomputed input and hidden gates, as the loops over steps use it
(the decoder, the encoder's step-by-step training in bf16, the int8 layers, the adding-problem demo).

In training the GRU's step is one autograd node (`_GRUStep`) with its backward written out: the same
maths as the composed operators, in about half the element-wise passes, and without the zero-filled
copies that slicing's backward makes for each of the gates' three parts (docs/results.md).
"""

from typing import Optional

import torch

from nlp_rnn.nn import fast


class _GRUStep(torch.autograd.Function):
    """h' = n + z (h - n), n = tanh(gi_n + r gh_n), [r, z] = sigmoid(gi_rz + gh_rz): torch's GRU cell, over
    gates (..., 3H) and states (..., H) of any leading shape (e.g. (D, B, .) for D directions at once)."""

    @staticmethod
    def forward(ctx, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        size = h.size(-1)
        rz = torch.sigmoid(gi[..., : 2 * size] + gh[..., : 2 * size])  # (..., 2H)
        gh_n = gh[..., 2 * size :]
        n = torch.tanh(torch.addcmul(gi[..., 2 * size :], rz[..., :size], gh_n))  # (..., H)
        h_n = h - n
        ctx.save_for_backward(rz, n, gh_n, h_n)
        return torch.addcmul(n, rz[..., size:], h_n)

    @staticmethod
    def backward(ctx, dh_new: torch.Tensor):
        rz, n, gh_n, h_n = ctx.saved_tensors
        size = n.size(-1)
        dh = dh_new * rz[..., size:]  # through z (h - n)
        d_gi = dh_new.new_empty(*dh_new.shape[:-1], 3 * size)  # (..., G): every column written below
        d_pre_n = d_gi[..., 2 * size :]
        torch.mul(dh_new - dh, 1 - n * n, out=d_pre_n)  # through n = tanh(.)
        d_rz = d_gi[..., : 2 * size]
        torch.mul(d_pre_n, gh_n, out=d_rz[..., :size])  # r's, before its sigmoid
        torch.mul(dh_new, h_n, out=d_rz[..., size:])  # z's, before its sigmoid
        d_rz.mul_(rz * (1 - rz))  # through the sigmoid
        d_gh = torch.cat([d_rz, d_pre_n * rz[..., :size]], dim=-1)
        return d_gi, d_gh, dh


def cell_update(cell: str, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, c: Optional[torch.Tensor]):
    """One step of a cell from input gates gi (B, G) and hidden gates gh (B, G) (or any leading shape); same
    maths as torch's cells."""
    if cell == "gru":
        if torch.is_grad_enabled() and not fast.exporting():
            return _GRUStep.apply(gi, gh, h), None
        # The same formula as `_GRUStep.forward`, written for decoding: `fast.tanh` (the sigmoid form) and no
        # addcmul; one shared helper could round decoding differently (its BLEU figures were measured with this one).
        # In place on its own new tensors, which gives the same numbers (a product or sum of two floats does
        # not depend on their order) with fewer tensors made: a decoding step's calls, not its arithmetic.
        size = h.size(-1)
        rz = torch.add(gi[..., : 2 * size], gh[..., : 2 * size]).sigmoid_()  # (B, 2H)
        r, z = rz[..., :size], rz[..., size:]
        n = fast.tanh_(torch.mul(r, gh[..., 2 * size :]).add_(gi[..., 2 * size :]))  # (B, H)
        return torch.sub(h, n).mul_(z).add_(n), None  # n + z (h - n)
    if cell == "lstm":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * fast.tanh(g)
        return torch.sigmoid(o) * fast.tanh(c), c
    pre = gi + gh
    return (fast.tanh(pre) if cell == "rnn_tanh" else torch.relu(pre)), None


def cell_update_(cell: str, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, c: Optional[torch.Tensor]):
    """`cell_update` for inference, overwriting gi and gh (gate tensors its caller made for this one step and reads
    no more): about half the element-wise calls, new tensors only for the new state. It uses torch's tanh, not
    `fast.tanh`'s sigmoid form: at (B, H) tensors of up to about 32k elements torch's is the faster on a Zen 1,
    and one form for every batch keeps a row's result independent of the batch it is in. For loops whose step
    costs calls, not arithmetic (the int8 layers: one sentence's encoder in a server)."""
    size = h.size(-1)
    if cell == "gru":
        rz = gi[..., : 2 * size].add_(gh[..., : 2 * size]).sigmoid_()  # (B, 2H)
        n = gi[..., 2 * size :].addcmul_(rz[..., :size], gh[..., 2 * size :]).tanh_()  # (B, H)
        return torch.sub(h, n).mul_(rz[..., size:]).add_(n), None  # n + z (h - n)
    if cell == "lstm":
        gates = gi.add_(gh)
        gates[..., : 2 * size].sigmoid_()  # i, f (torch's order: i, f, g, o)
        gates[..., 3 * size :].sigmoid_()  # o
        gates[..., 2 * size : 3 * size].tanh_()  # g (before `chunk`, whose views grad mode keeps from writes)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.mul(f, c).addcmul_(i, g)
        return torch.tanh(c).mul_(o), c
    pre = torch.add(gi, gh)  # a new tensor: the state, which the next step's product reads contiguous
    return (pre.tanh_() if cell == "rnn_tanh" else pre.relu_()), None
