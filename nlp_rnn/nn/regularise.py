"""The regularisation of AWD-LSTM (Merity et al. 2018), each a switch of a language model's config:
locked (variational) dropout, embedding dropout of whole words, DropConnect on the recurrent
weights, and a stack of single-layer networks with per-layer sizes and locked dropout between them.

B batch, T length, V vocabulary, E embedding, H hidden, L layers.
DropConnect masks the hidden-to-hidden weight matrices, not the activations, once per forward
call (one mask per batch window), and runs the network with the masked weights through
`torch.func.functional_call`: torch's fused recurrent kernels (`aten::lstm`, `aten::gru`) still do
the work, with no per-step Python loop.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence

from nlp_rnn.nn.dropout import Dropout, dropped
from nlp_rnn.nn.encoder import rnn_module
from nlp_rnn.nn.int8 import Int8Stack


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared by every step: x (B, T, D) * mask (B, 1, D)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if isinstance(x, PackedSequence):  # prompts are read packed; no locked mask across packed rows
            return x._replace(data=F.dropout(x.data, self.p, True))
        mask = torch.empty(x.size(0), 1, x.size(2), device=x.device).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * mask.to(x.dtype)  # (B, T, D)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout(p: float, locked: bool) -> nn.Module:
    return LockedDropout(p) if locked else Dropout(p)


def embedding_rows_dropped(
    embed: nn.Embedding, tokens: torch.Tensor, p: float, training: bool
) -> torch.Tensor:
    """Embeddings (B, T, E) with whole rows of the table dropped (every occurrence of a dropped word
    reads zeros) and the kept rows scaled by 1 / (1 - p): one mask per call (per batch)."""
    if not training or p == 0:
        return embed(tokens)
    keep = (
        torch.empty(embed.weight.size(0), 1, device=embed.weight.device).bernoulli_(1 - p).div_(1 - p)
    )  # (V, 1)
    return embed(tokens) * keep[tokens]  # (B, T, E): the looked-up rows only, not the whole table scaled


def hidden_weights(rnn: nn.RNNBase) -> list[str]:
    return [name for name in rnn._flat_weights_names if name.startswith("weight_hh")]


def run_weight_dropped(rnn: nn.Module, p: float, x, hx):
    """`rnn(x, hx)` with DropConnect on its hidden-to-hidden weights when training: each weight_hh
    element kept with probability 1 - p and scaled by 1 / (1 - p), one mask for the whole call."""
    if not rnn.training or p == 0 or not isinstance(rnn, nn.RNNBase):
        return rnn(x, hx)
    masked = {name: dropped(getattr(rnn, name), p) for name in hidden_weights(rnn)}
    return functional_call(rnn, masked, (x, hx))


class LayerStack(nn.Module):
    """Single-layer recurrent networks one above the other, each with its own hidden size (AWD-LSTM's
    last layer is the size of the embeddings, so input and output embeddings can be tied), locked
    dropout between layers and DropConnect in each. Same call convention as a torch stack:
    (x (B, T, I) or PackedSequence, h or (h, c) of (L, B, Hmax)) -> (output, h or (h, c)). The state
    is kept rectangular: layer l's state is the first `sizes[l]` columns of row l, the rest zeros."""

    def __init__(
        self, cell: str, input_size: int, sizes: list[int], between: float, locked: bool, weight_p: float
    ):
        super().__init__()
        inputs = [input_size, *sizes[:-1]]
        self.layers = nn.ModuleList(rnn_module(cell, i, h, 1, 0.0, False) for i, h in zip(inputs, sizes))
        self.sizes, self.lstm, self.weight_p = list(sizes), cell == "lstm", weight_p
        self.between = dropout(between, locked)

    def forward(self, x, hx):
        h, c = hx if self.lstm else (hx, None)
        widest = h.size(-1)
        hs, cs = [], []
        for i, (layer, size) in enumerate(zip(self.layers, self.sizes)):
            h0 = h[i : i + 1, :, :size].contiguous()  # (1, B, H_l)
            state = (h0, c[i : i + 1, :, :size].contiguous()) if self.lstm else h0
            x, out = run_weight_dropped(layer, self.weight_p, x, state)
            new_h, new_c = out if self.lstm else (out, None)
            hs.append(F.pad(new_h, (0, widest - size)))
            cs.append(None if new_c is None else F.pad(new_c, (0, widest - size)))
            if i + 1 < len(self.layers):
                x = self.between(x)
        h = torch.cat(hs)  # (L, B, Hmax)
        return x, ((h, torch.cat(cs)) if self.lstm else h)

    def int8_(self) -> None:
        self.layers = nn.ModuleList(Int8Stack(layer) for layer in self.layers)
