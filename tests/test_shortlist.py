"""The vocabulary shortlist for decoding: what it keeps, that decoding over it equals decoding over the
whole vocabulary where the chosen tokens are in it, and how a bundle carries it."""

import random
import shutil
from pathlib import Path

import pytest
import torch
from helpers import CHECKPOINTS, MULTI30K

from nlp_rnn import bundle as bundles
from nlp_rnn.cli import main
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.shortlist import FILE, Shortlist
from nlp_rnn.search import SearchOptions
from nlp_rnn.tasks.base import load
from nlp_rnn.tasks.predict import search_ids
from nlp_rnn.tasks.translation import Translator
from nlp_rnn.tokenizer import BOS, EOS, PAD, UNK


def random_corpus(seed: int, pairs: int, src_vocab: int, tgt_vocab: int) -> tuple[list, list]:
    rng = random.Random(seed)
    src = [[rng.randrange(4, src_vocab) for _ in range(rng.randint(1, 8))] for _ in range(pairs)]
    tgt = [[rng.randrange(4, tgt_vocab) for _ in range(rng.randint(1, 8))] for _ in range(pairs)]
    return src, tgt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_long_enough_shortlist_covers_every_training_target(seed: int) -> None:
    src, tgt = random_corpus(seed, 40, 30, 50)
    full = Shortlist.build(src, tgt, 30, 50, per_source=50, frequent=0)  # every co-occurring target kept
    assert full.coverage(src, tgt) == 1.0
    small = Shortlist.build(src, tgt, 30, 50, per_source=3, frequent=5)
    union = small.union(torch.tensor([src[0]]))
    assert torch.equal(union, union.unique())  # sorted, no repeats
    assert {PAD, UNK, BOS, EOS} <= set(union.tolist()) and set(small.frequent.tolist()) <= set(union.tolist())
    assert all(int((row >= 0).sum()) <= 3 for row in small.table)
    assert small.coverage(src, tgt) < 1.0  # it does cut


def test_the_most_associated_target_comes_first() -> None:
    src, tgt = random_corpus(3, 60, 30, 50)
    src = [s + [29] for s in src[:20]] + src[20:]  # source 29 appears exactly where target 49 does
    tgt = [t + [49] for t in tgt[:20]] + [[x for x in t if x != 49] or [5] for t in tgt[20:]]
    shortlist = Shortlist.build(src, tgt, 30, 50, per_source=4, frequent=0)
    assert int(shortlist.table[29, 0]) == 49


def test_shortlist_refuses_bad_settings_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(NlpRnnError, match="per_source"):
        Shortlist.build([[5]], [[6]], 10, 10, per_source=0)
    src, tgt = random_corpus(0, 10, 30, 50)
    Shortlist.build(src, tgt, 30, 50).save(tmp_path)
    with pytest.raises(NlpRnnError, match="does not fit"):
        Shortlist.load(tmp_path, 31, 50)
    (tmp_path / FILE).write_bytes(b"not safetensors")
    with pytest.raises(NlpRnnError, match="not a shortlist"):
        Shortlist.load(tmp_path, 30, 50)


@pytest.fixture(scope="module")
def shortlisted(tmp_path_factory) -> tuple[Path, Shortlist]:
    """The shipped de->en model with a shortlist from the first 3,000 training pairs."""
    folder = tmp_path_factory.mktemp("m") / "de-en"
    shutil.copytree(CHECKPOINTS / "multi30k-de-en", folder)
    bundle = load(folder)
    src = (MULTI30K / "train.de").read_text(encoding="utf-8").splitlines()[:3000]
    tgt = (MULTI30K / "train.en").read_text(encoding="utf-8").splitlines()[:3000]
    tok, model = bundle.tokenizer, bundle.model
    src_ids = [ids + [EOS] for ids in tok.encode_src(src)]
    tgt_ids = [ids + [EOS] for ids in tok.encode_tgt(tgt)]
    shortlist = Shortlist.build(
        src_ids, tgt_ids, model.src_embed.num_embeddings, model.decoder.vocab_size, 50, 300
    )
    shortlist.save(folder)
    return folder, shortlist


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_greedy_over_the_shortlist_equals_the_whole_vocabulary_where_it_holds_the_choice(
    shortlisted, precision: str
) -> None:
    folder, shortlist = shortlisted
    texts = (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:60]
    translator = Translator(load(folder), precision, "off")
    model, src_ids = translator.model, translator.encode(texts)
    opts = SearchOptions(beam_size=1)
    full = search_ids(model, src_ids, opts, 16)
    model.shortlist = shortlist
    step, added = model.decoder.step, set()

    def step_seen(
        prev, memory, state
    ):  # the penalty is added to float32 logits, a bf16 model's converted first
        logits, state, weights = step(prev, memory, state)
        added.add((memory.penalty.dtype, logits.dtype))
        return logits, state, weights

    model.decoder.step = step_seen
    short = search_ids(model, src_ids, opts, 16)
    assert added == {(torch.float32,) * 2}
    compared = 0
    for ids, a, b in zip(src_ids, full, short):
        if set(a[0].tokens) <= set(shortlist.union(torch.tensor([ids])).tolist()):
            compared += 1
            assert a[0].tokens == b[0].tokens
            assert b[0].log_prob >= a[0].log_prob - 1e-4  # normalised over fewer tokens: never less likely
    everywhere = set(shortlist.union(torch.tensor([t for ids in src_ids for t in ids])).tolist())
    assert all(set(b[0].tokens) <= everywhere for b in short)  # a batch's union holds its sentences' lists
    assert compared >= 30


def test_beam_search_over_a_shortlist_of_everything_equals_the_whole_vocabulary(shortlisted) -> None:
    """The column mapping of the searches (EOS's column for min_length, banned n-grams, tokens)."""
    folder, _ = shortlisted
    translator = Translator(load(folder), "fp32", "off")
    texts = (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:24]
    model, src_ids = translator.model, translator.encode(texts)
    opts = SearchOptions(beam_size=4, n_best=2, no_repeat_ngram=2, min_length=3)
    expected = search_ids(model, src_ids, opts, 8)
    vocab = model.decoder.vocab_size
    # every target id as a "frequent" one (a table of every id per source piece would be 8,000 x 8,000)
    model.shortlist = Shortlist(
        torch.full((model.src_embed.num_embeddings, 1), -1), torch.arange(vocab), vocab
    )
    for a, b in zip(expected, search_ids(model, src_ids, opts, 8)):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


def test_shortlist_command_a_resave_keeps_it_and_refusals(tmp_path: Path, multi30k: Path, capsys) -> None:
    folder = tmp_path / "de-en"
    shutil.copytree(CHECKPOINTS / "multi30k-de-en", folder)
    (folder / FILE).unlink()  # the shipped model has one
    with pytest.raises(NlpRnnError, match="has no vocabulary shortlist"):
        Translator(load(folder), "fp32", "on")
    src, tgt = tmp_path / "s.de", tmp_path / "t.en"
    src.write_text("\n".join((multi30k / "train.de").read_text(encoding="utf-8").splitlines()[:500]) + "\n")
    tgt.write_text("\n".join((multi30k / "train.en").read_text(encoding="utf-8").splitlines()[:500]) + "\n")
    code = main(
        ["shortlist", str(folder), "--train-src", str(src), "--train-tgt", str(tgt), "--per-source", "10"]
    )
    assert code == 0 and "covers" in capsys.readouterr().out and (folder / FILE).is_file()
    assert main(["shortlist", str(folder), "--train-src", str(src)]) == 2
    assert "go together" in capsys.readouterr().err
    bundles.save(tmp_path / "copy", load(folder), half=True)
    assert (tmp_path / "copy" / FILE).read_bytes() == (folder / FILE).read_bytes()
    assert Translator(load(tmp_path / "copy"), "fp32", "auto").shortlist is not None
    with pytest.raises(NlpRnnError, match="on, off or auto"):
        Translator(load(folder), "fp32", "maybe")


@pytest.mark.parametrize("beam", [1, 4])
def test_with_the_shortlist_a_sentence_alone_equals_it_inside_a_batch(beam: int) -> None:
    """Each sentence chooses among its own list, whatever the batch's union."""
    translator = Translator(load(CHECKPOINTS / "multi30k-de-en"), "fp32", "on")
    texts = (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:40]
    opts = translator.options(beam_size=beam)
    batched = translator.translate(texts, opts, batch_size=40)
    for i in (0, 17, 39):
        alone = translator.translate([texts[i]], opts)[0][0]
        assert alone.text == batched[i][0].text and alone.score == pytest.approx(
            batched[i][0].score, abs=1e-4
        )


def test_shortlist_on_is_refused_in_one_line_for_an_ensemble(capsys) -> None:
    model = str(CHECKPOINTS / "multi30k-de-en")
    assert main(["translate", "--model", model, "--model", model, "--shortlist", "on", "Ein Hund."]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--shortlist on works with one torch model" in err, err
    assert main(["translate", "--model", model, "--model", model, "--shortlist", "off", "Ein Hund."]) == 0
    assert capsys.readouterr().out.strip()  # the ensemble translates over the whole output layer


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_one_union_per_call_decodes_as_each_batch_with_its_own_and_packs_once(
    monkeypatch, precision: str
) -> None:
    """`Translator.translate` scores every batch of a call over one union (`Shortlist.over`): each sentence
    still chooses among its own list only, so the translations and scores equal those of per-batch unions,
    and the output layer is restricted (for int8: quantised rows packed again, several ms) once per call."""
    from nlp_rnn.nn.int8 import Int8Linear

    texts = (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:48]
    translator = Translator(load(CHECKPOINTS / "multi30k-de-en"), precision, "on")
    model, src_ids, opts = translator.model, translator.encode(texts), SearchOptions(beam_size=1)
    model.shortlist = translator.shortlist  # each batch its own union, as before
    each = search_ids(model, src_ids, opts, 8)
    model.shortlist = None
    packed = []
    rows = Int8Linear.rows
    monkeypatch.setattr(
        Int8Linear,
        "rows",
        lambda self, index, common=None: packed.append(index.numel()) or rows(self, index, common),
    )
    for greedy in (1, 5):  # greedy and beam search: six batches each
        called = translator.translate(texts, translator.options(beam_size=greedy), 8)
        assert model.shortlist is None  # the call's shortlist is not set on the (shared) model
        if greedy == 1:
            assert [t[0].pieces for t in called] == [
                translator.tokenizer.tgt_pieces(h[0].tokens) for h in each
            ]
            assert [t[0].score for t in called] == pytest.approx([h[0].score for h in each], abs=1e-4)
    assert packed == ([] if precision == "fp32" else [packed[0]] * 2)  # once per call


def test_a_large_call_packs_its_union_whole_and_translates_as_with_the_split(monkeypatch) -> None:
    """int8: a call of at least `WHOLE_ROWS` rows (sentences times beam) packs its shortlist's rows as one
    product; a smaller one keeps the frequent rows packed across calls and joins two products a step
    (`SplitRows`). The same call both ways gives the same translations, scores to float rounding (the columns
    come in another order, so the log-normaliser adds them in another order). (int8 quantises a step's
    inputs per batch, so a sentence alone is not compared with it inside a batch here.)"""
    from nlp_rnn.nn import shortlist as shortlists
    from nlp_rnn.nn.int8 import Int8Linear, SplitRows

    texts = (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:8]
    translator = Translator(load(CHECKPOINTS / "multi30k-de-en"), "int8", "on")
    assert len(texts) * 5 >= shortlists.WHOLE_ROWS > len(texts)
    built = []
    rows = Int8Linear.rows
    monkeypatch.setattr(
        Int8Linear,
        "rows",
        lambda self, index, common=None: built.append(rows(self, index, common)) or built[-1],
    )
    whole = translator.translate(texts, translator.options(beam_size=5), 8)
    assert len(built) == 1 and not isinstance(built[0], SplitRows)
    greedy = translator.translate(texts, translator.options(beam_size=1), 8)  # 8 rows: split
    assert len(built) == 2 and isinstance(built[1], SplitRows)
    monkeypatch.setattr(shortlists, "WHOLE_ROWS", 10**6)
    split = translator.translate(texts, translator.options(beam_size=5), 8)
    assert len(built) == 3 and isinstance(built[2], SplitRows)
    assert [[t.text for t in n] for n in split] == [[t.text for t in n] for n in whole]
    assert [t.score for n in split for t in n] == pytest.approx([t.score for n in whole for t in n], abs=1e-4)
    assert all(g[0].text for g in greedy)


def test_a_translator_without_the_shortlist_is_not_changed_by_one_with_it_on_the_same_bundle() -> None:
    """fp32 translators run the bundle's own model: the shortlist of one must not reach the other."""
    texts = (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:16]
    bundle = load(CHECKPOINTS / "multi30k-de-en")
    alone = [
        t[0].log_prob
        for t in Translator(load(CHECKPOINTS / "multi30k-de-en"), "fp32", "off").translate(texts)
    ]
    Translator(bundle, "fp32", "on").translate(texts)
    shared = [t[0].log_prob for t in Translator(bundle, "fp32", "off").translate(texts)]
    assert shared == pytest.approx(alone, abs=1e-5)


def test_translators_sharing_a_bundle_translate_the_same_from_two_threads() -> None:
    """Each call's shortlist travels with the call (`Shortlisted`), not on the shared model."""
    from concurrent.futures import ThreadPoolExecutor

    lines = (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    sets = [lines[:40], lines[500:540]]
    bundle = load(CHECKPOINTS / "multi30k-de-en")
    translators = [Translator(bundle, "fp32", "on") for _ in sets]
    alone = [[t[0].text for t in tr.translate(texts, batch_size=8)] for tr, texts in zip(translators, sets)]
    with ThreadPoolExecutor(2) as pool:
        together = list(
            pool.map(
                lambda pair: [t[0].text for t in pair[0].translate(pair[1], batch_size=8)],
                zip(translators, sets),
            )
        )
    assert together == alone


def test_auto_takes_the_shortlist_on_a_cpu_and_not_on_a_gpu_and_batches_hold_256_sentences(
    monkeypatch,
) -> None:
    """On a GPU decoding is bound by kernel launches: `--shortlist auto` is off there (measured on an H200,
    docs/results.md). Batches hold 256 sentences, greedy or with a beam, on either. The device is injected: CI has
    no GPU."""
    from nlp_rnn.tasks.translation import interface

    asked = []  # the batch size each call's search got: `translate` without one takes `batch_size(beam)`
    search = interface.search_ids
    monkeypatch.setattr(
        interface, "search_ids", lambda m, ids, opts, size: asked.append(size) or search(m, ids, opts, size)
    )
    bundle = load(CHECKPOINTS / "multi30k-de-en")
    on_cpu = Translator(bundle, "fp32", "auto")
    assert on_cpu.device.type == "cpu" and on_cpu.shortlist is not None
    assert (on_cpu.batch_size(1), on_cpu.batch_size(5)) == (256, 256)
    on_cpu.translate(["Ein Hund."], on_cpu.options(beam_size=1))
    on_cpu.translate(["Ein Hund."], on_cpu.options(beam_size=5))
    monkeypatch.setattr(Translator, "device", property(lambda self: torch.device("cuda")))
    on_gpu = Translator(bundle, "fp32", "auto")
    assert on_gpu.shortlist is None and (on_gpu.batch_size(1), on_gpu.batch_size(5)) == (256, 256)
    on_gpu.translate(["Ein Hund."], on_gpu.options(beam_size=5))  # (the weights are on the CPU all the same)
    assert asked == [256, 256, 256]
    assert Translator(bundle, "fp32", "on").shortlist is not None  # asked for: still there
