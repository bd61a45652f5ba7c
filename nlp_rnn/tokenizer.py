"""sentencepiece train/load; the only place that knows the special-token ids.

Byte fallback is always on, so no input character is ever unrepresentable: an unseen character
becomes its UTF-8 byte pieces and comes back out of `decode` unchanged.
"""

import io
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional

import sentencepiece as spm

from nlp_rnn.config import TokenizerConfig
from nlp_rnn.errors import BundleError, NlpRnnError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
JOINT_FILE = "sentencepiece.model"
SRC_FILE = "source.model"
TGT_FILE = "target.model"


def _train_one(texts: Sequence[str], cfg: TokenizerConfig) -> bytes:
    if not texts:
        raise NlpRnnError("tokenizer: no training text")
    rng = random.Random(0)
    sample = list(texts) if len(texts) <= cfg.max_sentences else rng.sample(list(texts), cfg.max_sentences)
    model = io.BytesIO()
    exact = (
        dict(
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            user_defined_symbols=["\n"],
            allow_whitespace_only_pieces=True,
        )
        if cfg.byte_exact
        else {}
    )
    if cfg.model_type == "char":  # every character of the text, the specials and the 256 byte pieces
        vocab_size = len(set("".join(sample))) + 4 + 256 + (1 if cfg.byte_exact else 0)
    else:
        vocab_size = cfg.vocab_size
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sample),
        model_writer=model,
        model_type=cfg.model_type,
        vocab_size=vocab_size,
        **exact,
        character_coverage=cfg.character_coverage,
        byte_fallback=True,
        hard_vocab_limit=False,  # a small corpus gets the vocabulary it can fill
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        num_threads=2,
        max_sentence_length=1 << 16,
        minloglevel=2,
    )
    return model.getvalue()


def _processor(blob: bytes, where: str) -> spm.SentencePieceProcessor:
    proc = spm.SentencePieceProcessor()
    try:
        proc.LoadFromSerializedProto(blob)
    except Exception:  # sentencepiece raises bare RuntimeError/OSError on bad protos
        raise BundleError(f"{where}: not a sentencepiece model (corrupt or foreign file)") from None
    if proc.pad_id() != PAD or proc.unk_id() != UNK or proc.bos_id() != BOS or proc.eos_id() != EOS:
        raise BundleError(f"{where}: sentencepiece model has special ids other than pad=0 unk=1 bos=2 eos=3")
    return proc


class Tokenizer:
    """Raw text <-> piece ids for the source and (for translation) the target side."""

    def __init__(self, src_blob: bytes, tgt_blob: Optional[bytes] = None, where: str = "tokenizer") -> None:
        self.src_blob = src_blob
        self.tgt_blob = tgt_blob  # None: joint model (or a classifier's only model)
        self.src = _processor(src_blob, where)
        self.tgt = self.src if tgt_blob is None else _processor(tgt_blob, where)

    @property
    def joint(self) -> bool:
        return self.tgt_blob is None

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size()

    @classmethod
    def train(
        cls, cfg: TokenizerConfig, src_texts: Sequence[str], tgt_texts: Optional[Sequence[str]] = None
    ) -> "Tokenizer":
        """Trains a joint model on both sides (if `cfg.joint`) or one model per side."""
        if tgt_texts is None:
            return cls(_train_one(src_texts, cfg))
        if cfg.joint:
            return cls(_train_one(list(src_texts) + list(tgt_texts), cfg))
        return cls(_train_one(src_texts, cfg), _train_one(tgt_texts, cfg))

    def save(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = (
            {JOINT_FILE: self.src_blob} if self.joint else {SRC_FILE: self.src_blob, TGT_FILE: self.tgt_blob}
        )
        for name, blob in files.items():
            (folder / name).write_bytes(blob)
        return [folder / name for name in files]

    @classmethod
    def load(cls, folder: str | Path) -> "Tokenizer":
        folder = Path(folder)
        if (folder / JOINT_FILE).is_file():
            return cls((folder / JOINT_FILE).read_bytes(), where=str(folder / JOINT_FILE))
        if (folder / SRC_FILE).is_file() and (folder / TGT_FILE).is_file():
            return cls((folder / SRC_FILE).read_bytes(), (folder / TGT_FILE).read_bytes(), where=str(folder))
        raise BundleError(f"{folder}: no sentencepiece model ({JOINT_FILE}, or {SRC_FILE} and {TGT_FILE})")

    def encode_stream(self, text: str, chunk_lines: int = 2000) -> list[int]:
        """Ids of a whole text, newlines included (needs a byte-exact tokenizer to round-trip exactly)."""
        lines = text.splitlines(keepends=True)
        ids: list[int] = []
        for start in range(0, len(lines), chunk_lines):
            for piece_ids in self.src.encode(lines[start : start + chunk_lines], out_type=int):
                ids.extend(piece_ids)
        return ids

    def encode_src(self, texts: Iterable[str]) -> list[list[int]]:
        return self.src.encode(list(texts), out_type=int)

    def encode_tgt(self, texts: Iterable[str]) -> list[list[int]]:
        return self.tgt.encode(list(texts), out_type=int)

    def decode_tgt(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return [self.tgt.decode([i for i in seq if i > EOS]) for seq in ids]

    def src_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.src.id_to_piece(i) for i in ids]

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.tgt.id_to_piece(i) for i in ids]
