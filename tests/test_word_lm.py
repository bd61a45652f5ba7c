"""Word-level language models: the word list (one token per word and per end of line, the corpus's own
<unk>), perplexity per word as the literature counts it, sampling that never draws <unk> unless asked."""

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import WIKITEXT2

from nlp_rnn.cli import main
from nlp_rnn.config import TokenizerConfig
from nlp_rnn.data import make_batch
from nlp_rnn.nn.language_model import LanguageModel, LMModelConfig
from nlp_rnn.search import SampleOptions, sample
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tokenizer import BOS, EOL, EOS, UNK, Tokenizer

WORDS = TokenizerConfig(model_type="wordlist", vocab_size=40_000)


def test_unk_and_the_end_of_line_are_one_token_each_and_unseen_words_are_counted(tmp_path: Path) -> None:
    tok = Tokenizer.train(WORDS, [" = Valkyria Chronicles = \n", " the <unk> of the game \n"])
    ids = tok.encode_stream(" the <unk> of zebra \n = game =\n")
    the, of, eq, game = (tok.src.index[w] for w in ("the", "of", "=", "game"))
    assert ids == [the, UNK, of, UNK, EOL, eq, game, eq, EOL]  # one token each, whitespace around them or not
    assert tok.src.unknown(" the <unk> of zebra \n") == 1  # zebra; the corpus's own <unk> is not counted
    assert tok.decode_tgt([[BOS, *ids, EOS]]) == ["the <unk> of <unk>\n= game =\n"]
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.words and again.encode_stream(" the <unk> of zebra \n = game =\n") == ids
    (tmp_path / "vocabulary.txt").write_text("a list\nof words\n")
    with pytest.raises(Exception, match="not an nlp-rnn word list"):
        Tokenizer.load(tmp_path)


def test_the_word_list_covers_every_wikitext2_word_and_counts_the_literatures_tokens() -> None:
    train = (WIKITEXT2 / "wiki.train.tokens").read_text(encoding="utf-8").splitlines(keepends=True)
    tok = Tokenizer.train(WORDS, train)
    assert (
        tok.src_vocab_size == 33_276 + 5
    )  # every word of the training text (<unk> is the unknown token) + specials
    for split, tokens in (("valid", 217_646), ("test", 245_569)):  # words + one end of line per line
        text = (WIKITEXT2 / f"wiki.{split}.tokens").read_text(encoding="utf-8")
        assert len(tok.encode_stream(text)) == tokens and tok.src.unknown(text) == 0


@pytest.mark.slow
def test_perplexity_per_word_equals_a_hand_computation(tmp_path: Path, capsys, caplog) -> None:
    text = "the cat sat on the mat\nthe dog sat\n" * 40
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "test.txt").write_text("the cat sat\non a mat\n")  # 6 words, 2 ends of line; 'a' unseen
    (tmp_path / "cfg.yaml").write_text(
        "tokenizer: {model_type: wordlist, vocab_size: 1000}\ndata: {streams: 2, bptt: 8}\n"
        "model: {embedding_dim: 8, hidden_size: 16, num_layers: 1}\ntrain: {max_steps: 30, validate_every: 15}\n"
    )
    run = tmp_path / "run"
    args = ["--config", str(tmp_path / "cfg.yaml"), "--train", str(tmp_path / "train.txt"), "--quiet"]
    assert main(["train", "lm", "--output", str(run), "--valid-fraction", "0.1", *args]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_ppl_per_word" in r for r in records if "val_loss" in r)
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run),
                "--data",
                str(tmp_path / "test.txt"),
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    assert "1 words the word list never saw" in caplog.text
    got = json.loads((tmp_path / "r.json").read_text())["sets"][0]

    bundle = tasks.load(run)
    ids = [BOS] + bundle.tokenizer.encode_stream("the cat sat\non a mat\n") + [EOS]
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    with torch.no_grad():
        nll, count, _ = bundle.model.loss(x, y, bundle.model.initial_state(1))
    assert count == 9 and got["tokens"] == 9 and got["words"] == 8 and got["unknown_words"] == 1
    assert got["perplexity_per_word"] == pytest.approx(math.exp(float(nll) / 8), rel=1e-3)
    assert got["perplexity"] == pytest.approx(math.exp(float(nll) / 9), rel=1e-3)


def test_sampling_never_draws_unk_unless_asked() -> None:
    torch.manual_seed(0)
    model = LanguageModel(
        LMModelConfig(cell="gru", embedding_dim=8, hidden_size=8, num_layers=1, dropout=0.0), 12
    )
    with torch.no_grad():
        model.output.bias.zero_()
        model.output.bias[UNK] = 8.0  # <unk> is by far the most probable word
    batch = make_batch([[BOS]] * 16)
    g = torch.Generator().manual_seed(1)
    plain = sample(model, batch, SampleOptions(max_tokens=20), g)
    banned = sample(model, batch, SampleOptions(max_tokens=20, banned=(UNK,)), g)
    assert sum(h.tokens.count(UNK) for h in plain) > 100
    assert all(UNK not in h.tokens for h in banned)
    greedy_banned = sample(model, batch, SampleOptions(temperature=0, max_tokens=5, banned=(UNK,)), g)
    assert all(UNK not in h.tokens for h in greedy_banned)


# ----------------------------------------------------------------------------- the neural cache


def test_the_cache_with_lambda_0_is_the_model_and_lowers_perplexity_on_repeated_text() -> None:
    from nlp_rnn.tasks.language_model import cache_nll, stream_nll

    torch.manual_seed(0)
    model = LanguageModel(
        LMModelConfig(cell="lstm", embedding_dim=16, hidden_size=32, num_layers=1, dropout=0.0), 40
    )
    text = torch.randint(5, 40, (300,))
    ids = torch.cat(
        [torch.tensor([BOS]), text, text, torch.tensor([EOS])]
    )  # the second half repeats the first
    plain, count = stream_nll(model, ids, rows=1)
    none, same_count = cache_nll(model, ids, size=500, theta=0.3, lam=0.0, window=64)
    assert same_count == count == ids.numel() - 1
    assert none == pytest.approx(plain, rel=1e-5)
    cached, _ = cache_nll(model, ids, size=500, theta=20.0, lam=0.5, window=64)
    assert cached < 0.95 * plain  # the cache remembers what follows each state of the first half
    short, _ = cache_nll(model, ids, size=50, theta=20.0, lam=0.5, window=64)
    assert cached < short  # a cache shorter than the repeat distance cannot see the first half


def test_cache_settings_and_a_cache_on_another_task_are_one_line_errors(tmp_path: Path, capsys) -> None:
    from helpers import CHECKPOINTS

    (tmp_path / "t.txt").write_text("ROMEO: hello\n")
    sst = [
        "evaluate",
        "--model",
        str(CHECKPOINTS / "sst2"),
        "--data",
        str(tmp_path / "t.txt"),
        "--cache-size",
        "10",
    ]
    assert main(sst) == 2
    assert (
        "--cache-size: classifiers have no neural cache (it is for: language_model models)"
        in capsys.readouterr().err
    )
    lm = ["evaluate", "--model", str(CHECKPOINTS / "shakespeare-char"), "--data", str(tmp_path / "t.txt")]
    for extra, message in (
        (["--cache-size", "-1"], "--cache-size must be at least 0"),
        (["--cache-size", "10", "--cache-lambda", "1.5"], "--cache-lambda must be in [0, 1]"),
        (["--cache-size", "10", "--cache-theta", "0"], "--cache-theta must be positive"),
    ):
        assert main(lm + extra) == 2
        assert message in capsys.readouterr().err
    assert main(lm + ["--cache-size", "100", "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["cache"] == {"size": 100, "theta": 0.3, "lambda": 0.1} and report["sets"][0]["tokens"] == 14


# ----------------------------------------------------------------------------- dynamic evaluation


def test_dynamic_evaluation_at_rate_0_is_the_model_adapts_to_repeated_text_and_restores_the_weights() -> None:
    from nlp_rnn.tasks.language_model import cache_nll, dynamic_nll

    torch.manual_seed(0)
    model = LanguageModel(
        LMModelConfig(
            cell="lstm", embedding_dim=16, hidden_size=32, num_layers=1, dropout=0.0, adaptive_softmax=(20,)
        ),
        40,
    )
    text = torch.randint(5, 40, (300,))
    ids = torch.cat([torch.tensor([BOS]), text, text, torch.tensor([EOS])])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one_stream, count = cache_nll(model, ids, size=10, theta=0.3, lam=0.0)  # the model alone, one stream
    still, same_count = dynamic_nll(model, ids, lr=0.0, window=20)
    assert same_count == count and still == pytest.approx(one_stream, rel=1e-5)
    adapted, _ = dynamic_nll(model, ids, lr=0.5, window=20)
    assert adapted < 0.9 * one_stream  # it learns the first half, then reads it again
    pulled_back, _ = dynamic_nll(model, ids, lr=0.5, decay=0.5, window=20)
    assert adapted < pulled_back  # decay towards the trained weights forgets part of it
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # weights restored


def test_dynamic_evaluation_settings_and_another_task_are_one_line_errors(tmp_path: Path, capsys) -> None:
    from helpers import CHECKPOINTS

    (tmp_path / "t.txt").write_text("ROMEO: hello there\n")
    sst = ["evaluate", "--model", str(CHECKPOINTS / "sst2"), "--data", str(tmp_path / "t.txt")]
    assert main(sst + ["--dynamic-lr", "0.1"]) == 2
    assert "--dynamic-lr: classifiers have no dynamic evaluation" in capsys.readouterr().err
    lm = ["evaluate", "--model", str(CHECKPOINTS / "shakespeare-char"), "--data", str(tmp_path / "t.txt")]
    for extra, message in (
        (["--dynamic-lr", "-1"], "--dynamic-lr must be at least 0"),
        (["--dynamic-lr", "0.1", "--dynamic-decay", "1"], "--dynamic-decay in [0, 1)"),
        (["--dynamic-lr", "0.1", "--cache-size", "10"], "--dynamic-lr and --cache-size: give one of them"),
    ):
        assert main(lm + extra) == 2
        assert message in capsys.readouterr().err
    assert (
        main(lm + ["--dynamic-lr", "0.01", "--dynamic-window", "5", "--report", str(tmp_path / "r.json")])
        == 0
    )
    assert "with dynamic evaluation: lr 0.01, decay 0.0, window 5" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dynamic"] == {"lr": 0.01, "decay": 0.0, "window": 5} and report["sets"][0]["tokens"] == 20


def test_a_language_model_evaluates_at_each_precision_near_fp32(tmp_path: Path, capsys) -> None:
    """`evaluate --precision int8|bf16` of the shipped character model: the int8 copy's products and the bf16
    autocast products give a loss within a few percent of fp32's, and the report names the precision; the cache
    and dynamic evaluation read the model in fp32 and refuse the others in one line."""
    from helpers import CHECKPOINTS, SHAKESPEARE

    text = SHAKESPEARE.read_text(encoding="utf-8")[-3000:]
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    lm = ["evaluate", "--model", str(CHECKPOINTS / "shakespeare-char"), "--data", str(tmp_path / "t.txt")]
    loss = {}
    for precision in ("fp32", "bf16", "int8"):
        report = tmp_path / f"{precision}.json"
        assert main(lm + ["--precision", precision, "--report", str(report)]) == 0
        result = json.loads(report.read_text())
        assert result["precision"] == precision and f"precision: {precision}" in capsys.readouterr().out
        loss[precision] = result["sets"][0]["loss"]
    assert 1.0 < loss["fp32"] < 2.5  # a trained character model (nats per character)
    assert loss["bf16"] == pytest.approx(loss["fp32"], rel=0.02)
    assert loss["int8"] == pytest.approx(loss["fp32"], rel=0.03)
    # the summed losses before rounding: each precision computes its own (no silent fp32)
    from nlp_rnn.nn.int8 import quantize
    from nlp_rnn.tasks.language_model import stream_nll

    bundle = tasks.load(CHECKPOINTS / "shakespeare-char")
    ids = torch.tensor([BOS] + bundle.tokenizer.encode_stream(text[:1000]))
    fp32, _ = stream_nll(bundle.model, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16, _ = stream_nll(bundle.model, ids)
    int8, _ = stream_nll(quantize(bundle.model), ids)
    assert len({fp32, bf16, int8}) == 3 and max(abs(bf16 - fp32), abs(int8 - fp32)) < 0.03 * fp32
    for extra in (["--cache-size", "100"], ["--dynamic-lr", "0.01"]):
        assert main(lm + extra + ["--precision", "int8"]) == 2
        assert (
            "--precision int8: language models with --cache-size or --dynamic-lr are evaluated in fp32 only"
            in (capsys.readouterr().err)
        )
