"""The recurrent encoder: rnn_tanh/rnn_relu/gru/lstm, stacked, bidirectional, over packed sequences.

B batch, S source length, E embedding, H hidden per direction, D directions, L layers.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


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
        return nn.LSTM(input_size, hidden, **kwargs)
    rnn = nn.RNN(input_size, hidden, nonlinearity=cell.removeprefix("rnn_"), **kwargs)
    # The textbook Elman cell has one bias, h = f(W x + U h + b); torch's second bias b_hh only
    # duplicates b_ih. It becomes a fixed zero buffer, so parameter counts match the textbook.
    for name in [n for n in rnn._flat_weights_names if n.startswith("bias_hh")]:
        delattr(rnn, name)
        rnn.register_buffer(name, torch.zeros(hidden), persistent=False)
    rnn._init_flat_weights()
    return rnn


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
        self.is_lstm = cell == "lstm"
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden * self.directions

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        """embedded (B, S, E) with lengths (B,) and mask (B, S)."""
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=embedded.size(1))  # (B, S, D*H)
        h_n = hidden[0] if self.is_lstm else hidden  # (L*D, B, H)
        top = h_n[-self.directions :]  # (D, B, H): packing makes these the last real states
        final = top.transpose(0, 1).reshape(embedded.size(0), self.output_size)  # (B, D*H)
        return EncoderOutput(states=states, final=final, mask=mask)


def masked_stack(
    embedded: torch.Tensor,
    lengths: torch.Tensor,
    mask: torch.Tensor,
    layers: Sequence[Sequence[nn.Module]],
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> EncoderOutput:
    """The packed encoder's outputs without packing, for graphs and kernels that cannot pack (ONNX, int8).

    `layers[l][d]` is direction d of layer l, and `run(module, x)` its outputs (B, S, H) over padded
    x. The backward direction reads every sentence reversed within its own length (a gather), so
    padding, which stays at the end, never reaches a real position in either direction.
    """
    steps = torch.arange(embedded.size(1), device=embedded.device).unsqueeze(0)  # (1, S)
    last = (lengths - 1).unsqueeze(1)  # (B, 1)
    flip = torch.where(steps <= last, last - steps, steps).unsqueeze(2)  # (B, S, 1) reverse within the length
    x = embedded
    for layer in layers:
        outs = []
        for d, module in enumerate(layer):
            inp = x if d == 0 else x.gather(1, flip.expand(-1, -1, x.size(2)))
            out = run(module, inp)
            outs.append(out if d == 0 else out.gather(1, flip.expand(-1, -1, out.size(2))))
        x = torch.cat(outs, dim=2)
    states = x * mask.unsqueeze(2).to(x.dtype)  # (B, S, D*H), zeros at padding as after packing
    hidden = states.size(2) // len(layers[0])
    forward_last = (
        states[:, :, :hidden].gather(1, last.unsqueeze(2).expand(-1, 1, hidden)).squeeze(1)
    )  # (B, H)
    final = forward_last if len(layers[0]) == 1 else torch.cat([forward_last, states[:, 0, hidden:]], dim=1)
    return EncoderOutput(states=states, final=final, mask=mask)
