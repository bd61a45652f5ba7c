"""Corpora -> `datasets` -> id lists -> padded `Batch`es built by a token budget over length buckets.

Sources: two line-aligned text files, a TSV/CSV/JSONL table with named columns, or a Hugging
Face Hub dataset. Every reader names the file, line or column at fault in its error.
Masks are boolean, True on real tokens, and are built here once per batch.
"""

import csv
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tokenizer import BOS, EOS, PAD, Tokenizer

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- reading


def read_text(path: str | Path, allow_nul: bool = True) -> str:
    """A whole UTF-8 text file. Refuses missing, empty or non-UTF-8 files (naming the line) and,
    unless `allow_nul`, binary data (a NUL byte)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NlpRnnError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise NlpRnnError(f"{path}: is a folder, not a file") from None
    if not raw.strip():
        raise NlpRnnError(f"{path}: file is empty")
    nul = -1 if allow_nul else raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise NlpRnnError(f"{path}:{line}: binary data (a NUL byte), not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise NlpRnnError(f"{path}:{line}: not valid UTF-8 (byte {raw[err.start]:#04x})") from None


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file, without line ends. Refuses missing, empty or non-UTF-8 files."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise NlpRnnError(f"{path}: unknown table format '{suffix}' (use .tsv, .csv or .jsonl)")


def read_table(path: str | Path, columns: Sequence[str]) -> dict[str, list[Any]]:
    """Named columns of a TSV/CSV (with a header row) or JSONL file."""
    path = Path(path)
    lines = read_lines(path)
    fmt = _table_format(path)
    out: dict[str, list[Any]] = {c: [] for c in columns}
    if fmt == "jsonl":
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise NlpRnnError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise NlpRnnError(f"{path}:{number}: expected a JSON object per line")
            for c in columns:
                if c not in row:
                    raise NlpRnnError(f"{path}:{number}: missing column '{c}' (has: {', '.join(row)})")
                out[c].append(row[c])
    else:
        reader = csv.reader(
            lines,
            delimiter="\t" if fmt == "tsv" else ",",
            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
        )
        try:
            _read_rows(reader, path, columns, out)
        except csv.Error as err:  # e.g. a bare carriage return inside a field
            raise NlpRnnError(f"{path}:{reader.line_num}: {err}") from None
    if not out[columns[0]]:
        raise NlpRnnError(f"{path}: no rows after the header")
    return out


def _read_rows(reader, path: Path, columns: Sequence[str], out: dict[str, list[Any]]) -> None:
    header = next(reader)
    missing = [c for c in columns if c not in header]
    if missing:
        raise NlpRnnError(f"{path}:1: missing column '{missing[0]}' (header has: {', '.join(header)})")
    where = [header.index(c) for c in columns]
    for number, row in enumerate(reader, 2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise NlpRnnError(f"{path}:{number}: {len(row)} fields, header has {len(header)}")
        for c, i in zip(columns, where):
            out[c].append(row[i])


def read_hub(
    name: str, split: str, columns: Sequence[str], config: Optional[str] = None
) -> dict[str, list[Any]]:
    """Columns of a Hugging Face Hub dataset split; `translation: {de: .., en: ..}` rows are unpacked."""
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # network, unknown name or split: datasets raises many types
        raise NlpRnnError(
            f"dataset {name} ({split}): cannot load ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
    if "translation" in ds.column_names and not all(c in ds.column_names for c in columns):
        pairs = ds["translation"]
        missing = [c for c in columns if c not in pairs[0]]
        if missing:
            raise NlpRnnError(f"dataset {name} ({split}): no language '{missing[0]}' in column 'translation'")
        return {c: [p[c] for p in pairs] for c in columns}
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise NlpRnnError(
            f"dataset {name} ({split}): missing column '{missing[0]}' (has: {', '.join(ds.column_names)})"
        )
    return {c: list(ds[c]) for c in columns}


@dataclass(frozen=True)
class ParallelSource:
    """One split of a parallel corpus, from exactly one kind of source."""

    src_file: Optional[str] = None
    tgt_file: Optional[str] = None
    table: Optional[str] = None
    dataset: Optional[str] = None
    dataset_config: Optional[str] = None
    split: str = "train"
    src_lang: str = "src"
    tgt_lang: str = "tgt"

    def describe(self) -> str:
        if self.src_file:
            return f"{self.src_file} + {self.tgt_file}"
        if self.table:
            return f"{self.table} [{self.src_lang}, {self.tgt_lang}]"
        return f"{self.dataset}:{self.split} [{self.src_lang}, {self.tgt_lang}]"


def read_parallel(source: ParallelSource) -> tuple[list[str], list[str]]:
    """Sentence pairs; pairs with an empty side are skipped and counted in one warning."""
    if source.src_file or source.tgt_file:
        if not (source.src_file and source.tgt_file):
            raise NlpRnnError("parallel files: give both a source and a target file")
        src, tgt = read_lines(source.src_file), read_lines(source.tgt_file)
        if len(src) != len(tgt):
            raise NlpRnnError(
                f"{source.src_file} has {len(src)} lines but {source.tgt_file} has {len(tgt)}: "
                "parallel files must be line-aligned"
            )
    elif source.table:
        cols = read_table(source.table, [source.src_lang, source.tgt_lang])
        src, tgt = cols[source.src_lang], cols[source.tgt_lang]
    elif source.dataset:
        cols = read_hub(
            source.dataset, source.split, [source.src_lang, source.tgt_lang], source.dataset_config
        )
        src, tgt = cols[source.src_lang], cols[source.tgt_lang]
    else:
        raise NlpRnnError("no parallel data given (files, a table or a dataset name)")
    pairs = [(str(s).strip(), str(t).strip()) for s, t in zip(src, tgt)]
    kept = [(s, t) for s, t in pairs if s and t]
    if len(kept) < len(pairs):
        log.warning("%s: skipped %d pairs with an empty side", source.describe(), len(pairs) - len(kept))
    if not kept:
        raise NlpRnnError(f"{source.describe()}: no non-empty sentence pairs")
    return [s for s, _ in kept], [t for _, t in kept]


# ----------------------------------------------------------------------------- tokenising


def _cache_name(cache_dir: Path, *parts: bytes) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(hashlib.sha1(part).digest())
    return str(cache_dir / f"tok-{digest.hexdigest()[:16]}.arrow")


def truncate(seqs: list[list[int]], limit: int, where: str) -> list[list[int]]:
    too_long = sum(len(s) > limit for s in seqs)
    if too_long:
        log.warning("%s: truncated %d sentences longer than %d pieces", where, too_long, limit)
    return [s[:limit] for s in seqs] if too_long else seqs


def tokenize_parallel(
    src: Sequence[str],
    tgt: Sequence[str],
    tokenizer: Tokenizer,
    max_src_len: int,
    max_tgt_len: int,
    cache_dir: Optional[Path] = None,
    where: str = "data",
) -> tuple[list[list[int]], list[list[int]]]:
    """Piece ids per side (source ends in EOS), through a batched, cached `datasets.map`. Each text without the
    whitespace at its ends after the tokenizer's normalisation, as `encode_sources` reads texts to translate."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"src": list(src), "tgt": list(tgt)})

    def encode(batch: dict) -> dict:
        return {
            "src_ids": tokenizer.encode_src(batch["src"], strip=True),
            "tgt_ids": tokenizer.encode_tgt(batch["tgt"], strip=True),
        }

    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        text = "\n".join(src).encode() + b"\0" + "\n".join(tgt).encode()
        # (the last part: ids made before the ends were stripped are not reused)
        cache = _cache_name(cache_dir, text, tokenizer.src_blob, tokenizer.tgt_blob or b"", b"ends stripped")
    ds = ds.map(
        encode,
        batched=True,
        batch_size=2000,
        remove_columns=["src", "tgt"],
        cache_file_name=cache,
        load_from_cache_file=True,
    )
    src_ids = truncate(ds["src_ids"], max_src_len - 1, f"{where} (source)")
    tgt_ids = truncate(ds["tgt_ids"], max_tgt_len - 1, f"{where} (target)")
    return [s + [EOS] for s in src_ids], tgt_ids


def encode_sources(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Source ids ending in EOS (an empty text is still one token), truncated to max_len (0: never), one warning.
    Each text without the whitespace at its ends after the tokenizer's normalisation."""
    ids = tokenizer.encode_src(texts, strip=True)
    if not max_len:
        return [s + [EOS] for s in ids]
    too_long = sum(len(s) >= max_len for s in ids)
    if too_long:
        log.warning("truncated %d inputs to the model's %d source pieces", too_long, max_len)
    return [s[: max_len - 1] + [EOS] for s in ids]


# ----------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """Padded, batch-first tensors. Masks are True on real tokens."""

    src: torch.Tensor  # (B, S)
    src_len: torch.Tensor  # (B,)
    src_mask: torch.Tensor  # (B, S)
    tgt_in: Optional[torch.Tensor] = None  # (B, T)  BOS y1 .. yn
    tgt_out: Optional[torch.Tensor] = None  # (B, T)  y1 .. yn EOS
    tgt_mask: Optional[torch.Tensor] = None  # (B, T)
    labels: Optional[torch.Tensor] = None  # (B,)

    @property
    def size(self) -> int:
        return self.src.size(0)

    @property
    def target_tokens(self) -> int:
        return int(self.tgt_mask.sum()) if self.tgt_mask is not None else self.size


def pad(seqs: Sequence[Sequence[int]], min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L) ids padded with PAD, (B,) lengths, (B, L) mask; on the CPU (`devices.move` takes them further)."""
    cpu = torch.device("cpu")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long, device=cpu)
    width = max(int(lengths.max()), min_len)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long, device=cpu)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long, device=cpu)
    mask = torch.arange(width, device=cpu)[None, :] < lengths[:, None]  # (B, L)
    return ids, lengths, mask


def make_batch(
    src: Sequence[Sequence[int]],
    tgt: Optional[Sequence[Sequence[int]]] = None,
    labels: Optional[Sequence[int]] = None,
) -> Batch:
    src_ids, src_len, src_mask = pad(src)
    batch = Batch(src=src_ids, src_len=src_len, src_mask=src_mask)
    if tgt is not None:
        batch.tgt_in, _, _ = pad([[BOS] + list(t) for t in tgt])
        batch.tgt_out, _, batch.tgt_mask = pad([list(t) + [EOS] for t in tgt])
    if labels is not None:
        batch.labels = torch.as_tensor(list(labels), dtype=torch.long, device="cpu")
    return batch


class TokenBatcher:
    """Groups examples of similar length into batches of at most `batch_tokens` padded tokens.

    The order is a pure function of (seed, epoch), so a resumed run replays the same batches.
    In multi-process training every process builds the same order and takes its `shard` of each batch.
    """

    def __init__(self, lengths: Sequence[int], batch_tokens: int, max_sentences: int, seed: int) -> None:
        self.lengths = list(lengths)  # padded cost of each example (source + target pieces)
        self.batch_tokens = batch_tokens
        self.max_sentences = max_sentences
        self.seed = seed

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + epoch)
        # Sorting by length plus a little noise makes buckets that differ between epochs.
        order = sorted(range(len(self.lengths)), key=lambda i: self.lengths[i] + rng.uniform(-1.5, 1.5))
        batches, current, longest = [], [], 0
        for i in order:
            longest_if = max(longest, self.lengths[i])
            if current and (
                longest_if * (len(current) + 1) > self.batch_tokens or len(current) >= self.max_sentences
            ):
                batches.append(current)
                current, longest_if = [], self.lengths[i]
            current.append(i)
            longest = longest_if
        if current:
            batches.append(current)
        rng.shuffle(batches)
        return batches

    def shard(self, index: list[int], rank: int, world: int) -> list[int]:
        """Process `rank`'s part of a batch: `world` contiguous parts of about equal tokens (some may be empty)."""
        return split_by_weight(index, [self.lengths[i] for i in index], rank, world)


def split_by_weight(items: list, weights: Sequence[float], rank: int, world: int) -> list:
    """Part `rank` of `world` contiguous parts of `items` whose weights sum to about equal shares.

    Item i goes to the part its weight's midpoint falls in, so parts differ by at most one item's weight.
    """
    total = float(sum(weights)) or 1.0
    out, before = [], 0.0
    for item, weight in zip(items, weights):
        if min(int((before + weight / 2) / total * world), world - 1) == rank:
            out.append(item)
        before += weight
    return out


def ordered_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Inference batches: sorted by length (little padding), every index exactly once."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# ----------------------------------------------------------------------------- labelled text


@dataclass(frozen=True)
class LabeledSource:
    """One split of a classification dataset: a table file or a Hub dataset split."""

    table: Optional[str] = None
    dataset: Optional[str] = None
    dataset_config: Optional[str] = None
    split: str = "train"
    text_column: str = "sentence"
    label_column: str = "label"

    def describe(self) -> str:
        return self.table if self.table else f"{self.dataset}:{self.split}"


def read_labeled(source: LabeledSource) -> tuple[list[str], list[str]]:
    """Texts and labels as strings ("1" for 1). Mixed integer and string labels are refused."""
    columns = [source.text_column, source.label_column]
    if source.table:
        cols = read_table(source.table, columns)
    elif source.dataset:
        cols = read_hub(source.dataset, source.split, columns, source.dataset_config)
    else:
        raise NlpRnnError("no labelled data given (a table file or a dataset name)")
    texts = ["" if t is None else str(t) for t in cols[source.text_column]]
    labels = cols[source.label_column]
    numeric = [
        isinstance(x, int)
        and not isinstance(x, bool)
        or (isinstance(x, str) and x.strip().lstrip("-").isdigit())
        for x in labels
    ]
    if any(numeric) and not all(numeric):
        row = numeric.index(False) if numeric[0] else numeric.index(True)
        line = (
            f":{row + 2}"
            if source.table and _table_format(Path(source.table)) != "jsonl"
            else f" (row {row + 1})"
        )
        raise NlpRnnError(
            f"{source.describe()}{line}: label {labels[row]!r} mixes with labels of the other kind in column "
            f"'{source.label_column}' (use all integers or all names)"
        )
    for row, label in enumerate(labels):
        if label is None or str(label).strip() == "":
            raise NlpRnnError(
                f"{source.describe()} (row {row + 1}): empty label in column '{source.label_column}'"
            )
    return texts, [str(x).strip() for x in labels]


def label_names(labels: Sequence[str]) -> list[str]:
    """Sorted label names: numerically for integer labels, alphabetically otherwise."""
    unique = set(labels)
    if all(x.lstrip("-").isdigit() for x in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def label_ids(labels: Sequence[str], names: Sequence[str], where: str) -> list[int]:
    """Index of each label in `names`; a label never seen in training is refused with the known ones listed."""
    index = {name: i for i, name in enumerate(names)}
    for row, label in enumerate(labels):
        if label not in index:
            raise NlpRnnError(
                f"{where} (row {row + 1}): label {label!r} was never seen in training (known: {', '.join(names)})"
            )
    return [index[label] for label in labels]
