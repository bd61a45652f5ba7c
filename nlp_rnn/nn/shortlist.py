"""A lexical shortlist for decoding (Marian's `--shortlist`): the output layer over a few hundred words.

With an 8,000-piece target vocabulary the output layer is more than half of a decoded token's
arithmetic. Most of those pieces cannot be a translation of the sentence at hand. A shortlist keeps,
for every source piece, the `per_source` target pieces most associated with it in the training data
(the Dice coefficient of their sentence co-occurrence, 2·c(s,t) / (c(s)+c(t)), a standard lexicon
extraction score that, unlike raw co-occurrence, does not rank every frequent word first), and the
`frequent` most frequent target pieces (function words, punctuation) and the special tokens. At
decoding time the output layer and the search run over the union of the batch's source pieces' lists
(`union`): typically a few hundred to two thousand pieces instead of the whole vocabulary — and each
sentence chooses only among its own list (`for_batch`), so a sentence translates the same alone and
inside any batch.

Scores are normalised over the sentence's list, as in Marian: greedy search picks the same token as
with the full vocabulary whenever that token is in the list (its logit is the largest either way);
beam scores differ by the probability mass outside the list.

Stored in a bundle as `shortlist.safetensors` (`table` (V_src, per_source) int32 target ids, -1
where a source piece has fewer associates; `frequent` (N,) int32).
"""

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from nlp_rnn.bundle import SHORTLIST as FILE
from nlp_rnn.errors import BundleError, NlpRnnError
from nlp_rnn.tokenizer import BOS, EOS, PAD, UNK

WHOLE_ROWS = 32  # rows of a call (sentences times beam) from which its shortlist is packed as one product


class Shortlist:
    def __init__(self, table: torch.Tensor, frequent: torch.Tensor, tgt_vocab: int) -> None:
        self.table = table.to(torch.long)  # (V_src, k), -1 = none
        self.frequent = frequent.to(torch.long)  # (N,)
        self.tgt_vocab = tgt_vocab
        self._always = torch.cat([self.frequent, torch.tensor([PAD, UNK, BOS, EOS])]).unique()
        self.fixed: Optional[torch.Tensor] = None  # one union for every batch (`over`), else each batch's own
        self.kept: Optional[dict] = None  # with `fixed`: the output layer restricted to it, once built
        self.whole = False  # `over` a large call: its union's rows packed as one (no `common` split)

    @property
    def always(self) -> torch.Tensor:
        """The ids in every union (the frequent pieces and the special tokens), sorted (N,); the same tensor
        for the life of this shortlist and its `over` copies, so the output layer keeps their rows packed."""
        return self._always

    @property
    def common(self) -> Optional[torch.Tensor]:
        """What an int8 output layer keeps packed across calls (`Int8Linear.rows`): `always`, except for a
        call of many rows (`over`), whose union is packed as one product. A split layer joins its two
        products at every step (`SplitRows`): for 64 sentences of beam 5 a 320 × 4,000 copy a step, 12 ms
        over a batch's 40 steps, against 1-2 ms once for packing the ~300 common rows with the rest."""
        return None if self.whole else self._always

    @property
    def per_source(self) -> int:
        return self.table.size(1)

    @classmethod
    def build(
        cls,
        src_ids: Sequence[Sequence[int]],
        tgt_ids: Sequence[Sequence[int]],
        src_vocab: int,
        tgt_vocab: int,
        per_source: int = 50,
        frequent: int = 300,
    ) -> "Shortlist":
        """From parallel id lists: per source piece the `per_source` target pieces of highest Dice
        coefficient, and the `frequent` most frequent target pieces."""
        if per_source < 1 or frequent < 0:
            raise NlpRnnError(
                f"shortlist: per_source must be >= 1 and frequent >= 0, got {per_source}, {frequent}"
            )
        if len(src_ids) != len(tgt_ids) or not src_ids:
            raise NlpRnnError("shortlist: needs the same, non-zero number of source and target sentences")
        src_count = torch.zeros(src_vocab, dtype=torch.float64)
        tgt_count = torch.zeros(tgt_vocab, dtype=torch.float64)
        tgt_tokens = torch.zeros(tgt_vocab, dtype=torch.float64)
        keys = []
        for s, t in zip(src_ids, tgt_ids):
            us = torch.tensor(sorted(set(s)), dtype=torch.long)
            tt = torch.tensor(list(t), dtype=torch.long)
            ut = tt.unique()
            if us.numel() == 0 or ut.numel() == 0:
                continue
            src_count[us] += 1
            tgt_count[ut] += 1
            tgt_tokens.index_add_(0, tt, torch.ones(tt.numel(), dtype=torch.float64))
            keys.append((us.unsqueeze(1) * tgt_vocab + ut.unsqueeze(0)).flatten())
        pairs, together = torch.cat(keys).unique(return_counts=True)
        s, t = pairs // tgt_vocab, pairs % tgt_vocab
        dice = 2 * together.double() / (src_count[s] + tgt_count[t])
        # per source piece, its associates in decreasing Dice order (two stable sorts)
        order = torch.argsort(-dice, stable=True)
        s, t = s[order], t[order]
        order = torch.argsort(s, stable=True)
        s, t = s[order], t[order]
        starts = torch.searchsorted(s, torch.arange(src_vocab))
        rank = torch.arange(s.numel()) - starts[s]
        keep = rank < per_source
        table = torch.full((src_vocab, per_source), -1, dtype=torch.int32)
        table[s[keep], rank[keep]] = t[keep].to(torch.int32)
        top = torch.argsort(tgt_tokens, descending=True, stable=True)[:frequent]
        top = top[tgt_tokens[top] > 0]
        return cls(table, top.to(torch.int32), tgt_vocab)

    def union(self, src: torch.Tensor) -> torch.Tensor:
        """src (B, S) source ids (padding included) -> the sorted target ids the batch may use (K,)."""
        rows = self.table.index_select(0, src.reshape(-1).unique().cpu().clamp(max=self.table.size(0) - 1))
        ids = torch.cat([rows[rows >= 0], self._always.to(rows.dtype)])
        return ids.unique().to(src.device)  # sorted

    def over(self, src_ids: Sequence[Sequence[int]], beam: int = 1) -> "Shortlist":
        """This shortlist with one union for all of `src_ids` (the sentences of one call, cut into several
        batches): every batch scores the same columns, so the output layer restricted to them is built once
        (`Decoder.shortlisted` keeps it), and each sentence still chooses only among its own list. A call of
        at least `WHOLE_ROWS` rows (sentences times `beam`) packs its union whole (`common`)."""
        scoped = copy.copy(self)
        flat = torch.tensor([i for ids in src_ids for i in ids] or [PAD], dtype=torch.long)
        scoped.fixed = self.union(flat.unsqueeze(0))  # (K,)
        scoped.kept = {}
        scoped.whole = len(src_ids) * beam >= WHOLE_ROWS
        return scoped

    def for_batch(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> the batch's union (K,), or the fixed one of `over`, and which of its columns each
        sentence may use (B, K): its own list only, so a sentence decodes the same alone and inside any batch."""
        if self.fixed is not None:  # the same tensor for every batch, so `Decoder.shortlisted` knows it again
            self.fixed = self.fixed.to(src.device)
        batch_vocab = self.union(src) if self.fixed is None else self.fixed
        vocab = batch_vocab.cpu()
        cpu = src.cpu().clamp(max=self.table.size(0) - 1)
        rows = self.table[cpu].reshape(cpu.size(0), -1)  # (B, S*k), -1 = none
        allowed = torch.zeros(cpu.size(0), vocab.numel(), dtype=torch.bool)
        real = rows >= 0
        column = torch.full((self.tgt_vocab,), -1, dtype=torch.long)  # target id -> its column in vocab
        column[vocab] = torch.arange(vocab.numel())
        where = column[rows.clamp(min=0).long()]  # (B, S*k): a lookup, not a binary search per entry
        allowed[torch.arange(cpu.size(0)).unsqueeze(1).expand_as(rows)[real], where[real]] = True
        allowed[:, column[self._always.long()]] = True
        return batch_vocab.to(src.device), allowed.to(src.device)

    def coverage(self, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]) -> float:
        """The share of target tokens inside their own sentence's union."""
        inside = total = 0
        for s, t in zip(src_ids, tgt_ids):
            allowed = set(self.union(torch.tensor([list(s) or [PAD]])).tolist())
            inside += sum(1 for x in t if x in allowed)
            total += len(t)
        return inside / max(total, 1)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / FILE
        tmp = path.with_name(f".{FILE}.tmp")
        save_file(
            {"table": self.table.to(torch.int32).contiguous(), "frequent": self.frequent.to(torch.int32)},
            str(tmp),
            metadata={"tgt_vocab": str(self.tgt_vocab)},
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: Path, src_vocab: int, tgt_vocab: int) -> Optional["Shortlist"]:
        """The bundle's shortlist, or None when it has none."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            table, frequent = tensors["table"], tensors["frequent"]
        except Exception as err:  # noqa: BLE001  (safetensors raises several kinds)
            raise BundleError(f"{path}: not a shortlist ({type(err).__name__})") from None
        if table.dim() != 2 or table.size(0) != src_vocab or int(table.max()) >= tgt_vocab:
            raise BundleError(f"{path}: does not fit this model's vocabularies ({src_vocab} / {tgt_vocab})")
        return cls(table, frequent, tgt_vocab)
