"""Every bad input gets a one-line error naming the file, line or key, and nothing saved is lost."""

import json
import logging
from pathlib import Path

import pytest

from nlp_rnn import bundle as bundles
from nlp_rnn.config import TokenizerConfig, load_config
from nlp_rnn.data import ParallelSource, read_parallel, read_table, tokenize_parallel
from nlp_rnn.errors import BundleError, NlpRnnError
from nlp_rnn.normalise import normalise
from nlp_rnn.tasks.base import load as load_bundle
from nlp_rnn.tasks.translation import TranslationConfig
from nlp_rnn.tokenizer import EOS, Tokenizer


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_parallel_files_with_different_line_counts(tmp_path: Path) -> None:
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(NlpRnnError) as err:
        read_parallel(ParallelSource(src_file=str(tmp_path / "a.de"), tgt_file=str(tmp_path / "a.en")))
    assert "a.de has 2 lines" in one_line(err) and "a.en has 1" in one_line(err)


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty.de").write_text("")
    (tmp_path / "x.en").write_text("x\n")
    with pytest.raises(NlpRnnError, match="empty.de: file is empty"):
        read_parallel(ParallelSource(src_file=str(tmp_path / "empty.de"), tgt_file=str(tmp_path / "x.en")))
    with pytest.raises(NlpRnnError, match="nope.de: file not found"):
        read_parallel(ParallelSource(src_file=str(tmp_path / "nope.de"), tgt_file=str(tmp_path / "x.en")))


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.de").write_bytes(b"gut\nauch gut\n" + b"schlecht \xff\xfe\n")
    (tmp_path / "bad.en").write_text("a\nb\nc\n")
    with pytest.raises(NlpRnnError) as err:
        read_parallel(ParallelSource(src_file=str(tmp_path / "bad.de"), tgt_file=str(tmp_path / "bad.en")))
    assert "bad.de:3: not valid UTF-8" in one_line(err)


def test_missing_column_in_tsv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "t.tsv").write_text("de\tfr\nHallo\tSalut\n")
    with pytest.raises(NlpRnnError, match=r"t.tsv:1: missing column 'en'"):
        read_table(tmp_path / "t.tsv", ["de", "en"])
    (tmp_path / "t.jsonl").write_text('{"de": "Hallo", "en": "Hello"}\n{"de": "Welt"}\n')
    with pytest.raises(NlpRnnError, match=r"t.jsonl:2: missing column 'en'"):
        read_table(tmp_path / "t.jsonl", ["de", "en"])
    (tmp_path / "h.tsv").write_text("de\ten\n")
    with pytest.raises(NlpRnnError, match="no rows after the header"):
        read_table(tmp_path / "h.tsv", ["de", "en"])


def test_tables_in_all_formats_give_the_same_pairs(tmp_path: Path) -> None:
    pairs = [("Ein Hund.", "A dog."), ("Zwei, drei Katzen.", "Two, three cats.")]
    (tmp_path / "p.tsv").write_text("de\ten\n" + "".join(f"{a}\t{b}\n" for a, b in pairs))
    (tmp_path / "p.csv").write_text("de,en\n" + "".join(f'"{a}","{b}"\n' for a, b in pairs))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"de": a, "en": b}) + "\n" for a, b in pairs))
    for name in ("p.tsv", "p.csv", "p.jsonl"):
        src, tgt = read_parallel(ParallelSource(table=str(tmp_path / name), src_lang="de", tgt_lang="en"))
        assert list(zip(src, tgt)) == pairs


def test_unknown_config_key_and_cell(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model:\n  cell: gru\n  hiden: 3\n")
    with pytest.raises(NlpRnnError) as err:
        load_config(tmp_path / "a.yaml", TranslationConfig)
    assert "unknown key 'model.hiden'" in one_line(err) and "a.yaml" in one_line(err)
    (tmp_path / "b.yaml").write_text("model:\n  cell: transformer\n")
    with pytest.raises(NlpRnnError, match="model.cell must be one of rnn_tanh, rnn_relu, gru, lstm"):
        load_config(tmp_path / "b.yaml", TranslationConfig)
    (tmp_path / "c.yaml").write_text("train:\n  lr: fast\n")
    with pytest.raises(NlpRnnError, match="train.lr must be float"):
        load_config(tmp_path / "c.yaml", TranslationConfig)


def test_empty_lines_are_skipped_and_counted(tmp_path: Path, caplog) -> None:
    (tmp_path / "a.de").write_text("eins\n\nzwei\n   \ndrei\n")
    (tmp_path / "a.en").write_text("one\ntwo?\ntwo\nfour\nthree\n")
    with caplog.at_level(logging.WARNING):
        src, tgt = read_parallel(
            ParallelSource(src_file=str(tmp_path / "a.de"), tgt_file=str(tmp_path / "a.en"))
        )
    assert list(zip(src, tgt)) == [("eins", "one"), ("zwei", "two"), ("drei", "three")]
    assert "skipped 2 pairs" in caplog.text


def test_overlong_sentences_are_truncated_with_one_warning(caplog) -> None:
    texts = ["ab " * 50, "cd " * 60, "kurz"] * 20
    tok = Tokenizer.train(TokenizerConfig(vocab_size=300, model_type="unigram"), texts)
    with caplog.at_level(logging.WARNING):
        src, tgt = tokenize_parallel(texts, texts, tok, max_src_len=20, max_tgt_len=10)
    assert max(len(s) for s in src) == 20 and max(len(t) for t in tgt) == 9
    assert caplog.text.count("truncated 40 sentences") == 2  # one summary per side, not one per sentence


def test_translation_pairs_are_read_without_what_normalising_leaves_at_their_ends(tmp_path: Path) -> None:
    """A byte-exact tokenizer reads spaces as pieces: the HTML breaks at a pair's ends (spaces once normalised) are
    not part of it, as for a text to translate (`encode_sources`)."""
    texts = [f"<br />line {i} of the text.<br /><br />" for i in range(60)]
    cfg = TokenizerConfig(vocab_size=300, model_type="unigram", byte_exact=True, normalise=("html",))
    tok = Tokenizer.train(cfg, texts, texts)
    bare = [normalise(t, ("html",)).strip() for t in texts]
    assert bare[0] == "line 0 of the text." and tok.encode_src(texts[:1]) != tok.encode_src(bare[:1])
    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # the second time from the cache
        src, tgt = tokenize_parallel(texts, texts, tok, max_src_len=100, max_tgt_len=100, cache_dir=cache)
        assert src == [ids + [EOS] for ids in tok.encode_src(bare)] and tgt == tok.encode_tgt(bare)


def test_byte_fallback_represents_unseen_characters() -> None:
    tok = Tokenizer.train(TokenizerConfig(vocab_size=300, model_type="bpe"), ["hello world"] * 50)
    text = "hello ☃ 漢字 world"
    ids = tok.encode_tgt([text])[0]
    assert 1 not in ids  # no <unk>
    assert tok.decode_tgt([ids]) == [text]
    # the reported <unk>/byte-fallback share counts exactly the byte pieces (and <unk>s), token by token
    src = tok.encode_src(["hello world", text, "☃☃"])
    byte = [[tok.src.is_byte(i) or i == 1 for i in seq] for seq in src]
    assert tok.unknown_share(src) == sum(map(sum, byte)) / sum(map(len, src)) > 0
    assert tok.unknown_share(src + [[1, 1]]) == (sum(map(sum, byte)) + 2) / (sum(map(len, src)) + 2)
    words = Tokenizer.train(TokenizerConfig(model_type="wordlist", vocab_size=300), ["hello world"] * 5)
    assert words.unknown_share(words.encode_src(["hello there world", "world"])) == 1 / 4


@pytest.fixture
def saved_bundle(tmp_path: Path) -> Path:
    import torch
    from helpers import small_config

    from nlp_rnn.bundle import Bundle
    from nlp_rnn.nn.seq2seq import Seq2Seq

    torch.manual_seed(0)
    tok = Tokenizer.train(TokenizerConfig(vocab_size=300, model_type="unigram"), ["ein hund", "a dog"] * 50)
    cfg = TranslationConfig(model=small_config())
    model = Seq2Seq(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size)
    return bundles.save(
        tmp_path / "bundle", Bundle("translation", cfg, model, tok, {"src_lang": "de", "tgt_lang": "en"})
    )


def test_corrupt_truncated_and_foreign_bundles_are_refused(saved_bundle: Path) -> None:
    load_bundle(saved_bundle)
    weights = saved_bundle / bundles.WEIGHTS
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(BundleError) as err:
        load_bundle(saved_bundle)
    assert "model.safetensors: corrupt or truncated" in one_line(err)
    weights.write_bytes(b"PK\x03\x04 a pickled torch file, not safetensors")
    with pytest.raises(BundleError, match="corrupt or truncated"):
        load_bundle(saved_bundle)
    weights.write_bytes(good)
    (saved_bundle / "sentencepiece.model").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="not a sentencepiece model"):
        load_bundle(saved_bundle)


def test_foreign_meta_newer_version_and_mismatched_config(saved_bundle: Path) -> None:
    meta_file = saved_bundle / bundles.META
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps(dict(meta, format="something-else")))
    with pytest.raises(BundleError, match="not an nlp-rnn bundle"):
        load_bundle(saved_bundle)
    meta_file.write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(BundleError, match="format version 99 is newer than this nlp-rnn supports \\(1\\)"):
        load_bundle(saved_bundle)
    meta_file.write_text(json.dumps(meta))
    config_file = saved_bundle / bundles.CONFIG
    config = json.loads(config_file.read_text())
    config["model"]["decoder_hidden"] = 32
    config_file.write_text(json.dumps(config))
    with pytest.raises(BundleError, match="weights do not match|has shape"):
        load_bundle(saved_bundle)
    meta_file.write_text("{not json")
    with pytest.raises(BundleError, match="meta.json: corrupt"):
        load_bundle(saved_bundle)


def test_a_config_for_a_huge_model_is_refused_before_any_memory_and_fills_are_skipped_only_on_meta(
    saved_bundle: Path,
) -> None:
    """The config is checked against the weights on a model built on the meta device, whose random fills are
    skipped (torch's meta `normal_` imports sympy and ~800 modules at its first call): a config asking for
    embeddings of 10^7 columns (about 10 GB a table) is refused in one line, and fills of real tensors still
    happen under the same mode."""
    import subprocess
    import sys

    import torch

    config_file = saved_bundle / bundles.CONFIG
    config = json.loads(config_file.read_text())
    config["model"]["embedding_dim"] = 10**7
    config_file.write_text(json.dumps(config))
    with pytest.raises(BundleError) as err:
        load_bundle(saved_bundle)
    assert "weights do not match" in one_line(err) or "has shape" in one_line(err)

    with torch.device("meta"), bundles._NoFillsOnMeta():
        table = torch.nn.Embedding(10**6, 10**4)  # 40 GB if it held values
        linear = torch.nn.Linear(10**4, 10**5)
    assert table.weight.is_meta and table.weight.shape == (10**6, 10**4) and linear.weight.is_meta
    with bundles._NoFillsOnMeta():
        real = torch.zeros(1000).normal_()
        uniform = torch.nn.init.uniform_(torch.zeros(1000), 1.0, 2.0)
    assert real.std() > 0.5 and bool((uniform >= 1.0).all())

    # a fresh process: loading the shipped models never reaches torch's Python reference implementations
    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys\nfrom nlp_rnn.tasks.base import load\n"
        "for name in ('multi30k-de-en', 'sentiment', 'shakespeare-char'):\n"
        f"    load({str(root / 'checkpoints')!r} + '/' + name)\n"
        "print('sympy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False", out.stderr[-500:]
