"""A recurrent language model: embeddings -> stacked rnn_tanh/rnn_relu/gru/lstm -> output layer.

B batch, T length, E embedding, H hidden, L layers, V vocabulary, C condition vector size.
Optionally conditioned on a label (one-to-many generation): the label's learned vector
initialises every layer's hidden state and, with `condition_input`, joins every input.
The state is a small dataclass with `select` and `detach`, so truncated backpropagation through
time carries it from window to window, and the searches reorder it like the decoder's.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from nlp_rnn.config import CELLS, _choice, _positive
from nlp_rnn.data import Batch
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.encoder import rnn_module
from nlp_rnn.nn.int8 import Int8Stack, int8_linear
from nlp_rnn.nn.loss import cross_entropy_sum, linear_cross_entropy_sum
from nlp_rnn.nn.regularise import LayerStack, dropout, embedding_rows_dropped, run_weight_dropped
from nlp_rnn.tokenizer import PAD


@dataclass(frozen=True)
class LMModelConfig:
    cell: str = "lstm"
    embedding_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.2  # between layers and on the top layer's output
    embedding_dropout: Optional[float] = None  # defaults to dropout
    tie_output: bool = False  # share input embeddings and output weights (needs embedding_dim == hidden_size)
    condition_dim: int = 64  # size of a label's vector (conditional models only)
    condition_input: bool = False  # the label's vector also joins every input
    # AWD-LSTM's regularisation (Merity et al. 2018; its WikiText-2 values in brackets). Off by default.
    locked_dropout: bool = (
        False  # one dropout mask per sequence on the embeddings, between layers and on the output
    )
    layer_dropout: Optional[float] = None  # between layers (dropouth 0.2); default: dropout
    weight_dropout: float = 0.0  # DropConnect on the hidden-to-hidden weights (wdrop 0.5)
    embedding_row_dropout: float = 0.0  # whole words dropped from the embedding table (dropoute 0.1)
    last_layer_size: Optional[int] = (
        None  # the top layer's hidden size (embedding_dim, to tie with a bigger hidden)
    )
    activation_reg: float = 0.0  # AR: alpha * mean(dropped top outputs^2) (alpha 2)
    temporal_activation_reg: float = 0.0  # TAR: beta * mean((h_t - h_t-1)^2) of the top outputs (beta 1)
    # An adaptive softmax (Grave et al. 2017) with these cluster cut-offs, e.g. [2000, 10000]: the frequent
    # words in the head, rarer ones in smaller tail clusters; empty: one full softmax.
    adaptive_softmax: tuple[int, ...] = ()
    # Read text right to left: a backward language model (ULMFiT's second direction). Its training and scored
    # streams are reversed, and a document classifier started from it reads each document reversed; it does
    # not generate. Two classifiers, one from each direction, make an ensemble (`--model A --model B`).
    reverse: bool = False
    # Fine-tune this language model (bundle or training folder) instead of starting from random weights: its
    # tokenizer, model section and weights are taken (ULMFiT's second stage); read once, when training starts.
    init_from: Optional[str] = None

    def __post_init__(self) -> None:
        _choice("model.cell", self.cell, CELLS)
        for name in ("embedding_dim", "hidden_size", "num_layers", "condition_dim"):
            _positive(f"model.{name}", getattr(self, name))
        for name in (
            "dropout",
            "embedding_dropout",
            "layer_dropout",
            "weight_dropout",
            "embedding_row_dropout",
        ):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise NlpRnnError(f"config: model.{name} must be in [0, 1), got {value}")
        for name in ("activation_reg", "temporal_activation_reg"):
            if getattr(self, name) < 0:
                raise NlpRnnError(f"config: model.{name} must be at least 0, got {getattr(self, name)}")
        if self.last_layer_size is not None:
            _positive("model.last_layer_size", self.last_layer_size)
        cuts = self.adaptive_softmax
        if cuts and (any(c <= 0 for c in cuts) or list(cuts) != sorted(set(cuts))):
            raise NlpRnnError(
                f"config: model.adaptive_softmax must be increasing positive cut-offs, got {list(cuts)}"
            )
        if cuts and self.tie_output:
            raise NlpRnnError("config: model.adaptive_softmax and model.tie_output do not go together")
        if self.tie_output and self.embedding_dim != self.top_size:
            raise NlpRnnError(
                f"config: model.tie_output needs embedding_dim ({self.embedding_dim}) == the top layer's size "
                f"({self.top_size}: model.last_layer_size, else hidden_size)"
            )

    @property
    def top_size(self) -> int:
        return self.last_layer_size or self.hidden_size

    @property
    def per_layer(self) -> bool:
        """Single-layer networks one above the other (per-layer sizes, locked dropout between layers),
        not torch's fused stack."""
        return self.locked_dropout or self.last_layer_size is not None

    @property
    def state_size(self) -> int:
        return max(self.hidden_size, self.top_size)


@dataclass
class LMState:
    h: torch.Tensor  # (L, B, H)
    c: Optional[torch.Tensor] = None  # (L, B, H), LSTM only

    def select(self, index: torch.Tensor) -> "LMState":
        return LMState(
            self.h.index_select(1, index), None if self.c is None else self.c.index_select(1, index)
        )

    def first(self, rows: int) -> "LMState":
        """The state of the batch's first `rows` rows (contiguous)."""
        return LMState(
            self.h[:, :rows].contiguous(), None if self.c is None else self.c[:, :rows].contiguous()
        )

    def detach(self) -> "LMState":
        """The same values without their history: gradients stop here (truncated BPTT)."""
        return LMState(self.h.detach(), None if self.c is None else self.c.detach())

    def as_hx(self):
        return self.h if self.c is None else (self.h, self.c)


@dataclass
class LMMemory:
    """Per-sequence constants of generation: the condition vectors that join every input, if any."""

    condition: Optional[torch.Tensor]  # (B, C)

    def select(self, index: torch.Tensor) -> "LMMemory":
        return LMMemory(None if self.condition is None else self.condition.index_select(0, index))


class LanguageModel(nn.Module):
    def __init__(
        self, cfg: LMModelConfig, vocab_size: int, num_conditions: int = 0, output: bool = True
    ) -> None:
        """`output=False`: the body only (embeddings and recurrent stack), e.g. a classifier's encoder."""
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=PAD)
        self.embed_dropout = dropout(
            cfg.dropout if cfg.embedding_dropout is None else cfg.embedding_dropout, cfg.locked_dropout
        )
        self.condition = nn.Embedding(num_conditions, cfg.condition_dim) if num_conditions else None
        self.condition_init = (
            nn.Linear(cfg.condition_dim, cfg.num_layers * cfg.state_size) if num_conditions else None
        )
        joins = self.condition is not None and cfg.condition_input
        inputs = cfg.embedding_dim + (cfg.condition_dim if joins else 0)
        between = cfg.dropout if cfg.layer_dropout is None else cfg.layer_dropout
        if cfg.per_layer:
            sizes = [cfg.hidden_size] * (cfg.num_layers - 1) + [cfg.top_size]
            self.rnn = LayerStack(cfg.cell, inputs, sizes, between, cfg.locked_dropout, cfg.weight_dropout)
        else:
            self.rnn = rnn_module(
                cfg.cell, inputs, cfg.hidden_size, cfg.num_layers, between, bidirectional=False
            )
        self.dropout = dropout(cfg.dropout, cfg.locked_dropout)
        if not output:
            self.output = None
        elif cfg.adaptive_softmax:
            if cfg.adaptive_softmax[-1] >= vocab_size - 1:
                raise NlpRnnError(
                    f"config: model.adaptive_softmax cut-offs must stay below the vocabulary ({vocab_size}), "
                    f"got {list(cfg.adaptive_softmax)}"
                )
            self.output = nn.AdaptiveLogSoftmaxWithLoss(
                cfg.top_size, vocab_size, list(cfg.adaptive_softmax), div_value=4.0, head_bias=True
            )
        else:
            self.output = nn.Linear(cfg.top_size, vocab_size)
        if cfg.tie_output and output:
            self.output.weight = self.embed.weight

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from the bottom: the embeddings (and condition layers), each recurrent layer, the
        output layer if any (tied weights counted once, with the embeddings) — for per-layer learning
        rates and gradual unfreezing."""
        seen: set[int] = set()

        def fresh(params) -> list[nn.Parameter]:
            out = [p for p in params if id(p) not in seen]
            seen.update(id(p) for p in out)
            return out

        groups = [fresh(self.embed.parameters())]
        groups[0] += fresh(
            p for m in (self.condition, self.condition_init) if m is not None for p in m.parameters()
        )
        if isinstance(self.rnn, LayerStack):
            groups += [fresh(layer.parameters()) for layer in self.rnn.layers]
        else:
            named = dict(self.rnn.named_parameters())
            groups += [
                fresh(p for n, p in named.items() if n.endswith(f"_l{k}")) for k in range(self.cfg.num_layers)
            ]
        if self.output is not None:
            groups.append(fresh(self.output.parameters()))
        return [g for g in groups if g]

    def int8_(self) -> None:
        """The recurrent stack and the linear layers in int8 (`nn.int8`), in place; for inference on the CPU."""
        if isinstance(self.rnn, LayerStack):
            self.rnn.int8_()
        else:
            self.rnn = Int8Stack(self.rnn)
        self.condition_init = int8_linear(self.condition_init)
        if isinstance(self.output, nn.Linear):  # an adaptive softmax stays in fp32
            self.output = int8_linear(self.output)

    @torch.no_grad()
    def init_output_bias(self, counts: torch.Tensor) -> None:
        """Output bias = log unigram frequencies (V,) of the training tokens, so training starts at the
        unigram loss instead of spending its first hundreds of steps pushing down the logits of pieces
        that never occur (the 256 byte pieces of a character model, say). An adaptive softmax keeps its own."""
        if not isinstance(self.output, nn.Linear):
            return
        prior = (counts.float() + 0.01) / (counts.sum() + 0.01 * counts.numel())
        self.output.bias.copy_(prior.log() - prior.log().mean())

    # ------------------------------------------------------------------ state

    def condition_vectors(self, labels: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if self.condition is None:
            return None
        if labels is None:
            raise NlpRnnError(
                "this language model is conditional: give a condition (label) for every sequence"
            )
        return self.condition(labels)  # (B, C)

    def initial_state(self, batch_size: int, condition: Optional[torch.Tensor] = None) -> LMState:
        """Zeros, or for a conditional model tanh(W c + b) per layer (the cell state of an LSTM starts at zero)."""
        cfg, weight = self.cfg, self.embed.weight
        if condition is None:
            h = weight.new_zeros(cfg.num_layers, batch_size, cfg.state_size)  # (L, B, H)
        else:
            h = (
                torch.tanh(self.condition_init(condition))
                .view(batch_size, cfg.num_layers, cfg.state_size)
                .transpose(0, 1)
                .contiguous()
            )
        return LMState(h, torch.zeros_like(h) if cfg.cell == "lstm" else None)

    # ------------------------------------------------------------------ whole sequences

    def _inputs(self, tokens: torch.Tensor, condition: Optional[torch.Tensor]) -> torch.Tensor:
        rows = embedding_rows_dropped(self.embed, tokens, self.cfg.embedding_row_dropout, self.training)
        x = self.embed_dropout(rows)  # (B, T, E)
        if condition is not None and self.cfg.condition_input:
            x = torch.cat([x, condition.unsqueeze(1).expand(-1, x.size(1), -1)], dim=-1)  # (B, T, E+C)
        return x

    def hidden(
        self, tokens: torch.Tensor, state: LMState, condition: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, LMState]:
        """tokens (B, T) from `state` -> top-layer outputs (B, T, H) and the state after the last column."""
        out, state = self._recurrent(tokens, state, condition)
        return self.dropout(out), state

    def _recurrent(
        self, tokens: torch.Tensor, state: LMState, condition: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, LMState]:
        """The top layer's outputs before the output dropout (B, T, H), and the new state."""
        x = self._inputs(tokens, condition)
        if isinstance(self.rnn, LayerStack):
            out, hx = self.rnn(x, state.as_hx())  # DropConnect inside, layer by layer
        else:
            out, hx = run_weight_dropped(self.rnn, self.cfg.weight_dropout, x, state.as_hx())
        return out, (LMState(*hx) if isinstance(hx, tuple) else LMState(hx))

    def loss(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        state: LMState,
        mask: Optional[torch.Tensor] = None,
        condition: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, int, LMState]:
        """Summed cross-entropy of targets (B, T) given inputs (B, T), over mask (B, T) if given, and the final state.

        Right padding needs no packing: a unidirectional network's outputs at real positions never see it.
        """
        raw, state = self._recurrent(inputs, state, condition)  # (B, T, H)
        out = self.dropout(raw)
        if mask is None:
            real, gold = out.reshape(-1, out.size(-1)), targets.reshape(-1)  # (B*T, H)
        else:
            real, gold = out[mask], targets[mask]  # (N, H): the output layer never sees padding
        loss = self._nll_sum(real, gold)
        if self.training and (self.cfg.activation_reg or self.cfg.temporal_activation_reg):
            loss = (
                loss + self.activation_penalty(raw, out, mask) * gold.numel()
            )  # per token, as the loss is divided
        return loss, gold.numel(), state

    def _nll_sum(self, out: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        """Summed negative log-likelihood of gold (N,) given top outputs (N, H)."""
        if isinstance(self.output, nn.AdaptiveLogSoftmaxWithLoss):
            return adaptive_nll_sum(self.output, out, gold)
        if not isinstance(self.output, nn.Linear):  # int8 (`int8_`): the logits, then the loss in fp32
            return cross_entropy_sum(self.output(out).float(), gold)
        return linear_cross_entropy_sum(out, self.output.weight, self.output.bias, gold)

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        """Top outputs (N, H) -> the full normalised distribution (N, V) as log-probabilities."""
        if isinstance(self.output, nn.AdaptiveLogSoftmaxWithLoss):
            return self._adaptive_log_prob(out)
        return torch.log_softmax(self.output(out).float(), dim=-1)

    def _adaptive_log_prob(self, out: torch.Tensor) -> torch.Tensor:
        """The adaptive softmax's full log-distribution (N, V) in fp32, at its own weights' type (a bf16 model
        reads bf16; torch's module cannot run under autocast)."""
        with torch.autocast(out.device.type, enabled=False):
            return self.output.log_prob(out.to(self.output.head.weight.dtype)).float()

    def activation_penalty(
        self, raw: torch.Tensor, dropped: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """AR + TAR (Merity et al. 2018): alpha * mean(dropped^2) + beta * mean((raw_t - raw_t-1)^2) over
        the real positions of the top layer's outputs (B, T, H); TAR over pairs of real neighbours."""
        real = (
            torch.ones(raw.shape[:2], dtype=torch.bool, device=raw.device) if mask is None else mask
        )  # (B, T)
        ar = dropped.float().pow(2)[real].mean()
        pairs = real[:, 1:] & real[:, :-1]  # (B, T-1)
        step = (raw[:, 1:] - raw[:, :-1]).float().pow(2)[pairs]
        tar = step.mean() if step.numel() else raw.new_zeros(())
        return self.cfg.activation_reg * ar + self.cfg.temporal_activation_reg * tar

    # ------------------------------------------------------------------ search protocol

    def start(self, batch: Batch) -> tuple[LMMemory, LMState, torch.Tensor]:
        """Prompts batch.src (B, P) (each starting with BOS), lengths batch.src_len, conditions batch.labels
        -> memory, the state after all but the last prompt token, and that last token (B,)."""
        condition = self.condition_vectors(batch.labels)
        state = self.initial_state(batch.size, condition)
        context = batch.src_len - 1  # (B,) tokens to read before generating
        rows = torch.arange(batch.size, device=batch.src.device)
        last = batch.src[rows, context]  # (B,)
        if int(context.max()) > 0:
            packed = pack_padded_sequence(
                self._inputs(batch.src, condition),
                context.clamp(min=1).cpu(),
                batch_first=True,
                enforce_sorted=False,
            )
            _, hx = self.rnn(packed, state.as_hx())
            read = LMState(*hx) if isinstance(hx, tuple) else LMState(hx)
            keep = (context > 0).view(1, -1, 1)  # rows whose prompt is only BOS keep the initial state
            state = LMState(
                torch.where(keep, read.h, state.h),
                None if state.c is None else torch.where(keep, read.c, state.c),
            )
        return LMMemory(condition if self.cfg.condition_input else None), state, last

    def cell_kernel(self, int8: bool = False):
        """The recurrent stack and output layer as a `CellKernel` for fast sampling, or None where the
        model cannot take one (DropConnect layer stacks, int8, an adaptive softmax, inputs that carry
        a condition vector)."""
        from nlp_rnn.nn.cell_kernel import CellKernel, cell_of

        plain = isinstance(self.rnn, nn.RNNBase) and cell_of(self.rnn) is not None
        if (
            not plain
            or not isinstance(self.output, nn.Linear)
            or (self.condition is not None and self.cfg.condition_input)
        ):
            return None
        return CellKernel(self.embed, self.rnn, self.output, int8)

    def step(self, prev: torch.Tensor, memory: LMMemory, state: LMState):
        """prev (B,) -> logits (B, V), the new state, no attention."""
        out, state = self.hidden(prev.unsqueeze(1), state, memory.condition)  # (B, 1, H)
        if isinstance(self.output, nn.AdaptiveLogSoftmaxWithLoss):  # log-probabilities serve as logits
            return self._adaptive_log_prob(out.squeeze(1)), state, None
        return self.output(out.squeeze(1)), state, None


def adaptive_nll_sum(
    asm: nn.AdaptiveLogSoftmaxWithLoss, out: torch.Tensor, gold: torch.Tensor
) -> torch.Tensor:
    """Summed negative log-likelihood of gold (N,) under an adaptive softmax given top outputs (N, H): the
    computation of torch's module with the same parameters, but its products may run under autocast (bf16,
    2.5x the fp32 product rate on an AVX-512-BF16 CPU) while the log-softmaxes and the sum stay fp32 (torch's
    module cannot run under autocast: it mixes the two types in one buffer)."""
    short = asm.shortlist_size
    head = torch.log_softmax(asm.head(out).float(), dim=-1)  # (N, shortlist + clusters)
    cluster = torch.bucketize(
        gold, torch.tensor(asm.cutoffs, device=gold.device), right=True
    )  # (N,) 0 = head
    column = torch.where(cluster == 0, gold, short + cluster - 1)
    logp = head.gather(1, column.unsqueeze(1)).squeeze(1)  # (N,)
    for i, tail in enumerate(asm.tail):
        rows = (cluster == i + 1).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        inside = torch.log_softmax(tail(out.index_select(0, rows)).float(), dim=-1)  # (n, cluster size)
        local = (gold.index_select(0, rows) - asm.cutoffs[i]).unsqueeze(1)
        logp = logp.index_add(0, rows, inside.gather(1, local).squeeze(1))
    return -logp.sum()
