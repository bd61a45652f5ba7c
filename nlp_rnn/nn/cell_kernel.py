"""A language model's recurrent stack as cell updates on preallocated buffers, for fast generation.

Generating one token with `nn.LSTM` costs a fused-kernel call per token with its set-up (weight
checks, packing, a new output and state each time), an embedding lookup and the first layer's input
product. Here, once per batch:
- the first layer's input product is folded into a table, embedding × W_ih0ᵀ + biases (V, G), so a
  token's share of the first layer's gates is one row lookup;
- every other product writes into a buffer that is reused at every step (`addmm(..., out=)`), and
  the cell update runs in place on views of the gate buffer;
- rows never leave the batch (a finished row keeps stepping; its later tokens are dropped), so
  nothing is reallocated and the host checks whether all rows are done only every few steps;
- in float32 with batches of at least `TANH_VIA_SIGMOID_MIN` elements per (B, H) tensor, every tanh is
  computed in place as 2 sigmoid(2x) - 1 (the identity `nn.fast.tanh` uses in decoding): torch's vectorised
  tanh takes about 6x as long as its sigmoid on x86, while for a few samples the extra calls cost more than
  they save (`bench/kernel_step.py`). The LSTM's candidate gate then shares one sigmoid call with the other
  three gates. bfloat16 keeps tanh (the form would lose precision there).

The arithmetic is the same as torch's cells (`nn.LSTM`, `nn.GRU`, `nn.RNN` gate order and biases);
results agree with them to float rounding. B batch, L layers, H hidden, G gates (4H, 3H or H), V vocabulary.
"""

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nlp_rnn.nn import int8

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

    TANH_VIA_SIGMOID_MIN = 8192  # B x H from which a float32 step computes tanh through sigmoid (above)

    def __init__(self, embed: nn.Embedding, rnn: nn.RNNBase, output: nn.Linear, int8: bool = False) -> None:
        """`int8`: every product but the first layer's input table through int8 kernels (`nn.int8`): a
        quarter of the bytes to read per token, which is what one sequence's step is bound by."""
        self.cell = cell_of(rnn)
        if self.cell is None or rnn.bidirectional or not rnn.batch_first:
            raise ValueError("CellKernel needs a unidirectional, batch-first LSTM, GRU or RNN")
        self.layers, self.hidden = rnn.num_layers, rnn.hidden_size
        size = self.hidden
        # LSTM gates reordered i, f, o, g (torch: i, f, g, o) so that the three sigmoids are one call on
        # contiguous columns: the same rows of the same weights, only placed differently.
        order = (
            torch.cat(
                [
                    torch.arange(0, 2 * size),
                    torch.arange(3 * size, 4 * size),
                    torch.arange(2 * size, 3 * size),
                ]
            )
            if self.cell == "lstm"
            else None
        )
        w = lambda name: (  # noqa: E731
            getattr(rnn, name).detach()
            if order is None
            else getattr(rnn, name).detach().index_select(0, order)
        )
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
        self._state: tuple = (None, None, None, None)  # `step`'s last h and c, and their layers' views
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
        """The step's buffers for `batch` rows, and their views, made once (a view is a call too)."""
        size, dtype = self.hidden, self.table.dtype
        gates = GATES[self.cell] * size
        self.gi = [self.table.new_empty(batch, gates) for _ in range(self.layers)]
        self.gh = self.table.new_empty(batch, gates) if self.cell == "gru" else None
        self.tmp = self.table.new_empty(batch, size)
        self.via_sigmoid = dtype == torch.float32 and batch * size >= self.TANH_VIA_SIGMOID_MIN
        self.logits = self.table.new_empty(batch, self.out_w.size(0), dtype=dtype)
        if self.cell == "lstm":  # per layer: the sigmoid gates together (three, or all four), then i, f, o, g
            together = 4 * size if self.via_sigmoid else 3 * size
            self.views = [(gi.narrow(1, 0, together), *gi.chunk(4, 1)) for gi in self.gi]
        elif self.cell == "gru":
            gh = self.gh
            self.views = [
                (gi[:, : 2 * size], gh[:, : 2 * size], gi[:, 2 * size :], gh[:, 2 * size :]) for gi in self.gi
            ]
        # The products' right-hand sides as (in, out) copies rather than transposed views: on a Zen 1 (AVX2) a
        # (32, 512) x (512, 2048) addmm ran 15 % faster so (docs/results.md). int8 steps do not read them.
        copy = (lambda w: w.t()) if self.int8 is not None else (lambda w: w.t().contiguous())  # noqa: E731
        self.w_ih_t = [copy(w) for w in self.w_ih]
        self.w_hh_t = [copy(w) for w in self.w_hh]
        self.out_w_t = copy(self.out_w)

    def step(self, prev: torch.Tensor, h: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        """prev (B,) tokens; h (L, B, H) and c (L, B, H, LSTM only) updated in place -> logits (B, V),
        a buffer that the next step overwrites (int8: a new tensor). For inference: call it under
        torch.no_grad()."""
        if h is not self._state[0] or c is not self._state[1]:  # the layers' views, made once per state
            self._state = (h, c, h.unbind(0), None if c is None else c.unbind(0))
        hs, cs = self._state[2], self._state[3]
        q = self.int8
        x = None
        for k in range(self.layers):
            gi, hk = self.gi[k], hs[k]
            if k == 0:
                torch.index_select(self.table, 0, prev, out=gi)
            if self.cell == "gru":
                self._gru(gi, hk, x, k)
            else:
                if k == 0:  # the recurrent bias is already in gi for these cells
                    gi.add_(_int8(q["hh"][k], hk)) if q is not None else gi.addmm_(hk, self.w_hh_t[k])
                elif q is not None:
                    torch.add(_int8(q["ih"][k], x), _int8(q["hh"][k], hk), out=gi)
                else:
                    torch.addmm(self.in_bias[k], x, self.w_ih_t[k], out=gi).addmm_(hk, self.w_hh_t[k])
                if self.cell == "lstm":
                    self._lstm(k, hk, cs[k])
                else:
                    hk.copy_(self._tanh_(gi) if self.cell == "rnn_tanh" else gi.relu_())
            x = hk
        if q is not None:
            return _int8(q["out"], x)
        if self.out_b is None:
            return torch.mm(x, self.out_w_t, out=self.logits)
        return torch.addmm(self.out_b, x, self.out_w_t, out=self.logits)

    def _lstm(self, k: int, hk: torch.Tensor, ck: torch.Tensor) -> None:
        """One LSTM layer's update from its gates (order i, f, o, g; see __init__), hk and ck in place."""
        sig, i, f, o, g = self.views[k]
        if not self.via_sigmoid:
            sig.sigmoid_()
            g.tanh_()
            ck.mul_(f).addcmul_(i, g)
            torch.tanh(ck, out=self.tmp)
            torch.mul(o, self.tmp, out=hk)
            return
        # tanh(x) = 2 sigmoid(2x) - 1: c' = f c + i tanh(g) = f c + 2 i sigmoid(2g) - i, h = 2 o sigmoid(2c') - o
        g.mul_(2)
        sig.sigmoid_()  # all four gates in one call
        ck.mul_(f).addcmul_(i, g, value=2).sub_(i)
        torch.mul(ck, 2, out=self.tmp).sigmoid_()
        torch.mul(o, self.tmp, out=hk).mul_(2).sub_(o)

    def _tanh_(self, x: torch.Tensor) -> torch.Tensor:
        """tanh in place, through sigmoid where that pays (`via_sigmoid`)."""
        return x.mul_(2).sigmoid_().mul_(2).sub_(1) if self.via_sigmoid else x.tanh_()

    def _gru(self, gi: torch.Tensor, hk: torch.Tensor, x: Optional[torch.Tensor], k: int) -> None:
        """One GRU layer: gi holds the input's share (layer 0: already looked up); hk updated in place."""
        q, gh = self.int8, self.gh
        if k > 0:
            if q is not None:
                gi.copy_(_int8(q["ih"][k], x))
            else:
                torch.addmm(self.in_bias[k], x, self.w_ih_t[k], out=gi)
        if q is not None:
            gh.copy_(_int8(q["hh"][k], hk))
        else:
            torch.addmm(self.b_hh[k], hk, self.w_hh_t[k], out=gh)
        gi_rz, gh_rz, gi_n, gh_n = self.views[k]
        rz = gi_rz.add_(gh_rz).sigmoid_()
        size = self.hidden
        r, z = rz[:, :size], rz[:, size:]
        n = self._tanh_(gi_n.addcmul_(r, gh_n))
        hk.sub_(n).mul_(z).add_(n)  # h' = n + z * (h - n)


def _int8(linear: Any, x: torch.Tensor) -> torch.Tensor:
    """`Int8Linear(x)` for a contiguous (B, I) float x, without the module call and reshapes around it."""
    return int8.product(x, linear.packed)
