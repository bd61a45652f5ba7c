"""Word vectors people already have (word2vec / GloVe / fastText text format) into embedding rows.

The file is streamed line by line (real files are several GB) and only words of the vocabulary are
kept. A sentencepiece piece `▁w` is the word `w` (a word-level tokenizer has one such piece per word;
for BPE/unigram vocabularies the whole-word pieces match); a word is looked up as it is, then
lower-cased. Rows without a vector keep their random initialisation. `.gz` files are read
through gzip; a first line of two integers (`count width`) is fastText's header.
"""

import gzip
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, TextIO

import torch
from torch import nn

from nlp_rnn.errors import NlpRnnError

log = logging.getLogger(__name__)
WORD_START = "\u2581"  # sentencepiece's word-boundary mark


def _open(path: Path) -> TextIO:
    if not path.is_file():
        raise NlpRnnError(f"{path}: embeddings file not found")
    if path.suffix == ".gz":
        with open(path, "rb") as handle:
            if handle.read(2) != b"\x1f\x8b":
                raise NlpRnnError(f"{path}: named .gz but not gzip-compressed")
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    with _open(path) as handle:
        try:
            for number, line in enumerate(handle, 1):
                parts = line.rstrip("\n").rstrip().split(" ")
                if parts != [""]:
                    yield number, parts
        except (EOFError, gzip.BadGzipFile, OSError) as err:
            raise NlpRnnError(f"{path}: the gzip stream is damaged ({err})") from None


def read_vectors(path: str | Path, wanted: set[str], width: int) -> dict[str, torch.Tensor]:
    """The vectors of the `wanted` words (first occurrence wins); every row's width is checked against `width`."""
    path = Path(path)
    found: dict[str, torch.Tensor] = {}
    rows = 0
    for number, parts in _lines(path):
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):  # fastText: "count width"
            if int(parts[1]) != width:
                raise NlpRnnError(
                    f"{path}: vectors have {parts[1]} values (header), but the embedding dimension is {width} "
                    f"(model.embedding_dim)"
                )
            continue
        rows += 1
        values = len(parts) - 1
        if values != width:
            if rows == 1:
                raise NlpRnnError(
                    f"{path}: vectors have {values} values (line {number}), but the embedding dimension is "
                    f"{width} (model.embedding_dim)"
                )
            raise NlpRnnError(f"{path}, line {number}: {values} values where the earlier rows have {width}")
        word = parts[0]
        if word in wanted and word not in found:
            try:
                found[word] = torch.tensor([float(v) for v in parts[1:]])
            except ValueError:
                bad = next(v for v in parts[1:] if not _is_float(v))
                raise NlpRnnError(f"{path}, line {number}: {bad!r} is not a number") from None
            if not torch.isfinite(found[word]).all():
                raise NlpRnnError(f"{path}, line {number}: the vector of {word!r} is not finite")
    if rows == 0:
        raise NlpRnnError(f"{path}: no vectors (empty file)")
    return found


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def vocabulary_words(pieces: list[str]) -> dict[int, str]:
    """Embedding row -> word, for the pieces that are whole words (`▁w`)."""
    return {i: p[1:] for i, p in enumerate(pieces) if p.startswith(WORD_START) and len(p) > 1}


def load_into(
    embeddings: nn.Embedding | list[nn.Embedding], path: str | Path, pieces: list[str], freeze: bool = False
) -> dict:
    """Fills the rows whose piece has a vector in `path` (of each table given: ensemble members share the file's
    vectors, other rows keep their own initialisation); returns the coverage, for the bundle's metadata."""
    tables = embeddings if isinstance(embeddings, list) else [embeddings]
    words = vocabulary_words(pieces)
    wanted = set(words.values()) | {w.lower() for w in words.values()}
    vectors = read_vectors(path, wanted, tables[0].embedding_dim)
    covered = 0
    with torch.no_grad():
        for row, word in words.items():
            vector = vectors.get(word)
            if vector is None:
                vector = vectors.get(word.lower())
            if vector is not None:
                for table in tables:
                    table.weight[row] = vector
                covered += 1
    for table in tables:
        table.weight.requires_grad_(not freeze)
    coverage = {
        "file": str(path),
        "words": len(words),
        "covered": covered,
        "coverage": round(covered / len(words), 4) if words else 0.0,
        "frozen": freeze,
    }
    log.info(
        "embeddings: %s covers %d of %d vocabulary words (%.1f%%)%s",
        path,
        covered,
        len(words),
        100 * coverage["coverage"],
        "; frozen" if freeze else "",
    )
    return coverage


def apply(
    model_cfg,
    model: nn.Module,
    tokenizer,
    meta: dict,
    resume: bool,
    targets: list[tuple[str, list[str], str]],
) -> None:
    """Loads each configured file into its embeddings (`targets`: config field, module paths, 'src' or 'tgt').

    The file is read once per field. On resume the weights come from `last/`, so the file is not
    read again; freezing still applies.
    """
    for field, module_paths, side in targets:
        path: Optional[str] = getattr(model_cfg, field)
        if not path:
            continue
        tables = [model.get_submodule(p) for p in module_paths]
        if resume:
            for table in tables:
                table.weight.requires_grad_(not model_cfg.freeze_embeddings)
            continue
        processor = tokenizer.src if side == "src" else tokenizer.tgt
        pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        meta.setdefault("embeddings", {})[field] = load_into(
            tables, path, pieces, model_cfg.freeze_embeddings
        )
