"""The recurrent encoder: rnn_tanh/rnn_relu/gru/lstm, stacked, bidirectional, over packed sequences.

B batch, S source length, E embedding, H hidden per direction, D directions, L layers.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlp_rnn import precision
from nlp_rnn.nn import deferred, fast
from nlp_rnn.nn.cells import cell_update


class LSTM(nn.LSTM):
    """torch's LSTM (same parameters and arithmetic), which also runs under CPU bf16 autocast on a CPU without
    AVX-512. There autocast would send it to oneDNN's bf16 LSTM, which does not exist on such a CPU
    (`precision.onednn_bf16_lstm`); with oneDNN off for the call, torch's own kernel runs it, forward and
    backward (its products still under autocast: outputs float32, within bf16 rounding of fp32's)."""

    def forward(self, input, hx=None):  # noqa: A002 (torch's name)
        if (
            precision.onednn_bf16_lstm()
            or not torch.is_autocast_enabled("cpu")
            or torch.get_autocast_dtype("cpu") != torch.bfloat16
        ):
            return super().forward(input, hx)
        before = torch.backends.mkldnn.set_flags(False, _fp32_precision=None)
        try:
            return super().forward(input, hx)
        finally:
            torch.backends.mkldnn.set_flags(before[0], _fp32_precision=None)


def rnn_module(
    cell: str, input_size: int, hidden: int, layers: int, dropout: float, bidirectional: bool
) -> nn.RNNBase:
    """A fused torch recurrent layer stack for one of the four cell names."""
    kwargs = dict(
        num_layers=layers,
        batch_first=True,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
    )
    if cell == "gru":
        return nn.GRU(input_size, hidden, **kwargs)
    if cell == "lstm":
        return LSTM(input_size, hidden, **kwargs)
    rnn = nn.RNN(input_size, hidden, nonlinearity=cell.removeprefix("rnn_"), **kwargs)
    # The textbook Elman cell has one bias, h = f(W x + U h + b); torch's second bias b_hh only
    # duplicates b_ih. It becomes a fixed zero buffer, so parameter counts match the textbook.
    for name in [n for n in rnn._flat_weights_names if n.startswith("bias_hh")]:
        delattr(rnn, name)
        rnn.register_buffer(name, torch.zeros(hidden), persistent=False)
    rnn._init_flat_weights()
    return rnn


Reverse = Callable[[torch.Tensor], torch.Tensor]  # (B, S, .) -> every sentence reversed within its length


@dataclass
class EncoderOutput:
    states: torch.Tensor  # (B, S, D*H) top layer, zeros at padding
    final: torch.Tensor  # (B, D*H) top layer: forward at the last real token, backward at the first
    mask: torch.Tensor  # (B, S) True on real tokens

    def select(self, index: torch.Tensor) -> "EncoderOutput":
        """Rows `index` (e.g. each sentence repeated once per beam)."""
        return EncoderOutput(
            self.states.index_select(0, index),
            self.final.index_select(0, index),
            self.mask.index_select(0, index),
        )


class Encoder(nn.Module):
    def __init__(
        self, cell: str, embedding_dim: int, hidden: int, layers: int, bidirectional: bool, dropout: float
    ) -> None:
        super().__init__()
        self.rnn = rnn_module(cell, embedding_dim, hidden, layers, dropout, bidirectional)
        self.cell, self.is_lstm = cell, cell == "lstm"
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden * self.directions
        self.stepwise: Optional[bool] = None  # None: `stepwise_training`'s rule; True/False force it (tests)

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        """embedded (B, S, E) with lengths (B,) and mask (B, S)."""
        if stepwise_training(self, embedded):
            dropout = self.rnn.dropout
            between = (lambda x: F.dropout(x, dropout, training=True)) if dropout else None  # noqa: E731
            return masked_stack(embedded, lengths, mask, self.rnn.num_layers, self._layer_steps, between)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=embedded.size(1))  # (B, S, D*H)
        h_n = hidden[0] if self.is_lstm else hidden  # (L*D, B, H)
        top = h_n[-self.directions :]  # (D, B, H): packing makes these the last real states
        final = top.transpose(0, 1).reshape(embedded.size(0), self.output_size)  # (B, D*H)
        return EncoderOutput(states=states, final=final, mask=mask)

    def _layer_steps(self, index: int, x: torch.Tensor, reverse: Reverse) -> list[torch.Tensor]:
        """Layer `index` of the torch stack over padded x (B, S, I), step by step, every direction in the same
        operations: the input products of all steps at once, then per step one batched recurrent product
        (its weight gradient computed once after the loop, `nn.deferred`) and one cell update over (D, B, .).
        -> outputs (B, S, H) per direction, the backward one in reversed order (`masked_stack`)."""
        rnn, suffixes = self.rnn, ["", "_reverse"][: self.directions]
        stacked = lambda name: torch.stack([getattr(rnn, f"{name}_l{index}{s}") for s in suffixes])  # noqa: E731
        inputs = torch.stack([x, reverse(x)][: self.directions]).transpose(1, 2)  # (D, S, B, I)
        directions, length, batch, size = inputs.shape
        gates = torch.bmm(
            inputs.reshape(directions, length * batch, size), stacked("weight_ih").transpose(1, 2)
        )  # (D, S*B, G)
        gates = (gates + stacked("bias_ih").unsqueeze(1).to(gates.dtype)).view(directions, length, batch, -1)
        recurrent = deferred.DeferredLinear(stacked("weight_hh"), stacked("bias_hh").unsqueeze(1))
        h = gates.new_zeros(directions, batch, rnn.hidden_size)
        outputs = []
        for step in gates.unbind(1):  # (D, B, G); unbind: one backward op, not a zero-filled copy per step
            h, _ = cell_update(self.cell, step, recurrent(h), h, None)
            outputs.append(h)
        return list(torch.stack(outputs, dim=2).unbind(0))  # D of (B, S, H)


def stepwise_training(encoder: Encoder, embedded: torch.Tensor) -> bool:
    """Whether a training pass runs the encoder step by step (`Encoder._layer_steps`) instead of torch's packed
    layers: a GRU under CPU bf16 autocast, where torch's packed GRU computes in float32 (only its LSTM has a
    bf16 kernel on the CPU), so its products would run at a fraction of the bf16 rate (docs/results.md)."""
    if encoder.is_lstm or not deferred.applies(encoder) or fast.exporting():
        return False
    if encoder.stepwise is not None:
        return encoder.stepwise
    return (
        encoder.cell == "gru"
        and embedded.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def masked_stack(
    embedded: torch.Tensor,
    lengths: torch.Tensor,
    mask: torch.Tensor,
    layers: int,
    run: Callable[[int, torch.Tensor, Reverse], list[torch.Tensor]],
    between: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> EncoderOutput:
    """The packed encoder's outputs without packing: for graphs and kernels that cannot pack (ONNX, int8) and
    for training's steps in bf16 (`Encoder.stepwise`).

    `run(l, x, reverse)` gives layer l's outputs (B, S, H), one per direction, over its input x (B, S, I),
    which the backward direction reads as `reverse(x)`: every sentence reversed within its own length (a
    gather), so padding, which stays at the end, never reaches a real position in either direction; its
    outputs come back in that order (e.g. `each_direction`). `between`: applied to the input of every layer
    above the first (dropout, in training).
    """
    steps = torch.arange(embedded.size(1), device=embedded.device).unsqueeze(0)  # (1, S)
    last = (lengths.to(embedded.device) - 1).unsqueeze(1)  # (B, 1)
    flip = torch.where(steps <= last, last - steps, steps).unsqueeze(2)  # (B, S, 1) reverse within the length
    reverse = lambda t: t.gather(1, flip.expand(-1, -1, t.size(2)))  # noqa: E731 (its own inverse)
    x, directions = embedded, 1
    for index in range(layers):
        if index and between is not None:
            x = between(x)
        outs = run(index, x, reverse)
        directions = len(outs)
        x = torch.cat([out if d == 0 else reverse(out) for d, out in enumerate(outs)], dim=2)
    states = x * mask.unsqueeze(2).to(x.dtype)  # (B, S, D*H), zeros at padding as after packing
    hidden = states.size(2) // directions
    forward_last = (
        states[:, :, :hidden].gather(1, last.unsqueeze(2).expand(-1, 1, hidden)).squeeze(1)
    )  # (B, H)
    final = forward_last if directions == 1 else torch.cat([forward_last, states[:, 0, hidden:]], dim=1)
    return EncoderOutput(states=states, final=final, mask=mask)


def each_direction(
    layers: Sequence[Sequence[nn.Module]],
) -> Callable[[int, torch.Tensor, Reverse], list[torch.Tensor]]:
    """`masked_stack`'s `run` over modules, `layers[l][d]` direction d of layer l, each returning (outputs, state)."""
    return lambda index, x, reverse: [
        module(x if d == 0 else reverse(x))[0] for d, module in enumerate(layers[index])
    ]
