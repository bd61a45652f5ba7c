"""Language-model data: text files, tables and Hub datasets read as corpora, token streams cut into BPTT windows
or padded sentences, and the scores (loss, perplexity, per character) they give a model."""

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import devices
from nlp_rnn.data import (
    label_ids,
    ordered_batches,
    pad,
    read_hub,
    read_table,
    read_text,
    split_by_weight,
    truncate,
)
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.language_model import LanguageModel
from nlp_rnn.tasks.language_model.config import TABLES, LMDataConfig
from nlp_rnn.tokenizer import BOS, EOS, Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    """One split: documents (stream mode: each a token stream) or rows (sentence mode), with conditions."""

    texts: list[str]
    conditions: Optional[list[str]]
    name: str
    rows: bool = False  # True: one sequence per text (sentence mode)

    @property
    def characters(self) -> int:
        """Raw characters the model must predict: sentence mode counts each row's end as its newline."""
        return sum(len(t) for t in self.texts) + (len(self.texts) if self.rows else 0)

    @property
    def words(self) -> int:
        """Words as the literature counts them for perplexity per word: whitespace-separated tokens
        plus one end of line per line (sentence mode: per row), whatever the tokenizer."""
        return sum(len(t.split()) + t.count("\n") for t in self.texts) + (len(self.texts) if self.rows else 0)


def read_corpus(files: Sequence[str], data: LMDataConfig, split: str, hub: bool) -> Corpus:
    """Plain text files (one document each), tables with the text column, or a Hub dataset split."""
    columns = [data.text_column] + ([data.condition_column] if data.condition_column else [])
    sentence = data.mode == "sentence"
    texts: list[str] = []
    conditions: list[str] = []
    if hub:
        hub_split = data.train_split if split == "train" else data.valid_split
        cols = read_hub(data.dataset, hub_split, columns, data.dataset_config)
        name = f"{data.dataset}:{hub_split}"
        rows = [[("" if v is None else str(v)) for v in cols[c]] for c in columns]
        texts, conditions = (rows[0], rows[1] if len(rows) > 1 else [])
        if not sentence:
            texts = ["\n".join(texts) + "\n"]
    else:
        name = " + ".join(str(f) for f in files)
        for path in files:
            if Path(path).suffix.lower() in TABLES:
                cols = read_table(path, columns)
                rows = [str(x) for x in cols[data.text_column]]
                texts += rows if sentence else ["\n".join(rows) + "\n"]
                conditions += (
                    [str(x).strip() for x in cols[data.condition_column]] if data.condition_column else []
                )
            else:
                if data.condition_column:
                    raise NlpRnnError(
                        f"{path}: --condition-column needs a table (TSV/CSV/JSONL), not a plain text file"
                    )
                text = read_text(path, allow_nul=False)
                texts += (
                    [line.rstrip("\r") for line in text.split("\n") if line.strip()] if sentence else [text]
                )
    if sentence:
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if len(keep) < len(texts):
            log.warning("%s: skipped %d empty rows", name, len(texts) - len(keep))
        texts = [texts[i] for i in keep]
        conditions = [conditions[i] for i in keep] if data.condition_column else []
        for row, label in enumerate(conditions):
            if not label:
                raise NlpRnnError(
                    f"{name} (row {row + 1}): empty value in condition column '{data.condition_column}'"
                )
    if not texts:
        raise NlpRnnError(f"{name}: no text")
    return Corpus(texts, conditions if data.condition_column else None, name, rows=sentence)


def split_off_validation(corpus: Corpus, fraction: float) -> tuple[Corpus, Corpus]:
    """The first 1-f of the characters (stream) or rows (sentence) for training, the rest for validation."""
    if corpus.rows:
        cut = int(len(corpus.texts) * (1 - fraction))
        if cut < 1 or cut >= len(corpus.texts):
            raise NlpRnnError(
                f"{corpus.name}: too few rows ({len(corpus.texts)}) to split off a validation fraction of {fraction}"
            )
        pick = lambda c, s: None if c is None else c[s]  # noqa: E731
        return (
            Corpus(corpus.texts[:cut], pick(corpus.conditions, slice(0, cut)), corpus.name, True),
            Corpus(
                corpus.texts[cut:],
                pick(corpus.conditions, slice(cut, None)),
                f"{corpus.name} (last {fraction:g})",
                True,
            ),
        )
    text = "".join(corpus.texts)
    cut = int(len(text) * (1 - fraction))
    return Corpus([text[:cut]], None, corpus.name), Corpus(
        [text[cut:]], None, f"{corpus.name} (last {fraction:g})"
    )


def stream_ids(tokenizer: Tokenizer, corpus: Corpus, reverse: bool = False) -> torch.Tensor:
    """(N,) one stream: every document as BOS, its pieces, EOS; `reverse` (a backward model): the whole
    stream read from its end, so each document comes as EOS, its pieces last to first, BOS."""
    ids: list[int] = []
    for text in corpus.texts:
        ids += [BOS] + tokenizer.encode_stream(text) + [EOS]
    return torch.tensor(ids[::-1] if reverse else ids, dtype=torch.long)


def sentence_ids(
    tokenizer: Tokenizer, corpus: Corpus, max_len: int, reverse: bool = False
) -> list[list[int]]:
    """BOS pieces EOS per row, at most max_len + 2 ids (longer rows truncated, with one warning); `reverse`:
    each row's pieces last to first (what a backward model predicts, from BOS to EOS as any row)."""
    rows = truncate(tokenizer.encode_src(corpus.texts), max_len, corpus.name)
    return [[BOS] + (p[::-1] if reverse else p) + [EOS] for p in rows]


@dataclass
class Window:
    """One truncated-BPTT window: inputs and targets (B, T); `first` resets the carried state."""

    inputs: torch.Tensor
    targets: torch.Tensor
    first: bool


class StreamBatcher:
    """Splits a stream into `rows` contiguous parts and cuts them into `bptt` windows, in order.

    Each epoch starts the split at a different offset (a pure function of seed and epoch, so a
    resumed run replays the same windows), so window boundaries move between epochs.
    """

    def __init__(self, ids: torch.Tensor, rows: int, bptt: int, seed: int, variable: bool = False) -> None:
        if ids.numel() < rows * 2 + 1:
            rows = max(1, (ids.numel() - 1) // 2)
        self.ids, self.rows, self.bptt, self.seed, self.variable = ids, rows, bptt, seed, variable
        self._epoch: Optional[int] = None
        self._data: Optional[torch.Tensor] = None

    def _matrix(self, epoch: int) -> torch.Tensor:
        if self._epoch != epoch:
            offset = random.Random(self.seed * 100_003 + epoch).randrange(
                min(self.bptt, max(1, self.ids.numel() // (4 * self.rows)))
            )
            usable = (self.ids.numel() - offset - 1) // self.rows
            starts = offset + torch.arange(self.rows) * usable
            self._data = self.ids[
                starts.unsqueeze(1) + torch.arange(usable + 1)
            ]  # (rows, usable+1), neighbours overlap by one
            self._epoch = epoch
        return self._data

    def epoch(self, epoch: int) -> list[tuple[int, int, int]]:
        """The epoch's windows as (epoch, start, length): consecutive, covering every column once."""
        total = self._matrix(epoch).size(1) - 1
        if not self.variable:
            return [(epoch, s, min(self.bptt, total - s)) for s in range(0, total, self.bptt)]
        rng, windows, start = random.Random(self.seed * 7_919 + epoch), [], 0
        while start < total:
            mean = self.bptt if rng.random() < 0.95 else self.bptt / 2
            length = min(max(5, int(rng.gauss(mean, 5))), total - start)
            windows.append((epoch, start, length))
            start += length
        return windows

    def lr_scale(self, where: tuple) -> float:
        """AWD-LSTM's learning-rate factor of a window: its length / bptt (1 for fixed windows)."""
        return where[2] / self.bptt if self.variable else 1.0

    def shard(self, where: tuple[int, int, int], rank: int, world: int) -> tuple[int, int, int, int, int]:
        """Process `rank`'s rows of a window: always the same rows, so each process carries its own rows' state."""
        rows = split_by_weight(list(range(self.rows)), [1] * self.rows, rank, world)
        return (*where, rows[0], rows[-1] + 1) if rows else (*where, 0, 0)

    def window(self, where: tuple) -> Window:
        epoch, column, length = where[:3]
        first, last = where[3:] if len(where) == 5 else (0, self.rows)
        chunk = self._matrix(epoch)[first:last, column : column + length + 1]  # (rows, T+1)
        return Window(chunk[:, :-1], chunk[:, 1:], column == 0)


@dataclass
class Sequences:
    """A sentence-mode batch: inputs BOS y1..yn, targets y1..yn EOS, mask and conditions, all (B, T)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    conditions: Optional[torch.Tensor]


def make_sequences(seqs: Sequence[Sequence[int]], conditions: Optional[Sequence[int]]) -> Sequences:
    inputs, _, _ = pad([s[:-1] for s in seqs])
    targets, _, mask = pad([s[1:] for s in seqs])
    return Sequences(
        inputs,
        targets,
        mask,
        None if conditions is None else torch.tensor(list(conditions), dtype=torch.long, device="cpu"),
    )


@torch.no_grad()
def stream_nll(
    model: LanguageModel, ids: torch.Tensor, rows: int = 32, window: int = 512
) -> tuple[float, int]:
    """Summed NLL of every token of ids after the first, and their number. The stream is read as
    `rows` contiguous parts (each from a fresh state) in windows, carrying the state."""
    model.eval()
    inputs, targets = ids[:-1], ids[1:]
    rows = max(1, min(rows, inputs.numel() // 64))
    width = math.ceil(inputs.numel() / rows)
    pad_to = rows * width - inputs.numel()
    x = torch.cat([inputs, inputs.new_zeros(pad_to)]).view(rows, width)
    y = torch.cat([targets, targets.new_zeros(pad_to)]).view(rows, width)
    mask = (torch.arange(rows * width, device=inputs.device) < inputs.numel()).view(rows, width)
    x, y, mask = devices.move((x, y, mask), devices.of(model))
    state, total = model.initial_state(rows), 0.0
    for start in range(0, width, window):
        cols = slice(start, start + window)
        loss, _, state = model.loss(x[:, cols], y[:, cols], state, mask[:, cols])
        total += float(loss)
    return total, targets.numel()


@torch.no_grad()
def cache_nll(
    model: LanguageModel, ids: torch.Tensor, size: int, theta: float, lam: float, window: int = 128
) -> tuple[float, int]:
    """Summed NLL with a neural cache (Grave et al. 2017) of every token of `ids` after the first, read
    as one stream with the state carried: p(w) = (1 - lam) p_model(w) + lam p_cache(w), where p_cache
    puts softmax(theta h_t . h_i) on the word that followed each of the last `size` top-layer outputs
    h_i. While the cache is empty the model's probability stands alone. No retraining."""
    model.eval()
    device = devices.of(model)
    inputs, targets = ids[:-1].to(device), ids[1:].to(device)
    state, total = model.initial_state(1), 0.0
    keys = torch.zeros(0, model.cfg.top_size, device=device)  # (M, H) the cache: outputs ...
    values = torch.zeros(0, dtype=torch.long, device=device)  # (M,) ... and the words that followed them
    for start in range(0, inputs.numel(), window):
        x, y = inputs[start : start + window].unsqueeze(0), targets[start : start + window]  # (1, T), (T,)
        out, state = model.hidden(x, state)
        h = out[0].float()  # (T, H)
        log_p = model.log_probs(out[0]).gather(1, y.unsqueeze(1)).squeeze(1)  # (T,)
        past, t = keys.size(0), h.size(0)
        all_keys, all_values = torch.cat([keys, h]), torch.cat([values, y])  # (M+T, H), (M+T,)
        j = torch.arange(past + t, device=device)
        row = past + torch.arange(t, device=device).unsqueeze(1)  # position of each query in all_keys
        visible = (j < row) & (j >= row - size)  # (T, M+T): strictly earlier outputs, at most `size` back
        scores = (theta * h @ all_keys.T).masked_fill(~visible, float("-inf"))  # (T, M+T)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with an empty cache: all zeros
        p_cache = (weights * (all_values.unsqueeze(0) == y.unsqueeze(1))).sum(1)  # (T,)
        has_cache = visible.any(1)
        mixed = torch.where(has_cache, (1 - lam) * log_p.exp() + lam * p_cache, log_p.exp())
        total -= float(torch.log(mixed.clamp_min(1e-30)).sum())
        keys, values = all_keys[-size:], all_values[-size:]
    return total, targets.numel()


def dynamic_nll(
    model: LanguageModel, ids: torch.Tensor, lr: float, decay: float = 0.0, window: int = 20
) -> tuple[float, int]:
    """Summed NLL of every token of `ids` after the first with dynamic evaluation (Krause et al. 2018, its
    SGD form): the stream is read as one sequence with the state carried, in segments of `window` tokens;
    each segment is scored first, then the model takes one SGD step of `lr` on that segment's mean loss
    and is pulled back towards its trained weights by `decay` (theta += decay * (theta_0 - theta)). The
    text already scored is what the model adapts to, as a reader would; no token is scored after the model
    has seen it. The model's own weights are restored afterwards. Dropout stays off (eval mode)."""
    model.eval()
    device = devices.of(model)
    inputs, targets = ids[:-1].to(device), ids[1:].to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    trained = [p.detach().clone() for p in params]
    state, total = model.initial_state(1), 0.0
    # The embedding's gradient touches only the segment's rows: sparse, instead of zeroing and updating the
    # whole table for every segment (a third of the time with a 33k-word list).
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding) and not m.sparse]
    for table in tables:
        table.sparse = True
    try:
        for start in range(0, inputs.numel(), window):
            x, y = inputs[start : start + window].unsqueeze(0), targets[start : start + window].unsqueeze(0)
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            with torch.enable_grad():
                loss, n, state = model.loss(x, y, state)
                total += float(loss.detach())
                grads = torch.autograd.grad(loss / n, params, allow_unused=True)
            with torch.no_grad():
                for p, g, p0 in zip(params, grads, trained):
                    if g is not None:
                        p.add_(g, alpha=-lr)
                    if decay:
                        p.add_(decay * (p0 - p))
    finally:
        for table in tables:
            table.sparse = False
        with torch.no_grad():
            for p, p0 in zip(params, trained):
                p.copy_(p0)
    return total, targets.numel()


@torch.no_grad()
def sequences_nll(
    model: LanguageModel, seqs: list[list[int]], conditions: Optional[list[int]], batch_size: int = 128
) -> tuple[float, int]:
    model.eval()
    total, count = 0.0, 0
    for index in ordered_batches([len(s) for s in seqs], batch_size):
        batch = make_sequences(
            [seqs[i] for i in index], None if conditions is None else [conditions[i] for i in index]
        )
        batch = devices.move(batch, devices.of(model))
        cond = model.condition_vectors(batch.conditions)
        loss, n, _ = model.loss(
            batch.inputs, batch.targets, model.initial_state(len(index), cond), batch.mask, cond
        )
        total, count = total + float(loss), count + n
    return total, count


def scores(nll: float, tokens: int, characters: int, words: Optional[int] = None) -> dict:
    """Loss and perplexity per token, loss per character, and (given `words`) perplexity per word:
    exp(summed NLL / words), comparable across tokenizers."""
    loss = nll / max(tokens, 1)
    out = {
        "val_loss": loss,
        "val_ppl": math.exp(min(loss, 50)),
        "val_loss_per_char": nll / max(characters, 1),
        "val_bits_per_char": nll / max(characters, 1) / math.log(2),
    }
    if words:
        out["val_ppl_per_word"] = math.exp(min(nll / words, 50))
    return out


def condition_ids(corpus: Corpus, names: list[str]) -> Optional[list[int]]:
    return None if corpus.conditions is None else label_ids(corpus.conditions, names, corpus.name)
