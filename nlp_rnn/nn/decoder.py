"""The recurrent decoder: `memory`, `init_state`, `step`, and the teacher-forced `forward`.

B batch, S source length, T target length, E embedding, H decoder hidden, Dv encoder output size,
G gate width (1, 3 or 4 times H), L layers, V target vocabulary.

Speed: everything that does not depend on the previous step is done for all steps at once —
the target embeddings and their share of the first layer's input projection (`_precompute`),
the attention keys (`memory`), and the output projection (`logits`, called by the model on the
real target positions only). The per-step loop holds the recurrent cells and the attention; in
training, the gradients of the weights it multiplies at every step are computed once after the
loop's backward, over all steps' rows (`nn.deferred`), not step by step.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nlp_rnn.nn import deferred, fast
from nlp_rnn.nn.attention import build_attention
from nlp_rnn.nn.cells import cell_update
from nlp_rnn.nn.dropout import Dropout
from nlp_rnn.nn.encoder import EncoderOutput
from nlp_rnn.nn.seq2seq_config import Seq2SeqModelConfig
from nlp_rnn.tokenizer import PAD

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


@dataclass
class Memory:
    """Per-sentence constants of decoding, computed once from the encoder output."""

    values: torch.Tensor  # (B, S, Dv)
    mask: torch.Tensor  # (B, S)
    keys: Optional[torch.Tensor]  # (B, S, A) attention keys; None without attention
    context: Optional[torch.Tensor]  # (B, Dv) fixed context vector when there is no attention
    static_gates: Optional[torch.Tensor]  # (B, G) that context's share of the first layer's input gates
    # A vocabulary shortlist for the whole batch (`nn.shortlist`): the target ids (K,) the output layer
    # scores, and that layer restricted to them; None: the whole vocabulary.
    vocab: Optional[torch.Tensor] = None
    output: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # (B, K) 0 on the columns each sentence's own list holds, -inf elsewhere: added to the logits (an add
    # of a float table is several times faster per step than a masked fill of a boolean one)
    penalty: Optional[torch.Tensor] = None
    # Decoder rows per row of this memory: 1, or a sentence's K beams (consecutive rows) sharing one copy of it
    group: int = 1

    def for_beams(self, beams: int) -> Optional["Memory"]:
        """The memory that each sentence's `beams` consecutive decoder rows share (beam search), instead of a
        copy per beam: the attention reads one copy of the keys per sentence and takes the beams' contexts in
        one product. None without attention (its fixed context joins each row's input: copy per beam)."""
        return None if self.keys is None else replace(self, group=self.group * beams)

    def select(self, index: torch.Tensor) -> "Memory":
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return replace(
            self,
            values=pick(self.values),
            mask=pick(self.mask),
            keys=pick(self.keys),
            context=pick(self.context),
            static_gates=pick(self.static_gates),
            penalty=pick(self.penalty),
        )

    def keep_first(self, keep: torch.Tensor, holes: torch.Tensor, fillers: torch.Tensor) -> "Memory":
        """`select(keep)` where keep (n,) is the rows 0..n-1 with rows `fillers` in the places `holes` (search's
        `_without_done`), made in place: only those rows move, and the first n rows are a view. For a search's memory,
        made by the model's `start` for it alone, one row per decoder row (not `for_beams`): the encoder states and
        what was computed from them, shared with no one. The mask may be the batch's own (`Batch.src_mask`), so it is
        copied (a few bytes a row)."""
        assert self.group == 1, "keep_first takes decoder rows; a memory shared by beams selects sentences"
        moved: set[int] = set()

        def move(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            if t is None:
                return None
            if holes.numel() and id(t) not in moved:  # (dot attention's keys are its values: moved once)
                t[holes] = t[fillers]
                moved.add(id(t))
            return t[: keep.numel()]

        return replace(
            self,
            values=move(self.values),
            mask=self.mask.index_select(0, keep),
            keys=move(self.keys),
            context=move(self.context),
            static_gates=move(self.static_gates),
            penalty=move(self.penalty),
        )


@dataclass
class DecoderState:
    """Recurrent state; beam search reorders it with `select` without knowing the cell type."""

    h: tuple[torch.Tensor, ...]  # per layer (B, H)
    c: Optional[tuple[torch.Tensor, ...]]  # per layer (B, H), LSTM only
    feed: torch.Tensor  # (B, H) previous attentional vector (input feeding)

    def select(self, index: torch.Tensor) -> "DecoderState":
        h = tuple(x.index_select(0, index) for x in self.h)
        c = None if self.c is None else tuple(x.index_select(0, index) for x in self.c)
        return DecoderState(h, c, self.feed.index_select(0, index))


class Cell(nn.Module):
    """One recurrent layer whose input weights are split by input part (e.g. emb, ctx, feed).

    Separate leaf weights (instead of slices of one matrix) let the static parts be projected for
    all steps at once, and keep per-step backward free of slice copies. Initialised like torch's cells.
    """

    def __init__(self, cell: str, inputs: dict[str, int], hidden: int) -> None:
        super().__init__()
        gates = GATES[cell] * hidden
        bound = hidden**-0.5
        self.weight_in = nn.ParameterDict(
            {
                name: nn.Parameter(torch.empty(gates, size).uniform_(-bound, bound))
                for name, size in inputs.items()
                if size > 0
            }
        )
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(gates).uniform_(-bound, bound))
        # Vanilla cells keep the textbook's single bias; GRU needs both (b_hn sits inside r * (.)).
        self.bias_hh = (
            nn.Parameter(torch.empty(gates).uniform_(-bound, bound)) if cell in ("gru", "lstm") else None
        )
        self.int8: Optional[dict] = None  # name -> int8 product, set by `int8.quantize` for inference

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x's share of the gates through input part `name` (or `hh`, the recurrent weights), with that part's bias."""
        if self.int8 is not None:
            return self.int8[name](x)
        weight, bias = self.weights(name)
        return F.linear(x, weight, bias)

    def weights(self, name: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The weight and bias of input part `name`: `emb`/`below` carry the input bias, `hh` the recurrent one."""
        if name == "hh":
            return self.weight_hh, self.bias_hh
        return self.weight_in[name], self.bias_ih if name in ("emb", "below") else None


class Decoder(nn.Module):
    def quantize_(self, linear: Callable[..., nn.Module]) -> None:
        """Runs every matrix product through `linear(weight, bias)` (int8 kernels), for inference only."""
        for cell in self.cells:
            cell.int8 = {name: linear(*cell.weights(name)) for name in [*cell.weight_in.keys(), "hh"]}
        if self.attention is not None:
            self.attention.quantize_(linear)
        self.combine, self.bridge = (
            None if m is None else linear(m.weight, m.bias) for m in (self.combine, self.bridge)
        )
        self.output = linear(self.output.weight, self.output.bias, keep_rows=True)  # shortlists take its rows

    def __init__(self, cfg: Seq2SeqModelConfig, vocab_size: int, encoder_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        size, emb = cfg.decoder_hidden, cfg.embedding_dim
        self.embed = nn.Embedding(vocab_size, emb, padding_idx=PAD)
        self.embed_dropout = Dropout(cfg.dropout if cfg.embedding_dropout is None else cfg.embedding_dropout)
        self.dropout = Dropout(cfg.dropout)
        self.has_attention = cfg.attention != "none"
        first = {
            "emb": emb,
            "ctx": 0 if self.has_attention else encoder_size,  # the textbook fixed context joins every input
            "feed": size if cfg.input_feeding else 0,  # input feeding: the previous attentional vector
        }
        self.cells = nn.ModuleList(
            Cell(cfg.cell, first if i == 0 else {"below": size}, size) for i in range(cfg.decoder_layers)
        )
        self.bridge = nn.Linear(encoder_size, size) if cfg.bridge else None
        self.attention = (
            build_attention(cfg.attention, encoder_size, size, cfg.attention_dim)
            if self.has_attention
            else None
        )
        self.combine = nn.Linear(size + encoder_size, size)  # attentional vector from [hidden; context]
        self.output = nn.Linear(size, vocab_size, bias=False)
        if cfg.tie_output:
            self.output.weight = self.embed.weight

    # ------------------------------------------------------------------ set-up per sentence

    def memory(self, enc: EncoderOutput) -> Memory:
        if self.has_attention:
            return Memory(enc.states, enc.mask, self.attention.keys(enc.states), None, None)
        static = self.cells[0].project("ctx", enc.final)  # (B, G)
        return Memory(enc.states, enc.mask, None, enc.final, static)

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        batch, size = enc.final.size(0), self.cfg.decoder_hidden
        if self.bridge is not None:
            h0 = torch.tanh(self.bridge(enc.final))  # (B, H)
        else:
            h0 = enc.final.new_zeros(batch, size)
        hs = tuple(h0 for _ in self.cells)
        cs = hs if self.cfg.cell == "lstm" else None
        return DecoderState(hs, cs, enc.final.new_zeros(batch, size))

    # ------------------------------------------------------------------ per step

    def _precompute(self, tokens: torch.Tensor, memory: Memory) -> torch.Tensor:
        """tokens (B, T) -> the embedding's (and fixed context's) share of layer-0 input gates (B, T, G); a
        step's tokens (B,) -> (B, G)."""
        cell0 = self.cells[0]
        embedded = self.embed(tokens)  # (B, T, E)
        if self.training:  # (a module call costs a decoding step several µs, even one that does nothing)
            embedded = self.embed_dropout(embedded)
        gates = cell0.project("emb", embedded)  # (B, T, G)
        if memory.static_gates is not None:
            gates = gates + (memory.static_gates if tokens.dim() == 1 else memory.static_gates.unsqueeze(1))
        return gates

    def _deferred(self, memory: Memory, steps: int) -> dict:
        """For one teacher-forced pass of `steps` steps: every product the loop makes at each step, with its
        weight gradient computed once after the loop (`nn.deferred`); keyed (layer, input part) and
        "combine"; "attention": the attention's (`Attention.deferred_pass`: its query, scores and context)."""
        products: dict = {
            (i, name): deferred.DeferredLinear(*cell.weights(name))
            for i, cell in enumerate(self.cells)
            for name in [*cell.weight_in.keys(), "hh"]
            if name not in ("emb", "ctx")  # these two are projected once for all steps
        }
        products["combine"] = deferred.DeferredLinear(self.combine.weight, self.combine.bias)
        if self.has_attention:
            products["attention"] = self.attention.deferred_pass(memory.keys, memory.values, steps)
        return products

    def _advance(
        self, pre: torch.Tensor, memory: Memory, state: DecoderState, products: Optional[dict] = None
    ):
        """One time step from precomputed layer-0 gates pre (B, G); returns attentional vector (B, H).
        `products`: the pass's deferred products (`_deferred`), else each module's own."""

        def project(i: int, name: str, x: torch.Tensor) -> torch.Tensor:
            return self.cells[i].project(name, x) if products is None else products[(i, name)](x)

        x, hs, cs = None, [], []
        for i in range(len(self.cells)):
            h, c = state.h[i], None if state.c is None else state.c[i]
            if i == 0:
                gi = pre
                if self.cfg.input_feeding:
                    gi = pre + project(0, "feed", state.feed)  # (B, G)
            else:
                gi = project(i, "below", self.dropout(x) if self.training else x)
            gh = project(i, "hh", h)  # (B, G)
            x, c = cell_update(self.cfg.cell, gi, gh, h, c)
            hs.append(x)
            cs.append(c)
        if self.has_attention:
            pass_products = None if products is None else products["attention"]
            context, weights = self.attention(
                x, memory.keys, memory.values, memory.mask, pass_products, memory.group
            )  # (B, Dv), (B, S)
        else:
            context, weights = memory.context, None
        combine = self.combine if products is None else products["combine"]
        joined = torch.cat([x, context], dim=1)
        attentional = fast.tanh(combine(self.dropout(joined) if self.training else joined))  # (B, H)
        new_state = DecoderState(tuple(hs), tuple(cs) if state.c is not None else None, attentional)
        return attentional, new_state, weights

    def step(self, prev: torch.Tensor, memory: Memory, state: DecoderState):
        """prev (B,) previous tokens -> logits (B, V), new state, attention weights (B, S) or None.

        With a shortlist, logits (B, K) over its token ids `memory.vocab` (the searches map them back)."""
        pre = self._precompute(prev, memory)  # (B, G)
        attentional, state, weights = self._advance(pre, memory, state)
        if memory.output is None:
            return self.output(attentional), state, weights
        # (B, K), a new tensor, in float32 (the searches' type) before the penalty: a bf16 model's bf16 logits took
        # an add in bf16 (each element to float32 and back) and then a copy to float32
        logits = memory.output(attentional).float()
        penalty = memory.penalty  # per sentence: (rows / group, columns), float32
        logits.view(penalty.size(0), -1, logits.size(-1)).add_(penalty.unsqueeze(1))
        return logits, state, weights

    @property
    def vocab_size(self) -> int:
        return self.embed.num_embeddings

    def shortlisted(
        self,
        memory: Memory,
        vocab: torch.Tensor,
        allowed: torch.Tensor,
        kept: Optional[dict] = None,
        common: Optional[torch.Tensor] = None,
    ) -> Memory:
        """`memory` whose steps score only the target ids `vocab` (K,) (the output layer's rows for them; in
        `memory.vocab` in the order of the logits' columns), each sentence only those of its columns `allowed`
        (B, K) marks. `kept`: where the batches of one call with one `vocab` keep the restricted layer, built by
        the first of them. `common`: ids in every `vocab` (the shortlist's `always`), whose int8 rows the output
        layer packs once (`Int8Linear.rows`)."""
        output = self.output
        if kept is not None and kept.get("vocab") is vocab:
            restricted = kept["output"]
        elif isinstance(output, nn.Linear):
            weight = output.weight.index_select(0, vocab)  # (K, H)
            bias = None if output.bias is None else output.bias.index_select(0, vocab)
            restricted = lambda x: F.linear(x, weight, bias)  # noqa: E731
        else:  # int8: the rows of the original weight, packed for these columns (several ms)
            restricted = output.rows(vocab, common)
        if kept is not None:
            kept.update(vocab=vocab, output=restricted)
        order = getattr(restricted, "columns", None)  # int8 rows packed in two parts: the columns' own order
        if order is not None:
            vocab, allowed = vocab[order], allowed[:, order.to(allowed.device)]
        # float32, as `step` makes the logits before adding it
        penalty = torch.zeros(allowed.shape, device=allowed.device).masked_fill_(~allowed, float("-inf"))
        return replace(memory, vocab=vocab, output=restricted, penalty=penalty)

    # ------------------------------------------------------------------ whole sequences

    def forward(
        self, tgt_in: torch.Tensor, memory: Memory, state: DecoderState, teacher_forcing: float = 1.0
    ) -> torch.Tensor:
        """Teacher-forced decoding of tgt_in (B, T) -> attentional vectors (B, T, H).

        With teacher_forcing < 1 each sentence feeds its own greedy prediction instead of the gold
        previous token with probability 1 - teacher_forcing at every step (scheduled sampling).
        """
        pre = self._precompute(tgt_in, memory)  # (B, T, G)
        products = (
            self._deferred(memory, tgt_in.size(1))
            if deferred.applies(self) and not fast.exporting()
            else None
        )
        sampling = teacher_forcing < 1.0 and self.training
        if sampling:
            gold = torch.rand(tgt_in.shape, device=tgt_in.device) < teacher_forcing  # (B, T)
        outputs = []
        for t, pre_t in enumerate(pre.unbind(1)):  # unbind: one backward op, not a zero-filled copy per step
            if sampling and t > 0:
                with torch.no_grad():
                    predicted = self.output(outputs[-1]).argmax(-1)  # (B,)
                tokens = torch.where(gold[:, t], tgt_in[:, t], predicted)
                pre_t = self._precompute(tokens.unsqueeze(1), memory).squeeze(1)
            attentional, state, _ = self._advance(pre_t, memory, state, products)
            outputs.append(attentional)
        return torch.stack(outputs, dim=1)  # (B, T, H)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(hidden)  # (..., V)
