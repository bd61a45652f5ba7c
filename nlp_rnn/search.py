"""Greedy search, beam search and sampling over any model that follows the `Generative` protocol.

B batch, S source (or prompt) length, K beam, V vocabulary, t steps so far.
A model encodes a batch once (`start`: the translation model's encoder output and attention keys,
a language model's state after the prompt), then advances one token at a time (`step`). Memory and
state only need `select(index)`, so beam search reorders them without knowing what they hold. A memory may
also offer `for_beams(K)`: one copy per sentence that its K beams (consecutive rows) share, so that beam search
neither copies it per beam nor reorders it (then its `select` takes sentences, not rows).
Sequences that are done leave the batch, so the remaining ones decode in a smaller batch.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import torch

from nlp_rnn.data import Batch
from nlp_rnn.tokenizer import EOS

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    tokens: list[int]  # ends in EOS, or stops at the maximum length
    score: float  # the ranking score (length-normalised for beam search)
    log_prob: float  # summed token log-probabilities
    attention: Optional[torch.Tensor] = field(
        default=None, repr=False
    )  # (len(tokens), S) over real source tokens


@dataclass(frozen=True)
class SearchOptions:
    beam_size: int = 5
    n_best: int = 1
    max_len_a: float = 1.5  # maximum output length = a * source pieces + b ...
    max_len_b: int = 10
    max_length: int = 256  # ... and never more than this
    min_length: int = 0  # EOS is not allowed before this many tokens
    length_penalty: float = 1.0  # GNMT alpha: score = log p / ((5 + len) / 6) ** alpha
    length_norm: str = "gnmt"  # gnmt | average (log p / len) | none
    no_repeat_ngram: int = 0  # forbid repeating any n-gram of this size (0: off)
    attention: bool = False  # return attention weights


class Generative(Protocol):
    """What the searches need of a model."""

    def start(self, batch: Batch) -> tuple[Any, Any, torch.Tensor]:
        """-> (memory, state, first input tokens (B,)); memory and state have `select(index)`."""

    def step(
        self, prev: torch.Tensor, memory: Any, state: Any
    ) -> tuple[torch.Tensor, Any, Optional[torch.Tensor]]:
        """prev (B,) -> logits (B, V), the new state, attention weights (B, S) or None."""


def logsumexp(x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """torch.logsumexp over the last dimension, without its slow path: x86 `exp` of an input below about
    -87 (underflow) or of -inf runs 5-40x slower than of ordinary inputs, and masked logits (-inf) are
    exactly that. Terms below e^-80 of the largest are counted as e^-80 (at most K * 1.8e-35 of a sum of
    at least 1: below float32 resolution).

    `overwrite`: x is the scratch space (the same numbers). A search step's logits are a large new tensor (320
    rows of a 4,000-column shortlist: 5 MB), and a new one for `x - top` costs more in first touches of fresh
    memory than the subtraction itself (1.7 ms against 0.2, AMX Xeon)."""
    top = x.amax(-1, keepdim=True).clamp_min_(-1e30)  # (R, 1); a row of -inf only stays finite
    shifted = x.sub_(top) if overwrite else x - top
    return shifted.clamp_min_(-80.0).exp_().sum(-1).log_().add_(top.squeeze(-1))


def columns_of(memory: Any) -> Optional[torch.Tensor]:
    """The token ids that the columns of a step's logits stand for (K,), not necessarily sorted: a vocabulary
    shortlist (`nn.shortlist`); None when the logits cover the whole vocabulary."""
    return getattr(memory, "vocab", None)


def _column(cols: Optional[torch.Tensor], token: int) -> int:
    """The logits column of `token` (always in a shortlist: the special tokens are)."""
    return token if cols is None else int((cols == token).nonzero()[0])


def max_lengths(src_len: torch.Tensor, opts: SearchOptions) -> torch.Tensor:
    """(B,) output budget from the source length (which counts the appended EOS)."""
    pieces = (src_len - 1).clamp(min=1).float()
    return (opts.max_len_a * pieces + opts.max_len_b).floor().long().clamp(min=1, max=opts.max_length)


def _normalise(log_prob: torch.Tensor, length: torch.Tensor, opts: SearchOptions) -> torch.Tensor:
    if opts.length_norm == "average":
        return log_prob / length.float()
    if opts.length_norm == "gnmt" and opts.length_penalty != 0:
        return log_prob / ((5.0 + length.float()) / 6.0) ** opts.length_penalty
    return log_prob


def _trim_attention(weights: torch.Tensor, length: int, src_real: int) -> torch.Tensor:
    return weights[:length, :src_real].clone()


def _without_done(
    done: torch.Tensor, active: torch.Tensor, prev: torch.Tensor, memory: Any, state: Any, move: bool = False
):
    """Rows that are done (b,) leave the batch: the others' row ids, last tokens, memory and state.

    `move` (greedy search): the rows that stay keep their places, except that the last ones fill the places of those
    that leave, and a memory that offers `keep_first` (the translation decoder's: the encoder states and attention
    keys, megabytes for a large batch) moves only those few rows within its own tensors instead of copying all the
    others (a row's numbers depend on its place in the batch only to float rounding, as on the batch's size).
    Otherwise the rows that stay keep their order; sampling needs it: its random draws go to the rows in order."""
    if not bool(done.any()):
        return active, prev, memory, state
    alive = ~done
    keep_first = getattr(memory, "keep_first", None) if move else None
    if keep_first is None:
        keep = alive.nonzero().squeeze(1)
        return active[keep], prev[keep], memory.select(keep), state.select(keep)
    n = int(alive.sum())
    holes = done[:n].nonzero().squeeze(1)  # places of leaving rows among the first n
    fillers = alive[n:].nonzero().squeeze(1) + n  # as many staying rows after them
    keep = torch.arange(n, device=done.device)
    keep[holes] = fillers
    return active[keep], prev[keep], keep_first(keep, holes, fillers), state.select(keep)


@torch.no_grad()
def greedy(model: Generative, batch: Batch, opts: SearchOptions = SearchOptions()) -> list[Hypothesis]:
    """The most probable next token at every step, for a whole batch at once."""
    memory, state, prev = model.start(batch)
    dev = prev.device
    limit = max_lengths(batch.src_len, opts).to(dev)  # (B,)
    size, steps = batch.size, int(limit.max())
    active = torch.arange(size, device=dev)  # rows of the original batch still decoding
    tokens = torch.zeros(size, steps, dtype=torch.long, device=dev)
    lengths = torch.zeros(size, dtype=torch.long, device=dev)
    scores = torch.zeros(size, device=dev)
    weights = torch.zeros(size, steps, batch.src.size(1), device=dev) if opts.attention else None
    cols = columns_of(memory)
    eos = _column(cols, EOS)
    rows = slice(None)  # the rows still decoding: all of them (a slice) until the first one is done
    budgets = set(limit.tolist())
    for t in range(steps):
        logits, state, att = model.step(prev, memory, state)  # (b, V), or (b, K) over a shortlist
        logits = logits.float()
        if t < opts.min_length:
            logits[:, eos] = NEG_INF
        best, prev = logits.max(dim=-1)  # (b,) argmax of logits == argmax of log-probabilities
        if cols is not None:
            prev = cols[prev]
        tokens[rows, t] = prev
        gain = best - logsumexp(logits, overwrite=True)  # (logits are not read after this)
        if isinstance(rows, slice):
            scores += gain
        else:
            scores.index_add_(0, rows, gain)
        if weights is not None and att is not None:
            weights[rows, t] = att.float()
        done = prev == EOS
        if t + 1 in budgets:  # a row's output budget ends here
            done |= limit[rows] <= t + 1
        finished = int(done.sum())  # one host sync a step
        if finished == done.numel():
            lengths[rows] = t + 1
            break
        if finished:
            lengths[active[done]] = t + 1
            active, prev, memory, state = _without_done(done, active, prev, memory, state, move=True)
            rows = active
    else:  # (the last step ends the longest budget, so every row is done before this)
        lengths[rows] = steps
    tokens, lengths, scores, src_len = (
        tokens.tolist(),
        lengths.tolist(),
        scores.tolist(),
        batch.src_len.tolist(),
    )
    weights = None if weights is None else weights.cpu()
    hyps = []
    for i in range(size):
        n = lengths[i]
        attention = None if weights is None else _trim_attention(weights[i], n, src_len[i])
        hyps.append(Hypothesis(tokens[i][:n], scores[i], scores[i], attention))
    return hyps


def _banned_ngrams(seqs: torch.Tensor, n: int, vocab: int) -> torch.Tensor:
    """seqs (R, t) -> (R, V) True where the next token would repeat an n-gram already in the row."""
    rows, length = seqs.shape
    banned = torch.zeros(rows, vocab, dtype=torch.bool, device=seqs.device)
    if n <= 0 or length < n:
        return banned
    windows = seqs.unfold(1, n, 1)  # (R, t-n+1, n)
    prefix = seqs[:, length - n + 1 :] if n > 1 else seqs[:, :0]  # (R, n-1)
    match = (windows[:, :, : n - 1] == prefix.unsqueeze(1)).all(-1)  # (R, t-n+1)
    row_idx, win_idx = match.nonzero(as_tuple=True)
    banned[row_idx, windows[row_idx, win_idx, n - 1]] = True
    return banned


def _merge_finished(
    rows: torch.Tensor,
    ends: torch.Tensor,
    logp: torch.Tensor,
    seq: torch.Tensor,
    t: int,
    opts: SearchOptions,
    finished: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    attention: Optional[tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Beam search: the candidates that end at step t (`ends` (h, K), their log-probabilities and sequences
    (h, K, t+1)) join the finished sets of the original batch's `rows` (h,), which keep their best K by
    normalised score. `finished` = (sequences (B, K, T), lengths, log-probabilities, scores (B, K)), updated
    in place; `attention` = (the finished weights (B, K, T, S), the candidates' (h, K, t+1, S)) or None."""
    fin_seq, fin_len, fin_logp, fin_score = finished
    h, k = ends.shape
    steps = fin_seq.size(2)
    length = torch.full((h, k), t + 1, dtype=torch.long, device=ends.device)
    new_score = _normalise(logp, length, opts).masked_fill(~ends, NEG_INF)
    best_score, pick = torch.cat([fin_score[rows], new_score], dim=1).topk(k, dim=1)  # of (h, 2K)
    padded = seq.new_zeros(h, k, steps)
    padded[:, :, : t + 1] = seq
    pool_seq = torch.cat([fin_seq[rows], padded], dim=1)  # (h, 2K, T)
    fin_seq[rows] = pool_seq.gather(1, pick.unsqueeze(2).expand(-1, -1, steps))
    fin_len[rows] = torch.cat([fin_len[rows], length], dim=1).gather(1, pick)
    fin_logp[rows] = torch.cat([fin_logp[rows], logp.masked_fill(~ends, NEG_INF)], dim=1).gather(1, pick)
    fin_score[rows] = best_score
    if attention is not None:
        fin_att, att = attention
        width = fin_att.size(3)
        new_att = fin_att.new_zeros(h, k, steps, width)
        new_att[:, :, : t + 1] = att
        pool_att = torch.cat([fin_att[rows], new_att], dim=1)  # (h, 2K, T, S)
        fin_att[rows] = pool_att.gather(1, pick.view(h, k, 1, 1).expand(-1, -1, steps, width))


def shared_by_beams(memory, beams: int):
    """The memory's one copy per sentence that its `beams` consecutive rows share (its `for_beams`), or None
    where it offers none (then beam search copies it per beam)."""
    for_beams = getattr(memory, "for_beams", None)
    return None if for_beams is None else for_beams(beams)


@torch.no_grad()
def beam_search(
    model: Generative, batch: Batch, opts: SearchOptions = SearchOptions()
) -> list[list[Hypothesis]]:
    """Batched beam search; per sentence the `n_best` hypotheses, best first.

    Alive hypotheses always fill K slots (the top K of all K*V extensions); an extension ending
    in EOS moves to the finished set and is not extended further. A sentence is done when its
    worst kept finished hypothesis beats anything its best alive one could still reach, or at
    its maximum length. With K = 1 and no length normalisation this is exactly greedy search.
    """
    k, size = opts.beam_size, batch.size
    memory, state, first = model.start(batch)
    dev = first.device
    expand = torch.arange(size, device=dev).repeat_interleave(k)  # (B*K,)
    # A sentence's K beams (consecutive rows) share its memory where the model allows it, else a copy per beam.
    shared = shared_by_beams(memory, k)
    memory = memory.select(expand) if shared is None else shared
    state, prev = state.select(expand), first.index_select(0, expand)
    limit_all = max_lengths(batch.src_len, opts).to(dev)  # (B,)
    steps, src_width = int(limit_all.max()), batch.src.size(1)

    # Finished hypotheses of every sentence in the original batch.
    fin_seq = torch.zeros(size, k, steps, dtype=torch.long, device=dev)
    fin_len = torch.ones(size, k, dtype=torch.long, device=dev)
    fin_score = torch.full((size, k), NEG_INF, device=dev)
    fin_logp = torch.full((size, k), NEG_INF, device=dev)
    fin_att = torch.zeros(size, k, steps, src_width, device=dev) if opts.attention else None

    active = torch.arange(size, device=dev)  # sentences still searching
    alive_logp = torch.full((size, k), NEG_INF, device=dev)
    alive_logp[:, 0] = 0.0  # one live start hypothesis per sentence
    alive_seq = torch.zeros(size * k, 0, dtype=torch.long, device=dev)  # (b*K, t)
    alive_att = torch.zeros(size * k, 0, src_width, device=dev) if opts.attention else None
    beam_rows = torch.arange(k, device=dev)
    cols = columns_of(memory)
    eos = _column(cols, EOS)

    for t in range(steps):
        b = active.numel()
        limit = limit_all[active]  # (b,)
        logits, state, att = model.step(prev, memory, state)  # (b*K, V), or (b*K, K') over a shortlist
        vocab = logits.size(-1)
        logits = logits.float()
        if t < opts.min_length:
            logits[:, eos] = NEG_INF
        if opts.no_repeat_ngram > 0:
            if cols is None:
                banned = _banned_ngrams(alive_seq, opts.no_repeat_ngram, vocab)
            else:
                banned = _banned_ngrams(alive_seq, opts.no_repeat_ngram, int(cols.max()) + 1)[:, cols]
            logits.masked_fill_(banned, NEG_INF)
        # The best K extensions of a sentence are among the best K of each of its rows, so only
        # K*K candidates are scored: no (b, K, V) sums, no full log-softmax.
        per_row = min(k, vocab)
        row_top, row_token = logits.topk(per_row, dim=-1)  # (b*K, k')
        # (b*K, k'); the logits are not read after this
        row_logp = row_top - logsumexp(logits, overwrite=True).unsqueeze(1)
        if cols is not None:
            row_token = cols[row_token]
        cand = (alive_logp.view(-1, 1) + row_logp).view(b, k * per_row)  # (b, K*k')
        top_logp, flat = cand.topk(k, dim=1)  # (b, K)
        beam = flat // per_row  # (b, K) which alive row each candidate extends
        token = row_token.view(b, k * per_row).gather(1, flat)  # (b, K)
        origin = (torch.arange(b, device=dev).unsqueeze(1) * k + beam).view(
            -1
        )  # (b*K,) rows the candidates extend
        seq = torch.cat([alive_seq.index_select(0, origin), token.view(-1, 1)], dim=1)  # (b*K, t+1)
        if alive_att is not None:
            alive_att = torch.cat(
                [alive_att.index_select(0, origin), att.float().index_select(0, origin).unsqueeze(1)], dim=1
            )
        at_limit = (limit <= t + 1).unsqueeze(1)  # (b, 1) the last step ends every hypothesis
        ends = ((token == EOS) | at_limit) & (top_logp > NEG_INF)  # (b, K)

        # Merge the candidates that end here into the finished set (top K by normalised score), for the
        # sentences that have any (the others' finished sets would keep what they hold).
        hit = ends.any(dim=1).nonzero().squeeze(1)  # (h,) rows of this step's batch
        if hit.numel():
            _merge_finished(
                active[hit],
                ends[hit],
                top_logp[hit],
                seq.view(b, k, t + 1)[hit],
                t,
                opts,
                (fin_seq, fin_len, fin_logp, fin_score),
                None if fin_att is None else (fin_att, alive_att.view(b, k, t + 1, src_width)[hit]),
            )

        alive_logp = top_logp.masked_fill(ends, NEG_INF)  # (b, K)
        best_alive = alive_logp.max(dim=1).values  # (b,)
        reachable = _normalise(best_alive, limit, opts) if opts.length_norm != "none" else best_alive
        worst_kept = fin_score[active].min(dim=1).values  # (b,) -inf until K are finished
        done = at_limit.squeeze(1) | (best_alive == NEG_INF) | (worst_kept >= reachable)
        if bool(done.all()):
            break
        state = state.select(origin)
        alive_seq, prev = seq, token.view(-1)
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)  # (b',)
            rows = (keep.unsqueeze(1) * k + beam_rows).view(-1)  # (b'*K,)
            active, alive_logp = active[keep], alive_logp[keep]
            memory, state = memory.select(rows if shared is None else keep), state.select(rows)
            alive_seq, prev = alive_seq[rows], prev[rows]
            if alive_att is not None:
                alive_att = alive_att[rows]

    keep = min(opts.n_best, k)
    fin_seq, fin_len, fin_logp = (
        fin_seq[:, :keep].tolist(),
        fin_len[:, :keep].tolist(),
        fin_logp[:, :keep].tolist(),
    )
    fin_score, src_len = fin_score[:, :keep].tolist(), batch.src_len.tolist()
    fin_att = None if fin_att is None else fin_att[:, :keep].cpu()
    results = []
    for i in range(size):
        hyps = []
        for j in range(keep):
            if fin_score[i][j] == NEG_INF:
                continue
            n = fin_len[i][j]
            attention = None if fin_att is None else _trim_attention(fin_att[i, j], n, src_len[i])
            hyps.append(Hypothesis(fin_seq[i][j][:n], fin_score[i][j], fin_logp[i][j], attention))
        results.append(hyps)
    return results


def search(model: Generative, batch: Batch, opts: SearchOptions) -> list[list[Hypothesis]]:
    """Greedy for beam size 1 (the same result, faster), beam search otherwise."""
    if opts.beam_size == 1:
        return [[h] for h in greedy(model, batch, opts)]
    return beam_search(model, batch, opts)


@dataclass(frozen=True)
class SampleOptions:
    temperature: float = 1.0  # 0: the most probable token (greedy)
    top_k: int = 0  # keep only the k most probable tokens (0: all)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches p (nucleus sampling)
    max_tokens: int = 256
    banned: tuple[int, ...] = ()  # never drawn (e.g. the unknown token of a word-level model)


def _filter(logits: torch.Tensor, opts: SampleOptions) -> torch.Tensor:
    """logits (b, V) scaled by the temperature, -inf outside top-k and the top-p nucleus."""
    logits = logits.float()
    if opts.temperature != 1.0:  # x / 1 is x: the default temperature skips a call per step
        logits = logits / max(opts.temperature, 1e-4)  # a vanishing temperature stays finite (near greedy)
    if 0 < opts.top_k < logits.size(-1):
        kth = logits.topk(opts.top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if opts.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        outside = probs.cumsum(dim=-1) - probs >= opts.top_p
        outside[:, 0] = False  # the most probable token always stays (even for a p that rounds to 0)
        logits = logits.scatter(1, order, sorted_logits.masked_fill(outside, NEG_INF))
    return logits


@torch.no_grad()
def sample(
    model: Generative,
    batch: Batch,
    opts: SampleOptions = SampleOptions(),
    generator: Optional[torch.Generator] = None,
    on_step: Optional[Callable[[torch.Tensor, torch.Tensor], Optional[torch.Tensor]]] = None,
) -> list[Hypothesis]:
    """Draws one continuation per row, token by token, until EOS or `max_tokens`.

    `on_step(rows, tokens)` sees the rows of the batch still generating (b,) and the tokens they
    just drew (b,); it may return a (b,) bool tensor of rows to stop (e.g. a stop string appeared).
    The log-probabilities are those of the model, before temperature and filtering.
    """
    memory, state, prev = model.start(batch)
    dev = prev.device
    size, steps = batch.size, opts.max_tokens
    active = torch.arange(size, device=dev)
    tokens = torch.zeros(size, steps, dtype=torch.long, device=dev)
    lengths = torch.zeros(size, dtype=torch.long, device=dev)
    scores = torch.zeros(size, device=dev)
    banned = torch.tensor(opts.banned, dtype=torch.long)
    cols = columns_of(memory)
    for t in range(steps):
        logits, state, _ = model.step(prev, memory, state)
        logits = logits.float()  # (b, V)
        if cols is not None:  # a shortlist's columns back in their vocabulary places
            logits = logits.new_full((logits.size(0), int(cols.max()) + 1), NEG_INF).index_copy_(
                1, cols, logits
            )
        allowed = logits if not opts.banned else logits.index_fill(1, banned.to(dev), NEG_INF)
        if opts.temperature == 0:
            prev = allowed.argmax(dim=-1)
        else:
            probs = torch.softmax(_filter(allowed, opts), dim=-1)
            prev = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (b,)
        tokens[active, t] = prev
        scores[active] += logits.gather(1, prev.unsqueeze(1)).squeeze(1) - logsumexp(logits)
        lengths[active] = t + 1
        done = prev == EOS
        if on_step is not None:
            stop = on_step(active, prev)
            if stop is not None:
                done = done | stop
        if bool(done.all()):
            break
        active, prev, memory, state = _without_done(done, active, prev, memory, state)
    tokens, lengths, scores = tokens.tolist(), lengths.tolist(), scores.tolist()
    return [Hypothesis(tokens[i][: lengths[i]], scores[i], scores[i]) for i in range(size)]


@torch.no_grad()
def sample_in_place(
    model: Generative,
    kernel: Any,
    batch: Batch,
    opts: SampleOptions = SampleOptions(),
    generator: Optional[torch.Generator] = None,
    on_step: Optional[Callable[[torch.Tensor, torch.Tensor], Optional[torch.Tensor]]] = None,
    check_every: int = 16,
) -> list[Hypothesis]:
    """`sample` on a language model's `CellKernel` (`nn.cell_kernel`): the prompt is read by the model
    (`start`), then every token is one in-place kernel step and one draw. Rows never leave the batch: a
    row that is done keeps stepping and its later tokens are dropped, and whether all rows are done is
    checked every `check_every` steps. The draws are `sample`'s: once a row is done, the noise is drawn for
    the rows still generating only, in their order, as `sample` draws it for the rows left in its batch, so
    a seed gives the same text as `sample` for every row (to float rounding of the logits, which depend on a
    row's batch only to that).

    Per step, only the draw and two numbers per row are kept (the token, its logit and the row's
    log-normaliser, in preallocated (steps, B) buffers); where each row ends (its first EOS, or the step
    that `on_step` stopped it) and its log-probability are worked out once, after the loop."""
    _, state, prev = model.start(batch)
    dev = prev.device
    size, steps = batch.size, opts.max_tokens
    h = state.h.contiguous().clone()
    c = None if state.c is None else state.c.contiguous().clone()
    kernel.buffers(size)
    tokens = torch.zeros(steps, size, dtype=torch.long, device=dev)
    vocab = kernel.out_w.size(0)
    # Small vocabularies (characters): every step's logits kept, scored in one call after the loop; large
    # ones: the drawn token's logit and the row's log-normaliser, per step.
    kept = torch.empty(steps, size, vocab, device=dev) if steps * size * vocab <= KEEP_LOGITS else None
    chosen = torch.zeros(steps, size, device=dev)
    norm = torch.zeros(steps, size, device=dev)
    noise = torch.empty(size, vocab, device=dev)
    stopped = torch.full((size,), steps, dtype=torch.long, device=dev)  # on_step's stops: length
    seen = torch.zeros(size, dtype=torch.bool, device=dev)  # rows that drew EOS (up to date at each check)
    banned = torch.tensor(opts.banned, dtype=torch.long, device=dev)
    rows = torch.arange(size, device=dev)
    drawn = tokens.unbind(0)  # each step's row of `tokens`, which its draw is written into
    # Which rows still generate, known at every step: for `on_step`, and for random draws over several rows (one
    # row's draws, and argmax, do not depend on it; elsewhere EOS is looked for only at the checks)
    track = on_step is not None or (size > 1 and opts.temperature != 0)
    live = rows  # the rows still generating before this step
    for t in range(steps):
        # (B, V): the kernel's buffer or a new tensor, ours to change
        logits = kernel.step(prev, h, c).float()
        # the raw logits' share of the score first, then the banned tokens out in place (never drawn, so the
        # drawn token's logit is still the raw one)
        if kept is not None:
            kept[t] = logits
        else:
            torch.logsumexp(logits, 1, out=norm[t])  # raw logits: finite, so torch's own is exact
        allowed = logits if not opts.banned else logits.index_fill_(1, banned, NEG_INF)
        if opts.temperature == 0:
            prev = torch.argmax(allowed, dim=-1, out=drawn[t])
        else:
            probs = torch.softmax(_filter(allowed, opts), dim=-1)
            if live.numel() == size:
                prev = _draw(probs, noise, generator, drawn[t])  # (B,)
            else:  # the noise for the rows still generating only (the others' tokens are dropped)
                drawn[t][live] = _draw(probs[live], noise[: live.numel()], generator)
                prev = drawn[t]
        if kept is None:
            torch.gather(logits, 1, prev.unsqueeze(1), out=chosen[t].unsqueeze(1))
        if on_step is not None:
            stop = on_step(live, prev[live])
            if stop is not None:
                stopped[live[stop]] = t + 1
            seen |= prev == EOS
            live = rows[~seen & (stopped == steps)]
        elif track:  # (the rows that are done draw no token: theirs stays 0, never EOS)
            ended = prev == EOS
            if bool(ended.any()):  # the rows change only then
                seen |= ended
                live = rows[~seen]
        if (t + 1) % check_every == 0:
            if not track:  # the EOS drawn since the last check, in one call
                seen |= (tokens[t + 1 - check_every : t + 1] == EOS).any(0)
            if not bool((~seen & (stopped == steps)).any()):
                tokens, chosen, norm = tokens[: t + 1], chosen[: t + 1], norm[: t + 1]
                kept = None if kept is None else kept[: t + 1]
                break
    if kept is not None:
        chosen = kept.gather(2, tokens.unsqueeze(2)).squeeze(2)
        norm = torch.logsumexp(kept, 2)
    first_eos = torch.where(
        tokens == EOS, torch.arange(1, tokens.size(0) + 1, device=dev).unsqueeze(1), steps
    )
    lengths = torch.minimum(first_eos.amin(0), stopped).clamp(max=tokens.size(0))  # (B,)
    within = torch.arange(tokens.size(0), device=dev).unsqueeze(1) < lengths  # (T, B)
    scores = ((chosen - norm) * within).sum(0)
    tokens, lengths, scores = tokens.t().tolist(), lengths.tolist(), scores.tolist()
    return [Hypothesis(tokens[i][: lengths[i]], scores[i], scores[i]) for i in range(size)]


KEEP_LOGITS = 1 << 22  # floats (16 MB): sample_in_place keeps every step's logits up to this many


def _draw(
    probs: torch.Tensor,
    noise: torch.Tensor,
    generator: Optional[torch.Generator],
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One token per row, exactly as `torch.multinomial(probs, 1, generator=generator)` draws it on the CPU
    (argmax of p / q with q ~ Exp(1) from the generator, ATen's one-sample path), on a reused noise buffer and
    without its validity checks, which read the probabilities back to the host (softmax's are valid). A test
    holds it to torch.multinomial's draws."""
    q = noise.exponential_(1, generator=generator)
    ratio = torch.div(probs, q, out=q)
    return ratio.argmax(dim=-1) if out is None else torch.argmax(ratio, dim=-1, out=out)
