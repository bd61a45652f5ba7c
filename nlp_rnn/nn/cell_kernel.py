"""A language model's recurrent stack as cell updates on preallocated buffers, for fast generation.

Generating one token with `nn.LSTM` costs a fused-kernel call per token with its set-up (weight
checks, packing, a new output and state each time), an embedding lookup and the first layer's input
product. Here, once per batch:
- the first layer's input product is folded into a table, embedding × W_ih0ᵀ + biases (V, G), so a
  token's share of the first layer's gates is one row lookup;
- every other product writes into a buffer that is reused at every step (`addmm(..., out=)`), and
  the cell update runs in place on views of the gate buffer;
- rows never leave the batch (a finished row keeps stepping; its later tokens are dropped), so
  nothing is reallocated and the host checks whether all rows are done only every few steps.

The arithmetic is the same as torch's cells (`nn.LSTM`, `nn.GRU`, `nn.RNN` gate order and biases);
results agree with them to float rounding. B batch, L layers, H hidden, G gates (4H, 3H or H), V vocabulary.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def cell_of(rnn: nn.Module) -> Optional[str]:
    if isinstance(rnn, nn.LSTM):
        return "lstm" if rnn.proj_size == 0 else None
    if isinstance(rnn, nn.GRU):
        return "gru"
    if isinstance(rnn, nn.RNN):
        return "rnn_tanh" if rnn.nonlinearity == "tanh" else "rnn_relu"
    return None


class CellKernel:
    """Steps a stack of plain recurrent layers and a linear output layer on preallocated buffers."""

    def __init__(self, embed: nn.Embedding, rnn: nn.RNNBase, output: nn.Linear, int8: bool = False) -> None:
        """`int8`: every product but the first layer's input table through int8 kernels (`nn.int8`): a
        quarter of the bytes to read per token, which is what one sequence's step is bound by."""
        self.cell = cell_of(rnn)
        if self.cell is None or rnn.bidirectional or not rnn.batch_first:
            raise ValueError("CellKernel needs a unidirectional, batch-first LSTM, GRU or RNN")
        self.layers, self.hidden = rnn.num_layers, rnn.hidden_size
        w = lambda name: getattr(rnn, name).detach()  # noqa: E731
        self.w_ih = [w(f"weight_ih_l{k}") for k in range(self.layers)]
        self.w_hh = [w(f"weight_hh_l{k}") for k in range(self.layers)]
        zeros = self.w_hh[0].new_zeros(self.w_hh[0].size(0))
        self.b_ih = [w(f"bias_ih_l{k}") if rnn.bias else zeros for k in range(self.layers)]
        self.b_hh = [w(f"bias_hh_l{k}") if rnn.bias else zeros for k in range(self.layers)]
        # GRU keeps b_hn apart (it sits inside r * (W_hn h + b_hn)); the other cells add both biases.
        fold = [self.b_ih[k] + (0 if self.cell == "gru" else self.b_hh[k]) for k in range(self.layers)]
        self.in_bias = fold
        self.table = F.linear(embed.weight.detach(), self.w_ih[0], fold[0])  # (V, G)
        self.out_w = output.weight.detach()
        self.out_b = None if output.bias is None else output.bias.detach()
        self.int8 = None
        if int8:
            from nlp_rnn.nn.int8 import Int8Linear

            self.int8 = {
                "ih": [None] + [Int8Linear(self.w_ih[k], fold[k]) for k in range(1, self.layers)],
                "hh": [
                    Int8Linear(self.w_hh[k], self.b_hh[k] if self.cell == "gru" else None)
                    for k in range(self.layers)
                ],
                "out": Int8Linear(self.out_w, self.out_b),
            }

    def buffers(self, batch: int) -> None:
        size, dtype = self.hidden, self.table.dtype
        gates = GATES[self.cell] * size
        self.gi = [self.table.new_empty(batch, gates) for _ in range(self.layers)]
        self.gh = self.table.new_empty(batch, gates) if self.cell == "gru" else None
        self.tmp = self.table.new_empty(batch, size)
        self.logits = self.table.new_empty(batch, self.out_w.size(0), dtype=dtype)

    def step(self, prev: torch.Tensor, h: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        """prev (B,) tokens; h (L, B, H) and c (L, B, H, LSTM only) updated in place -> logits (B, V),
        a buffer that the next step overwrites. For inference: call it under torch.no_grad()."""
        size = self.hidden
        x = None
        for k in range(self.layers):
            gi = self.gi[k]
            if k == 0:
                torch.index_select(self.table, 0, prev, out=gi)
            elif self.int8 is not None:
                gi.copy_(self.int8["ih"][k](x))
            else:
                torch.addmm(self.in_bias[k], x, self.w_ih[k].t(), out=gi)
            hk = h[k]
            if self.cell == "lstm":
                self._add_hh(gi, hk, k)
                i, f, g, o = (gi.narrow(1, j * size, size) for j in range(4))
                i.sigmoid_()
                f.sigmoid_()
                g.tanh_()
                o.sigmoid_()
                ck = c[k]
                ck.mul_(f).addcmul_(i, g)
                torch.tanh(ck, out=self.tmp)
                torch.mul(o, self.tmp, out=hk)
            elif self.cell == "gru":
                gh = self.gh
                if self.int8 is not None:
                    gh.copy_(self.int8["hh"][k](hk))
                else:
                    torch.addmm(self.b_hh[k], hk, self.w_hh[k].t(), out=gh)
                rz = gi[:, : 2 * size].add_(gh[:, : 2 * size]).sigmoid_()
                r, z = rz[:, :size], rz[:, size:]
                n = gi[:, 2 * size :].addcmul_(r, gh[:, 2 * size :]).tanh_()
                # h' = n + z * (h - n)
                hk.sub_(n).mul_(z).add_(n)
            else:
                self._add_hh(gi, hk, k)
                hk.copy_(gi.tanh_() if self.cell == "rnn_tanh" else gi.relu_())
            x = hk
        if self.int8 is not None:
            return self.logits.copy_(self.int8["out"](x))
        if self.out_b is None:
            return torch.mm(x, self.out_w.t(), out=self.logits)
        return torch.addmm(self.out_b, x, self.out_w.t(), out=self.logits)

    def _add_hh(self, gi: torch.Tensor, h: torch.Tensor, k: int) -> None:
        """gi += h W_hhᵀ (the recurrent bias is already in gi for these cells)."""
        if self.int8 is not None:
            gi.add_(self.int8["hh"][k](h))
        else:
            gi.addmm_(h, self.w_hh[k].t())
