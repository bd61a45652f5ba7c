"""Tokenizers: sentencepiece (BPE, unigram, char, word) and a word list; the only place that knows the
special-token ids.

sentencepiece's byte fallback is always on, so no input character is ever unrepresentable: an
unseen character becomes its UTF-8 byte pieces and comes back out of `decode` unchanged. The word
list (`model_type: wordlist`) is the literature's word-level vocabulary for pre-tokenised corpora
(WikiText, Penn Treebank): one token per whitespace-separated word, one per end of line, and the
corpus's own `<unk>` (and any word outside the list) as the unknown token.
"""

import io
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional

import sentencepiece as spm

from nlp_rnn import normalise as normalisation
from nlp_rnn.config import TokenizerConfig
from nlp_rnn.errors import BundleError, NlpRnnError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
EOL = 4  # the end-of-line token of a word list
JOINT_FILE = "sentencepiece.model"
WORDS_FILE = "vocabulary.txt"
WORDS_HEADER = "# nlp-rnn word list v1: one word a line; ids 0-4 are <pad> <unk> <s> </s> and the end of line"
SRC_FILE = "source.model"
TGT_FILE = "target.model"
NORMALISE_FILE = "normalise.txt"  # the normalisation steps, one a line; absent: none


def _train_one(texts: Sequence[str], cfg: TokenizerConfig) -> bytes:
    if not texts:
        raise NlpRnnError("tokenizer: no training text")
    if cfg.model_type == "wordlist":  # every word counts: no sampling
        return WordList.train(texts, cfg.vocab_size).blob()
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


class WordList:
    """One token per whitespace-separated word and one per end of line; a word outside the list, and
    the corpus's literal `<unk>`, is the unknown token. Answers the calls `Tokenizer` makes of a
    sentencepiece processor (`encode`, `decode`, `id_to_piece`, `get_piece_size`). `decode` joins
    words with single spaces: a pre-tokenised corpus comes back as its tokens, not byte for byte."""

    SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<eol>")

    def __init__(self, words: Sequence[str]) -> None:
        self.pieces = [*self.SPECIALS, *words]
        self.index = {piece: i for i, piece in enumerate(self.pieces)}
        self.index.pop("<eol>")  # the end of line is "\n", never a word of the text

    @classmethod
    def train(cls, texts: Iterable[str], size: int) -> "WordList":
        """The `size` - 5 most frequent words (ties: alphabetical) of the texts."""
        counts: dict[str, int] = {}
        for text in texts:
            for word in text.split():
                counts[word] = counts.get(word, 0) + 1
        for special in cls.SPECIALS:
            counts.pop(special, None)
        if not counts:
            raise NlpRnnError("tokenizer: no training text")
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        return cls(ranked[: max(0, size - len(cls.SPECIALS))])

    def blob(self) -> bytes:
        return "\n".join([WORDS_HEADER, *self.pieces[len(self.SPECIALS) :]]).encode("utf-8") + b"\n"

    @classmethod
    def from_blob(cls, blob: bytes, where: str) -> "WordList":
        try:
            lines = blob.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise BundleError(f"{where}: not a word list (not UTF-8)") from None
        if lines[0] != WORDS_HEADER:
            raise BundleError(f"{where}: not an nlp-rnn word list (first line {lines[0][:60]!r})")
        words = [w for w in lines[1:] if w]
        if any(len(w.split()) != 1 or w != w.strip() for w in words):
            raise BundleError(f"{where}: a word list entry holds whitespace")
        return cls(words)

    def get_piece_size(self) -> int:
        return len(self.pieces)

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def unknown(self, text: str) -> int:
        """Words of `text` outside the list (the literal `<unk>` is not counted: it is the corpus's own)."""
        return sum(1 for w in text.split() if w not in self.index)

    def encode(self, texts: Sequence[str], out_type: type = int) -> list[list[int]]:
        out = []
        for text in texts:
            ids: list[int] = []
            lines = text.split("\n")
            for k, line in enumerate(lines):
                ids.extend(self.index.get(w, UNK) for w in line.split())
                if k + 1 < len(lines):
                    ids.append(EOL)
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        text, start = [], True
        for i in ids:
            if i == EOL:
                text.append("\n")
                start = True
            elif i != PAD and i < len(self.pieces):
                text.append(("" if start else " ") + self.pieces[i])
                start = False
        return "".join(text)


def _processor(blob: bytes, where: str):
    if blob.startswith(WORDS_HEADER.encode()):
        return WordList.from_blob(blob, where)
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

    def __init__(
        self,
        src_blob: bytes,
        tgt_blob: Optional[bytes] = None,
        where: str = "tokenizer",
        normalise: Sequence[str] = (),
    ) -> None:
        self.normalise = normalisation.check(normalise, f"{where}: normalisation")
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
        steps = cfg.normalise
        if steps:
            src_texts = [normalisation.normalise(t, steps) for t in src_texts]
            tgt_texts = None if tgt_texts is None else [normalisation.normalise(t, steps) for t in tgt_texts]
        if tgt_texts is None:
            return cls(_train_one(src_texts, cfg), normalise=steps)
        if cfg.joint:
            return cls(_train_one(list(src_texts) + list(tgt_texts), cfg), normalise=steps)
        return cls(_train_one(src_texts, cfg), _train_one(tgt_texts, cfg), normalise=steps)

    def normalised(self, texts: Iterable[str]) -> list[str]:
        """Texts after the normalisation this tokenizer was trained with."""
        return [normalisation.normalise(t, self.normalise) for t in texts]

    @property
    def words(self) -> bool:
        """A word list (one token per word), not a sentencepiece model."""
        return isinstance(self.src, WordList)

    def save(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.words:
            files = {WORDS_FILE: self.src_blob}
        elif self.joint:
            files = {JOINT_FILE: self.src_blob}
        else:
            files = {SRC_FILE: self.src_blob, TGT_FILE: self.tgt_blob}
        if self.normalise:
            files[NORMALISE_FILE] = "".join(step + "\n" for step in self.normalise).encode()
        for name, blob in files.items():
            (folder / name).write_bytes(blob)
        return [folder / name for name in files]

    @classmethod
    def load(cls, folder: str | Path) -> "Tokenizer":
        folder = Path(folder)
        steps: list[str] = []
        if (folder / NORMALISE_FILE).is_file():
            text = (folder / NORMALISE_FILE).read_text(encoding="utf-8", errors="replace")
            steps = [line.strip() for line in text.splitlines() if line.strip()]
            normalisation.check(steps, str(folder / NORMALISE_FILE))
        if (folder / WORDS_FILE).is_file():
            blob, where = (folder / WORDS_FILE).read_bytes(), str(folder / WORDS_FILE)
            WordList.from_blob(blob, where)  # a foreign file is refused as a word list, not as sentencepiece
            return cls(blob, where=where, normalise=steps)
        if (folder / JOINT_FILE).is_file():
            return cls((folder / JOINT_FILE).read_bytes(), where=str(folder / JOINT_FILE), normalise=steps)
        if (folder / SRC_FILE).is_file() and (folder / TGT_FILE).is_file():
            src, tgt = (folder / SRC_FILE).read_bytes(), (folder / TGT_FILE).read_bytes()
            return cls(src, tgt, where=str(folder), normalise=steps)
        raise BundleError(
            f"{folder}: no tokenizer ({JOINT_FILE}, {SRC_FILE} and {TGT_FILE}, or {WORDS_FILE})"
        )

    def encode_stream(self, text: str, chunk_lines: int = 2000) -> list[int]:
        """Ids of a whole text, newlines included (needs a byte-exact tokenizer to round-trip exactly)."""
        lines = normalisation.normalise(text, self.normalise).splitlines(keepends=True)
        ids: list[int] = []
        for start in range(0, len(lines), chunk_lines):
            for piece_ids in self.src.encode(lines[start : start + chunk_lines], out_type=int):
                ids.extend(piece_ids)
        return ids

    def encode_src(self, texts: Iterable[str], strip: bool = False) -> list[list[int]]:
        """`strip`: without the whitespace at either end after normalising (which may make it: HTML breaks become
        spaces), so that a raw text and its normalised form are the same ids."""
        return self.src.encode(self._prepared(texts, strip), out_type=int)

    def encode_tgt(self, texts: Iterable[str], strip: bool = False) -> list[list[int]]:
        """`strip`: as `encode_src`'s."""
        return self.tgt.encode(self._prepared(texts, strip), out_type=int)

    def _prepared(self, texts: Iterable[str], strip: bool) -> list[str]:
        normalised = self.normalised(texts)
        return [t.strip() for t in normalised] if strip else normalised

    def decode_tgt(self, ids: Sequence[Sequence[int]]) -> list[str]:
        keep = UNK if self.words else EOS  # a word list writes <unk> back; sentencepiece drops the specials
        return [self.tgt.decode([i for i in seq if i > EOS or i == keep]) for seq in ids]

    def unknown_share(self, ids: Iterable[Sequence[int]]) -> float:
        """The share of source tokens that are the unknown token or (sentencepiece) byte-fallback pieces.

        The unknown ids are found once in the vocabulary, then counted per sequence by a set lookup: a call per
        token cost 1.7 s for IMDb train's 7.7 M tokens (AMX Xeon), at the start of every classifier run."""
        if self.words:
            unknown = frozenset([UNK])
        else:
            unknown = frozenset([UNK] + [i for i in range(self.src.get_piece_size()) if self.src.is_byte(i)])
        total = bad = 0
        for seq in ids:
            total += len(seq)
            bad += sum(map(unknown.__contains__, seq))
        return bad / max(total, 1)

    def src_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.src.id_to_piece(i) for i in ids]

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.tgt.id_to_piece(i) for i in ids]
