"""The ONNX graphs of the translation model and the classifier, and the ONNX Runtime models that run them.

`export_seq2seq` writes `encoder.onnx` (source ids and lengths -> the decoder's memory and first
state) and `decoder_step.onnx` (one step: previous tokens and state -> logits, new state, attention
weights); `export_classifier` writes `classifier.onnx` (ids and lengths -> logits). Batch and length
axes are dynamic. Packed sequences do not export, so the exported encoder masks by length instead:
each direction of each layer is a plain one-layer network, and the backward direction reads each
sentence reversed within its own length (a gather), so padding never reaches a real position — the
same states as packing. `OrtSeq2Seq` follows the `start`/`step` search protocol and `OrtClassifier`
the classifier's `logits`, so the same searches and predictors drive them.
B batch, S source length, H hidden, L layers, V vocabulary, C classes.
"""

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nlp_rnn.nn.decoder import DecoderState, Memory
from nlp_rnn.nn.encoder import Encoder, EncoderOutput, each_direction, masked_stack
from nlp_rnn.onnxrt import export_graph, session, to_numpy
from nlp_rnn.tokenizer import BOS

# A small padded batch to trace the graphs on.
SRC = ((5, 6, 7, 2), (8, 2, 0, 0), (9, 10, 2, 0))
SRC_LEN = (4, 2, 3)


def _single_layer(rnn: nn.RNNBase, layer: int, reverse: bool) -> nn.RNNBase:
    """One direction of one layer of a fused torch stack, as its own one-layer network (same weights)."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    kind = type(rnn)
    input_size = rnn.input_size if layer == 0 else rnn.hidden_size * (2 if rnn.bidirectional else 1)
    extra = {"nonlinearity": rnn.nonlinearity} if kind is nn.RNN else {}
    single = kind(input_size, rnn.hidden_size, batch_first=True, **extra)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{name}_l0").copy_(getattr(rnn, f"{name}{suffix}"))
    return single.eval()


class MaskedEncoder(nn.Module):
    """`Encoder` without packing: per layer and direction a one-layer network; the backward one reads
    every sentence reversed within its length. Same outputs as the packed encoder (tested)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        rnn = encoder.rnn
        self.layers = nn.ModuleList(
            nn.ModuleList(_single_layer(rnn, layer, d == 1) for d in range(encoder.directions))
            for layer in range(rnn.num_layers)
        )

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        return masked_stack(embedded, lengths, mask, len(self.layers), each_direction(self.layers))


def _mask(src_len: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=src_len.device).unsqueeze(0) < src_len.unsqueeze(1)


class EncoderGraph(nn.Module):
    """src (B, S), src_len (B,) -> values, keys (or context and its gates), mask, h (L, B, H), c, feed."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.encoder = model, MaskedEncoder(model.encoder)
        self.attention = model.decoder.has_attention
        self.lstm = model.cfg.cell == "lstm"

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        mask = _mask(src_len, src.size(1))
        enc = self.encoder(self.model.src_embed(src), src_len, mask)
        memory, state = self.model.decoder.memory(enc), self.model.decoder.init_state(enc)
        h = torch.stack(state.h)  # (L, B, H)
        c = torch.stack(state.c) if self.lstm else torch.zeros_like(h)  # GRU/vanilla: zeros that pass through
        if self.attention:
            return memory.values, memory.keys, mask, h, c, state.feed
        return memory.values, memory.static_gates, memory.context, mask, h, c, state.feed


class StepGraph(nn.Module):
    """One decoder step: prev (B,), the memory and the state -> logits (B, V), h, c, feed, attention (B, S)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.attention = model.decoder.has_attention
        self.lstm = model.cfg.cell == "lstm"

    def forward(self, prev, values, second, third, h, c, feed):
        """attention: second = keys (B, S, A), third = mask (B, S); without: second = static gates
        (B, G), third = context."""
        if self.attention:
            memory = Memory(values, third, second, None, None)
        else:
            memory = Memory(values, None, None, third, second)
        state = DecoderState(tuple(h.unbind(0)), tuple(c.unbind(0)) if self.lstm else None, feed)
        logits, new, weights = self.decoder.step(prev, memory, state)
        if weights is None:
            weights = torch.zeros(values.shape[:2], dtype=logits.dtype, device=logits.device)
        new_c = torch.stack(new.c) if self.lstm else c + 0  # a copy: an output must not be an input
        return logits, torch.stack(new.h), new_c, new.feed, weights


class ClassifierGraph(nn.Module):
    """src (B, S), src_len (B,) -> logits (B, C) (an ensemble: the log of its members' mean probabilities)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        members = list(model.members) if hasattr(model, "members") else [model]
        self.encoders = nn.ModuleList(MaskedEncoder(m.encoder) for m in members)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        mask = _mask(src_len, src.size(1))
        members = list(self.model.members) if hasattr(self.model, "members") else [self.model]
        logits = [
            m.output(m.pool(enc(m.embed(src), src_len, mask))) for m, enc in zip(members, self.encoders)
        ]
        if len(logits) == 1:
            return logits[0]
        log_probs = torch.stack([F.log_softmax(x.float(), dim=-1) for x in logits])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))


def export_seq2seq(model: nn.Module, folder: Path) -> dict:
    """Writes encoder.onnx and decoder_step.onnx of a translation model; the graphs' manifest entries."""
    src, src_len = torch.tensor(SRC), torch.tensor(SRC_LEN)
    attention = model.decoder.has_attention
    enc = EncoderGraph(model).eval()
    second, third = ("keys", "mask") if attention else ("static_gates", "context")
    enc_out = (
        ["values", "keys", "mask", "h", "c", "feed"]
        if attention
        else ["values", "static_gates", "context", "mask", "h", "c", "feed"]
    )
    export_graph(
        enc,
        (src, src_len),
        folder / "encoder.onnx",
        ["src", "src_len"],
        enc_out,
        {0: {0: "B", 1: "S"}, 1: {0: "B"}},
    )
    out = dict(zip(enc_out, enc(src, src_len)))
    step_in = ["prev", "values", second, third, "h", "c", "feed"]
    step_out = ["logits", "h_out", "c_out", "feed_out", "attention"]
    dyn = {
        0: {0: "B"},
        1: {0: "B", 1: "S"},
        2: {0: "B", 1: "S"} if attention else {0: "B"},
        3: {0: "B", 1: "S"} if attention else {0: "B"},
        4: {1: "B"},
        5: {1: "B"},
        6: {0: "B"},
    }
    prev = torch.full((3,), BOS, dtype=torch.long)
    export_graph(
        StepGraph(model).eval(),
        (prev, *(out[name] for name in step_in[1:])),
        folder / "decoder_step.onnx",
        step_in,
        step_out,
        dyn,
    )
    return {
        "encoder": {"file": "encoder.onnx", "inputs": ["src", "src_len"], "outputs": enc_out},
        "decoder_step": {"file": "decoder_step.onnx", "inputs": step_in, "outputs": step_out},
    }


def export_classifier(model: nn.Module, folder: Path) -> dict:
    """Writes classifier.onnx (a classifier or an ensemble); its manifest entry."""
    src, src_len = torch.tensor(SRC), torch.tensor(SRC_LEN)
    export_graph(
        ClassifierGraph(model).eval(),
        (src, src_len),
        folder / "classifier.onnx",
        ["src", "src_len"],
        ["logits"],
        {0: {0: "B", 1: "S"}, 1: {0: "B"}},
    )
    return {"classifier": {"file": "classifier.onnx", "inputs": ["src", "src_len"], "outputs": ["logits"]}}


class PerRowMemory(Memory):
    """An ONNX Runtime decoder's memory: its step graph takes keys and values per decoder row, so beam search
    copies them per beam (`Memory.for_beams`)."""

    def for_beams(self, beams: int) -> None:
        return None


class OrtSeq2Seq(nn.Module):
    """A translation model on ONNX Runtime with the search protocol (`start`, `step`)."""

    fixed_precision = "fp32"

    def __init__(self, folder: Path, manifest: dict) -> None:
        super().__init__()
        graphs = manifest["graphs"]
        self.encoder = session(folder / graphs["encoder"]["file"])
        self.decoder = session(folder / graphs["decoder_step"]["file"])
        self.enc_out = [o.name for o in self.encoder.get_outputs()]
        self.step_in = [i.name for i in self.decoder.get_inputs()]
        self.step_out = [o.name for o in self.decoder.get_outputs()]
        self.attention = "keys" in self.enc_out

    def start(self, batch):
        out = dict(
            zip(
                self.enc_out,
                (
                    torch.from_numpy(x)
                    for x in self.encoder.run(
                        None, {"src": to_numpy(batch.src), "src_len": to_numpy(batch.src_len)}
                    )
                ),
            )
        )
        if self.attention:
            memory = PerRowMemory(out["values"], out["mask"], out["keys"], None, None)
        else:
            memory = PerRowMemory(out["values"], out["mask"], None, out["context"], out["static_gates"])
        state = DecoderState(
            tuple(out["h"].unbind(0)), tuple(out["c"].unbind(0)), out["feed"]
        )  # c: zeros unless LSTM
        return memory, state, torch.full((batch.size,), BOS, dtype=torch.long)

    def step(self, prev: torch.Tensor, memory: Memory, state: DecoderState):
        feeds = {
            "prev": prev,
            "values": memory.values,
            "keys": memory.keys,
            "mask": memory.mask,
            "context": memory.context,
            "static_gates": memory.static_gates,
            "h": torch.stack(state.h),
            "c": torch.stack(state.c),
            "feed": state.feed,
        }
        outs = dict(
            zip(
                self.step_out,
                (
                    torch.from_numpy(x)
                    for x in self.decoder.run(None, {k: to_numpy(feeds[k]) for k in self.step_in})
                ),
            )
        )
        new = DecoderState(tuple(outs["h_out"].unbind(0)), tuple(outs["c_out"].unbind(0)), outs["feed_out"])
        return outs["logits"], new, outs["attention"] if self.attention else None


class OrtClassifier(nn.Module):
    """A classifier on ONNX Runtime: `logits(batch)` as the PyTorch classifier."""

    fixed_precision = "fp32"

    def __init__(self, folder: Path, manifest: dict) -> None:
        super().__init__()
        self.session = session(folder / manifest["graphs"]["classifier"]["file"])

    def logits(self, batch) -> torch.Tensor:
        return torch.from_numpy(
            self.session.run(None, {"src": to_numpy(batch.src), "src_len": to_numpy(batch.src_len)})[0]
        )
