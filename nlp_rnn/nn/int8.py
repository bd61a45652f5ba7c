"""int8 inference on the CPU (`--precision int8`): every matrix product of a model in int8, in one place.

Weights are quantised once, per output row (symmetric, int8); activations are quantised per batch on
the fly (uint8), and the products run in fbgemm's int8 kernels (`quantized::linear_dynamic`), which
torch 2.13 ships for x86 CPUs: 1.7-3.6x faster than fp32 on a 2-core AVX2 EPYC at decoding shapes. On an
AMX Xeon, large products run in oneDNN's int8 kernels instead (AMX tiles; about twice as fast there, `Packed`).
`quantize(model)` returns an int8 copy of a translation model, classifier or language model: the
recurrent cells of the encoders (run here as a loop of int8 products instead of torch's fused
layers) and of the decoder, the attention, the bridge, the combination layer and the output layers.
Embeddings stay in fp32 (they are looked up, not multiplied).

torch 2.13 marks the quantized-tensor constructor used once per weight at load time as deprecated
(pytorch/pytorch#184982); that one warning is silenced here, the kernels themselves are not
deprecated. Where they are missing (a torch build without fbgemm), int8 is refused with one line.
"""

import contextlib
import copy
import functools
import warnings
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.cells import cell_update_
from nlp_rnn.nn.encoder import EncoderOutput, masked_stack


def available() -> bool:
    return (
        hasattr(torch.ops.quantized, "linear_dynamic")
        and "fbgemm" in torch.backends.quantized.supported_engines
    )


_dynamic = None  # fbgemm's `quantized::linear_dynamic`, looked up at the first product

# CPU kinds (`precision.cpu_kind`) where oneDNN's int8 kernels, which use AMX tiles, beat fbgemm's for large products:
# on a 2-core AMX Xeon, 256 x 512 -> 4,137 takes 0.56 ms against 1.33, 1,280 rows 3.1 against 7.1 (0.24 against 0.45
# at 64 rows), while one row takes 30-60 µs against 10-30 (its calls cost more). Kinds not listed (AMD's AVX-512
# VNNI among them) are not measured and keep fbgemm alone.
ONEDNN_KINDS = frozenset({"amx"})
# Multiply-adds of a product from which oneDNN's kernel takes it there: the measured crossings lie at 20-50 M
# (24 rows of 512 -> 4,137, 32 of 512 -> 1,536, about 100 of 1,024 -> 512 and of 256 -> 768)
ONEDNN_MIN_MACS = 40_000_000
# Rows of large products a weight runs in fbgemm before it is packed for oneDNN: packing costs about 5 ns a weight
# element (11 ms for a 4,137 x 512 shortlisted output layer), and oneDNN saves about 1.4 ps a multiply-add there,
# so the packing pays after about 3,500 rows. A server's run, whose shortlist rows are packed anew, of 64-text
# batches would lose by it; a long-lived weight, or a file's call of 256-sentence batches, gains.
ONEDNN_AFTER_ROWS = 4096


@functools.cache
def _onednn_for_large() -> bool:
    from nlp_rnn.precision import cpu_kind

    return cpu_kind() in ONEDNN_KINDS and "onednn" in torch.backends.quantized.supported_engines


class Packed:
    """An int8 weight packed for fbgemm, and where oneDNN's kernel is faster for large products
    (`ONEDNN_KINDS`), for oneDNN too, once its large products have run `ONEDNN_AFTER_ROWS` rows (a server
    answering single sentences never pays for it). The two give the same numbers to float rounding (the same
    quantisation)."""

    __slots__ = ("small", "large", "from_rows", "rows_seen", "qweight", "bias")

    def __init__(self, small, qweight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        self.small, self.large, self.qweight, self.bias = small, None, qweight, bias
        self.from_rows = -(-ONEDNN_MIN_MACS // (qweight.size(0) * qweight.size(1)))
        self.rows_seen = 0  # rows of large products run in fbgemm so far

    def pick(self, rows: int):
        if rows < self.from_rows:
            return self.small
        if self.large is None:
            self.rows_seen += rows
            if self.rows_seen < ONEDNN_AFTER_ROWS:
                return self.small
            previous = torch.backends.quantized.engine
            torch.backends.quantized.engine = "onednn"
            try:
                with _quiet():
                    self.large = torch.ops.quantized.linear_prepack(self.qweight, self.bias)
            finally:
                torch.backends.quantized.engine = previous
        return self.large


def product(x: torch.Tensor, packed) -> torch.Tensor:
    """x (N, I) contiguous float, `packed` an Int8Linear's weights -> x W^T + b (N, O) in fbgemm's int8 kernel,
    or oneDNN's for a large product where that is faster (`Packed`).

    Called with torch's `__torch_function__` handling off and past the op's Python wrapper: passing the packed
    weights (a TorchScript object) through that handling costs more than the product of a decoding step
    itself (on a 2-core AVX2 EPYC: 44 µs a call against 14.5 for a 16 x 16 product, one sentence's 117
    products 3.5 ms). Nothing here is a tensor subclass, so the result is the same."""
    global _dynamic
    if _dynamic is None:
        overload = torch.ops.quantized.linear_dynamic.default
        _dynamic = getattr(overload, "_op", overload)
    if type(packed) is Packed:
        packed = packed.pick(x.size(0))
    with torch._C.DisableTorchFunctionSubclass():
        return _dynamic(x, packed, True)


@contextlib.contextmanager
def _quiet():
    """torch's deprecation warnings of the quantized-tensor constructors used once per weight (see above)."""
    with warnings.catch_warnings():
        for message in (
            ".*quantized tensor creation functions.*",
            ".*quantize_per_channel.*",
            ".*_make_per_channel.*",
        ):
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


class Int8Linear(nn.Module):
    """y = x W^T + b with W in int8 (one scale per output row) and x quantised per call."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], keep_rows: bool = False) -> None:
        """`keep_rows`: keep the int8 rows and their scales so that `rows` can restrict the product (a
        vocabulary shortlist) without quantising again."""
        super().__init__()
        if not available():
            raise NlpRnnError("--precision int8 needs torch's fbgemm int8 kernels (x86 CPU builds have them)")
        weight = weight.detach().float().cpu()
        bias = None if bias is None else bias.detach().float().cpu()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        with _quiet():
            qweight = torch.quantize_per_channel(
                weight, scales, torch.zeros(weight.size(0), dtype=torch.long), 0, torch.qint8
            )
        self._pack(qweight, bias)
        self.source = (qweight.int_repr(), scales, bias) if keep_rows else None
        self.common: Optional[tuple[torch.Tensor, Int8Linear]] = None  # `rows`' common ids and their product

    def _pack(self, qweight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        with _quiet():
            self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
        if _onednn_for_large():
            self.packed = Packed(self.packed, qweight, bias)
        self.out_features = qweight.size(0)

    @classmethod
    def _packed(cls, qweight: torch.Tensor, bias: Optional[torch.Tensor]) -> "Int8Linear":
        """An Int8Linear over weights already quantised (no rows kept)."""
        made = cls.__new__(cls)
        nn.Module.__init__(made)
        made._pack(qweight, bias)
        made.source, made.common = None, None
        return made

    def rows(self, index: torch.Tensor, common: Optional[torch.Tensor] = None) -> nn.Module:
        """The same product restricted to the output rows `index` (sorted ids: a vocabulary shortlist), the rows'
        int8 values and scales taken from the whole matrix (quantisation is per row), packed again.

        Packing costs 5-7 µs a row on a 2-core EPYC (fbgemm reads each row's scale on its own): 3 ms for one
        sentence's ~530 rows, more than a tenth of its translation. `common`: sorted ids that most calls'
        `index` contain (a shortlist's frequent words), packed once and kept; then only the other rows are
        packed per call, and the product is a `SplitRows`, whose columns come in the order its `columns` gives
        (the same numbers: each output column depends only on its own row)."""
        if self.source is None:
            raise NlpRnnError(
                "this int8 product was built without keep_rows; it cannot be restricted to rows"
            )
        index = index.cpu()
        if common is None or common.numel() == 0:
            return self._rows(index)
        inside = torch.isin(index, common)
        if int(inside.sum()) != common.numel():  # `index` lacks some of them: pack it whole
            return self._rows(index)
        kept = self.common
        if kept is None or kept[0] is not common:
            kept = self.common = (common, self._rows(common.cpu()))
        if bool(inside.all()):
            return kept[1]
        return SplitRows(kept[1], self._rows(index[~inside]), inside)

    def _rows(self, index: torch.Tensor) -> "Int8Linear":
        values, scales, bias = self.source
        with _quiet():
            qweight = torch._make_per_channel_quantized_tensor(
                values.index_select(0, index),
                scales.index_select(0, index),
                torch.zeros(index.numel(), dtype=torch.long),
                0,
            )
        return Int8Linear._packed(qweight, None if bias is None else bias.index_select(0, index))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.dtype == torch.float32 and x.is_contiguous():
            # a decoding step's (B, I): the reshapes below cost 3-4 µs each on a 2-core EPYC, half a product
            return product(x, self.packed)
        flat = x.reshape(-1, x.size(-1)).float().contiguous()
        return product(flat, self.packed).view(*x.shape[:-1], self.out_features)

    # Called as a plain function: nn.Module's call (its hook machinery; no hooks are registered on int8
    # products, which exist for inference only) costs a decoding step's product ~10 µs on a 2-core EPYC.
    __call__ = forward


class SplitRows(nn.Module):
    """`Int8Linear.rows` over rows packed in two parts, the kept common ones and this call's others, whose
    products are joined without reordering (a step's call saved): output column j stands for the requested row
    at position `columns[j]` (K,); `inside` (K,) marks which of the requested rows (in their order) are common."""

    def __init__(self, common: Int8Linear, other: Int8Linear, inside: torch.Tensor) -> None:
        super().__init__()
        self.common, self.other = common, other
        self.columns = torch.cat([inside.nonzero(), (~inside).nonzero()]).squeeze(1)
        self.out_features = inside.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.dtype == torch.float32 and x.is_contiguous():  # a decoding step's (B, I)
            return torch.cat([product(x, self.common.packed), product(x, self.other.packed)], dim=1)
        flat = x.reshape(-1, x.size(-1)).float().contiguous()
        both = torch.cat([product(flat, self.common.packed), product(flat, self.other.packed)], dim=1)
        return both.view(*x.shape[:-1], self.out_features)

    __call__ = forward  # as Int8Linear's


class Int8Layer(nn.Module):
    """One direction of one recurrent layer: the input products for all steps at once, then a loop over steps."""

    def __init__(self, cell: str, rnn: nn.RNNBase, suffix: str) -> None:
        super().__init__()
        self.cell, self.hidden = cell, rnn.hidden_size
        self.ih = Int8Linear(getattr(rnn, f"weight_ih{suffix}"), getattr(rnn, f"bias_ih{suffix}"))
        self.hh = Int8Linear(getattr(rnn, f"weight_hh{suffix}"), getattr(rnn, f"bias_hh{suffix}"))

    def forward(
        self,
        x: torch.Tensor,
        h: Optional[torch.Tensor] = None,
        c: Optional[torch.Tensor] = None,
        lengths: Optional[torch.Tensor] = None,
    ):
        """x (B, S, I) from state h, c (B, H) (default zeros) -> outputs (B, S, H) and the state after each row's
        last real step (`lengths`; without, the last column)."""
        if h is None:
            h = x.new_zeros(x.size(0), self.hidden)
        if c is None and self.cell == "lstm":
            c = torch.zeros_like(h)
        gates = self.ih(x).unsqueeze(0)  # (1, B, S, G), this call's own: _steps overwrites it
        h, c = h.float().contiguous().unsqueeze(0), None if c is None else c.unsqueeze(0)
        outs, h, c = _steps(self.cell, gates, [self.hh.packed], h, c, lengths)
        return outs[0], h[0], None if c is None else c[0]


def _steps(
    cell: str,
    gates: torch.Tensor,
    recurrent: list,
    h: torch.Tensor,
    c: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor],
):
    """The loop over steps of D directions of a layer at once (a bidirectional layer's two: one cell update a
    step for both, half the element-wise calls of one sentence's encoder): gates (D, B, S, G), the input
    products, overwritten step by step; `recurrent` the D packed recurrent weights; state h, c (D, B, H).
    -> outputs (D, B, S, H) and the state after each row's last real step (`lengths`; without, the last column)."""
    # from the first step at which a row has ended on, such rows keep their state (none: every row is real)
    ended = gates.size(2) if lengths is None or lengths.numel() == 0 else int(lengths.min())
    outs = []
    # each step's gates by `select`, not `unbind`: only its views may be written in place with grad mode on
    for t in range(gates.size(2)):
        if len(recurrent) == 1:
            hidden = product(h[0], recurrent[0]).unsqueeze(0)
        else:
            hidden = torch.stack([product(h[d], packed) for d, packed in enumerate(recurrent)])
        new_h, new_c = cell_update_(cell, gates[:, :, t], hidden, h, c)
        if t >= ended:
            live = (lengths > t).unsqueeze(1)  # (B, 1), for every direction
            new_h = torch.where(live, new_h, h)
            new_c = None if c is None else torch.where(live, new_c, c)
        h, c = new_h, new_c
        outs.append(h)
    return torch.stack(outs, dim=2), h, c


class Int8Encoder(nn.Module):
    """`Encoder` in int8: per layer and direction an `Int8Layer`; the backward one reads each sentence
    reversed within its length (as the ONNX export's masked encoder), so padding never reaches a real state."""

    def __init__(self, encoder) -> None:
        super().__init__()
        rnn, cell = encoder.rnn, _cell_name(encoder.rnn)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                Int8Layer(cell, rnn, f"_l{layer}" + ("_reverse" if d else ""))
                for d in range(encoder.directions)
            )
            for layer in range(rnn.num_layers)
        )

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        return masked_stack(embedded.float(), lengths, mask, len(self.layers), self._layer)

    def _layer(self, index: int, x: torch.Tensor, reverse) -> list[torch.Tensor]:
        """`masked_stack`'s `run`: layer `index`'s outputs (B, S, H) per direction, its directions in one loop."""
        directions = self.layers[index]
        if len(directions) == 1:
            return [directions[0](x)[0]]
        forward, backward = directions
        gates = torch.stack([forward.ih(x), backward.ih(reverse(x))])  # (2, B, S, G)
        h = x.new_zeros(2, x.size(0), forward.hidden)
        c = torch.zeros_like(h) if forward.cell == "lstm" else None
        outs, _, _ = _steps(forward.cell, gates, [forward.hh.packed, backward.hh.packed], h, c, None)
        return [outs[0], outs[1]]


class Int8Stack(nn.Module):
    """A unidirectional torch recurrent stack (a language model's) in int8, with its call convention:
    (input or PackedSequence, h or (h, c)) -> (output, h or (h, c)); packed rows stop at their length."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        cell = _cell_name(rnn)
        self.lstm = cell == "lstm"
        self.layers = nn.ModuleList(Int8Layer(cell, rnn, f"_l{layer}") for layer in range(rnn.num_layers))

    def forward(self, x, hx):
        lengths = None
        if isinstance(x, PackedSequence):
            x, lengths = pad_packed_sequence(x, batch_first=True)
        h0, c0 = hx if self.lstm else (hx, None)
        hs, cs = [], []
        for i, layer in enumerate(self.layers):
            x, h, c = layer(x.float(), h0[i], None if c0 is None else c0[i], lengths)
            hs.append(h)
            cs.append(c)
        h = torch.stack(hs)
        return x, ((h, torch.stack(cs)) if self.lstm else h)


def _cell_name(rnn: nn.RNNBase) -> str:
    if isinstance(rnn, nn.GRU):
        return "gru"
    if isinstance(rnn, nn.LSTM):
        return "lstm"
    return "rnn_tanh" if rnn.nonlinearity == "tanh" else "rnn_relu"


def quantize(model: nn.Module) -> nn.Module:
    """An int8 copy of a model for inference on the CPU: the model converts its own parts (`int8_`)."""
    if not callable(getattr(model, "int8_", None)):
        raise NlpRnnError(f"--precision int8 does not cover {type(model).__name__} models")
    model = copy.deepcopy(model).float().cpu().eval()
    model.int8_()
    return model


def int8_linear(module: Optional[nn.Linear]) -> Optional[Int8Linear]:
    """An int8 copy of a linear layer (None stays None)."""
    return None if module is None else Int8Linear(module.weight, module.bias)
