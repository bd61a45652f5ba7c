"""Language models: truncated BPTT carries state across windows, byte-exact tokenising, sampling,
scores, conditioning."""

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import SHAKESPEARE

from nlp_rnn.config import TokenizerConfig, TrainConfig
from nlp_rnn.data import make_batch
from nlp_rnn.nn.language_model import LanguageModel, LMModelConfig
from nlp_rnn.search import SampleOptions, SearchOptions, beam_search, greedy, sample
from nlp_rnn.tasks.language_model import LanguageModelTask, LMConfig, LMDataConfig, StreamBatcher, stream_nll
from nlp_rnn.tokenizer import BOS, Tokenizer

CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
EPOCHS = 10


def tiny_lm(
    cell: str, vocab: int = 12, hidden: int = 24, layers: int = 2, conditions: int = 0, **changes
) -> LanguageModel:
    cfg = LMModelConfig(
        cell=cell, embedding_dim=8, hidden_size=hidden, num_layers=layers, dropout=0.0, **changes
    )
    return LanguageModel(cfg, vocab, conditions)


@pytest.mark.parametrize("cell", CELLS)
def test_windows_carrying_the_state_equal_one_pass_over_the_stream(cell: str) -> None:
    torch.manual_seed(0)
    model = tiny_lm(cell).eval()
    ids = torch.randint(4, 12, (200 * 3 + 1,))
    batcher = StreamBatcher(ids, rows=3, bptt=7, seed=0)
    windows = [batcher.window(w) for w in batcher.epoch(0)]
    assert windows[0].first and not any(w.first for w in windows[1:])
    inputs = torch.cat([w.inputs for w in windows], dim=1)
    targets = torch.cat([w.targets for w in windows], dim=1)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # window k continues window k-1
    with torch.no_grad():
        whole, _ = model.hidden(inputs, model.initial_state(3))
        state, parts = model.initial_state(3), []
        for w in windows:
            out, state = model.hidden(w.inputs, state)
            parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=1e-5)


def key_stream(segments: int, distance: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Segments `key filler... marker key`: the last key repeats the first. Half the segments are short
    (the key 3 steps back: learnable inside one window), half long (`distance` steps back).
    Returns the stream and a mask of the positions whose next token is a long segment's repeated key."""
    rng = random.Random(seed)
    ids, probe = [BOS], [False]
    for _ in range(segments):
        key, span = rng.randrange(4, 8), rng.choice([3, distance])
        ids += [key] + [8] * (span - 2) + [9, key]
        probe += [False] * (span - 1) + [span == distance, False]
    return torch.tensor(ids), torch.tensor(probe)


def carried_and_reset(cell: str, distance: int, lr: float, seed: int) -> tuple[float, float]:
    """Trains on key streams with bptt 5; accuracy on the long segments' keys with the state
    carried, and reset per window."""
    torch.manual_seed(seed)
    bptt = 5
    cfg = LMConfig(
        data=LMDataConfig(streams=16, bptt=bptt),
        model=LMModelConfig(cell=cell, embedding_dim=8, hidden_size=32, num_layers=1, dropout=0.0),
        train=TrainConfig(lr=lr, seed=seed),
    )
    task = LanguageModelTask()
    from nlp_rnn.tasks.base import new_bundle

    class FakeTokenizer:
        src_vocab_size = 10

    bundle = new_bundle(task, cfg, FakeTokenizer(), {})
    ids, _ = key_stream(1500, distance, seed=1)
    setup = task._stream_setup(cfg, bundle, ids, ids[:200], 200)
    model = bundle.model
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step = 0
    for epoch in range(EPOCHS):
        for where in setup.batcher.epoch(epoch):
            loss, count = setup.loss_fn(setup.collate(where), step)
            optimizer.zero_grad()
            (loss / count).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
    test, probe = key_stream(400, distance, seed=2)
    inputs, targets, probe = test[:-1].view(1, -1), test[1:], probe[:-1]
    model.eval()
    with torch.no_grad():
        out, _ = model.hidden(inputs, model.initial_state(1))
        carried = (model.output(out[0]).argmax(-1)[probe] == targets[probe]).float().mean().item()
        # The same windows, each from a fresh state: the long-range keys are out of reach.
        cut = [
            model.hidden(inputs[:, i : i + bptt], model.initial_state(1))[0]
            for i in range(0, inputs.size(1), bptt)
        ]
        reset = (
            (model.output(torch.cat(cut, dim=1)[0]).argmax(-1)[probe] == targets[probe]).float().mean().item()
        )
    return carried, reset


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell, distance, lr",
    [("rnn_tanh", 7, 0.003), ("rnn_relu", 7, 0.01), ("gru", 12, 0.01), ("lstm", 7, 0.01)],
)
def test_state_carried_across_windows_predicts_tokens_further_back_than_bptt(
    cell: str, distance: int, lr: float
) -> None:
    """With bptt 5, a long segment's key is further back than any window: only the carried state knows it
    (gradients stop at window boundaries, so what is learnt on short segments must carry over).

    Whether a tiny network finds the solution in 10 epochs depends on its initialisation (about 3 in 4
    seeds do), so up to three seeds are tried; none may reach the keys once the state is reset.
    """
    seen = []
    for seed in range(3):
        carried, reset = carried_and_reset(cell, distance, lr, seed)
        seen.append(f"seed {seed}: carried {carried:.3f}, reset {reset:.3f}")
        assert reset < 0.6, f"{cell}: {seen[-1]}"
        if carried >= 0.99:
            break
    assert distance > 5 and carried >= 0.99, f"{cell}: " + "; ".join(seen)


@pytest.mark.parametrize("model_type", ["char", "bpe"])
def test_stream_tokenising_is_byte_exact_on_shakespeare(model_type: str) -> None:
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tok = Tokenizer.train(
        TokenizerConfig(model_type=model_type, vocab_size=1000, byte_exact=True), text.splitlines()
    )
    assert tok.decode_tgt([tok.encode_stream(text)])[0] == text
    odd = "  two  spaces\n\n\ttab, é, ✓ and 漢字 never seen\r\n"
    assert tok.decode_tgt([tok.encode_stream(odd)])[0] == odd  # byte fallback for unseen characters
    if model_type == "char":
        pieces = set(tok.src_pieces(tok.encode_stream(text)))
        assert len(pieces) == len(set(text)) and "\n" in pieces  # one piece per character, newline included


def test_sampling_is_reproducible_and_top_k_1_and_temperature_0_equal_greedy() -> None:
    torch.manual_seed(0)
    model = tiny_lm("gru", vocab=20).eval()
    prompts = make_batch([[BOS, 5, 6, 7], [BOS], [BOS, 9]])
    draw = lambda seed, **o: [
        h.tokens
        for h in sample(
            model,
            prompts,
            SampleOptions(max_tokens=30, **o),  # noqa: E731
            torch.Generator().manual_seed(seed),
        )
    ]
    assert draw(1) == draw(1) and draw(1) != draw(2)
    best = [
        h.tokens
        for h in greedy(model, prompts, SearchOptions(beam_size=1, max_len_a=0, max_len_b=30, max_length=30))
    ]
    assert draw(3, top_k=1) == best == draw(4, temperature=0.0)
    assert draw(5, top_p=1e-9) == best  # the nucleus of a tiny p is the most probable token
    beam1 = [
        h[0].tokens
        for h in beam_search(
            model,
            prompts,
            SearchOptions(beam_size=1, length_norm="none", max_len_a=0, max_len_b=30, max_length=30),
        )
    ]
    assert beam1 == best


def test_a_prompt_alone_equals_the_same_prompt_in_a_padded_batch() -> None:
    torch.manual_seed(0)
    model = tiny_lm("lstm", vocab=20, conditions=2, condition_input=True).eval()
    prompts = [[BOS, 5, 6, 7, 8, 9], [BOS], [BOS, 11, 12]]
    opts = SearchOptions(beam_size=1, max_len_a=0, max_len_b=12, max_length=12)
    together = greedy(model, make_batch(prompts, labels=[0, 1, 1]), opts)
    for i, prompt in enumerate(prompts):
        alone = greedy(model, make_batch([prompt], labels=[[0, 1, 1][i]]), opts)[0]
        assert alone.tokens == together[i].tokens and alone.score == pytest.approx(
            together[i].score, abs=1e-5
        )


def test_perplexity_is_exp_of_the_mean_nll_and_loss_per_char_uses_raw_characters() -> None:
    torch.manual_seed(0)
    model = tiny_lm("lstm", vocab=30).eval()
    ids = torch.randint(4, 30, (1000,))
    nll, count = stream_nll(model, ids, rows=1, window=64)
    with torch.no_grad():
        out, _ = model.hidden(ids[:-1].unsqueeze(0), model.initial_state(1))
        direct = F.cross_entropy(model.output(out[0]), ids[1:], reduction="sum").item()
    assert count == 999 and nll == pytest.approx(direct, rel=1e-5)
    from nlp_rnn.tasks.language_model import scores

    s = scores(nll, count, characters=2500)
    assert s["val_ppl"] == pytest.approx(math.exp(direct / 999), rel=1e-5)
    assert s["val_loss_per_char"] == pytest.approx(direct / 2500, rel=1e-5)
    rows, _ = stream_nll(
        model, ids, rows=4, window=64
    )  # contiguous rows from fresh states: every token still counted once
    assert abs(rows - nll) / nll < 0.05


# ----------------------------------------------------------------------------- the command, end to end


from nlp_rnn.cli import main  # noqa: E402

TINY = """
data: {streams: 8, bptt: 32}
tokenizer: {model_type: char, byte_exact: true}
model: {cell: gru, embedding_dim: 32, hidden_size: 96, num_layers: 1, dropout: 0.0}
train: {validate_every: 30, log_every: 10, lr: 0.006}
decode: {temperature: 0.7, max_tokens: 40}
"""


@pytest.fixture(scope="module")
def shakespeare_lm(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    (folder / "train.txt").write_text(text[:60_000], encoding="utf-8")
    (folder / "valid.txt").write_text(text[-8_000:], encoding="utf-8")
    (folder / "tiny.yaml").write_text(TINY)
    assert (
        main(
            [
                "train",
                "lm",
                "--config",
                str(folder / "tiny.yaml"),
                "--output",
                str(folder / "run"),
                "--train",
                str(folder / "train.txt"),
                "--valid",
                str(folder / "valid.txt"),
                "--max-steps",
                "60",
                "--quiet",
            ]
        )
        == 0
    )
    return folder


def test_train_generate_evaluate_on_real_text(shakespeare_lm: Path, capsys) -> None:
    import json

    run = shakespeare_lm / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in validations] == [30, 60] and validations[-1]["val_loss"] < validations[0][
        "val_loss"
    ] < 3.5
    capsys.readouterr()
    assert main(["generate", "--model", str(run), "ROMEO:", "--seed", "3", "--max-tokens", "40"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first) > 10
    assert main(["generate", "--model", str(run), "ROMEO:", "--seed", "3", "--max-tokens", "40"]) == 0
    assert capsys.readouterr().out == first  # the same seed, the same sample
    assert (
        main(
            [
                "generate",
                "--model",
                str(run),
                "KING",
                "QUEEN",
                "--num-samples",
                "2",
                "--format",
                "jsonl",
                "--stop",
                "\n",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["line"], r["sample"], r["prompt"]) for r in rows] == [
        (1, 1, "KING"),
        (1, 2, "KING"),
        (2, 1, "QUEEN"),
        (2, 2, "QUEEN"),
    ]
    assert all("\n" not in r["text"] for r in rows)
    assert main(["generate", "--model", str(run), "ROMEO:", "--greedy", "--max-tokens", "30"]) == 0
    greedy_text = capsys.readouterr().out
    assert (
        main(["generate", "--model", str(run), "ROMEO:", "--top-k", "1", "--max-tokens", "30", "--seed", "9"])
        == 0
    )
    assert capsys.readouterr().out == greedy_text
    assert main(["generate", "--model", str(run), "ROMEO:", "--beam-size", "3", "--max-tokens", "30"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")

    test = shakespeare_lm / "test.txt"
    test.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n", encoding="utf-8")
    assert (
        main(
            ["evaluate", "--model", str(run), "--data", str(test), "--report", str(shakespeare_lm / "r.json")]
        )
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads((shakespeare_lm / "r.json").read_text())["sets"][0]
    assert "loss/char" in out and report["characters"] == len(test.read_text(encoding="utf-8"))
    assert report["perplexity"] == pytest.approx(math.exp(report["loss"]), rel=1e-3)
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "language_model" in out and "recurrent layers" in out and "mode:         stream" in out

    import nlp_rnn

    samples = nlp_rnn.load(run).generate(["ROMEO:"], num_samples=2, seed=5, max_tokens=20)
    assert len(samples) == 1 and len(samples[0]) == 2 and all(len(s.tokens) <= 20 for s in samples[0])


def test_bad_language_model_input_is_one_line_naming_the_culprit(
    shakespeare_lm: Path, tmp_path: Path, capsys
) -> None:
    run = str(shakespeare_lm / "run")

    def error(args: list[str]) -> str:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"abc\ndef\x00\x01\x02")
    (tmp_path / "short.txt").write_text("tiny corpus\n")
    train = [
        "train",
        "lm",
        "--config",
        str(shakespeare_lm / "tiny.yaml"),
        "--valid-fraction",
        "0.1",
        "--quiet",
        "--max-steps",
        "1",
    ]
    assert "empty.txt: file is empty" in error(
        train + ["--output", str(tmp_path / "a"), "--train", str(tmp_path / "empty.txt")]
    )
    assert "binary.txt:2: binary data" in error(
        train + ["--output", str(tmp_path / "b"), "--train", str(tmp_path / "binary.txt")]
    )
    assert "bptt 32 is longer than the training corpus" in error(
        train + ["--output", str(tmp_path / "c"), "--train", str(tmp_path / "short.txt")]
    )
    assert "--top-p must be in (0, 1]" in error(["generate", "--model", run, "x", "--top-p", "0"])
    assert "--top-p must be in (0, 1]" in error(["generate", "--model", run, "x", "--top-p", "1.5"])
    assert "--top-k must be 0 (off) or positive" in error(["generate", "--model", run, "x", "--top-k", "-1"])
    assert "--temperature must be 0 (greedy) to 100" in error(
        ["generate", "--model", run, "x", "--temperature", "-1"]
    )
    assert "is not a conditional language model" in error(
        ["generate", "--model", run, "x", "--condition", "happy"]
    )
    assert (
        main(["generate", "--model", run, "漢字 ✓ never seen", "--max-tokens", "5", "--seed", "1"]) == 0
    )  # byte fallback
    assert capsys.readouterr().out.startswith("漢字 ✓ never seen")
    assert "needs a translation model" in error(["translate", "--model", run, "Ein Hund."])
    assert "needs a classification model" in error(["classify", "--model", run, "good"])


def test_generation_conditioned_on_a_label_follows_it(tmp_path: Path, capsys) -> None:
    rng = random.Random(0)
    rows = ["text\tlabel"] + [
        f"{' '.join(c for _ in range(rng.randint(3, 8)))}\t{name}"
        for c, name in [("a", "A"), ("b", "B")] * 150
    ]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "cond.yaml").write_text(
        "tokenizer: {model_type: char}\n"
        "model: {cell: gru, embedding_dim: 16, hidden_size: 32, num_layers: 1, dropout: 0.0}\n"
        "train: {validate_every: 50, lr: 0.01, batch_tokens: 600}\n"
    )
    assert (
        main(
            [
                "train",
                "lm",
                "--config",
                str(tmp_path / "cond.yaml"),
                "--output",
                str(tmp_path / "run"),
                "--train",
                str(tmp_path / "train.tsv"),
                "--valid-fraction",
                "0.1",
                "--condition-column",
                "label",
                "--max-steps",
                "100",
                "--quiet",
            ]
        )
        == 0
    )
    import nlp_rnn

    generator = nlp_rnn.load(tmp_path / "run")
    for label, char in (("A", "a"), ("B", "b")):
        samples = generator.generate([""], num_samples=40, seed=1, condition=label, max_tokens=30)[0]
        matching = sum(bool(s.text.strip()) and set(s.text) <= {char, " "} for s in samples)
        assert matching >= 38, (label, [s.text for s in samples[:5]])
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "run"), "", "--condition", "C"]) == 2
    assert "unknown label 'C' (known: A, B)" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "--model",
                str(tmp_path / "run"),
                "",
                "--condition",
                "B",
                "--seed",
                "2",
                "--max-tokens",
                "20",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip()
    assert out and set(out) <= {"b", " "}


def test_resume_carries_the_hidden_state_and_continues_exactly(tmp_path: Path) -> None:
    import json
    from dataclasses import replace

    from nlp_rnn.tasks.language_model import train_lm

    text = (
        SHAKESPEARE.read_text(encoding="utf-8")[:20_000]
        if SHAKESPEARE.is_file()
        else "to be or not to be\n" * 1000
    )
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    cfg = LMConfig(
        data=LMDataConfig(train=(str(tmp_path / "t.txt"),), valid_fraction=0.1, streams=4, bptt=16),
        model=LMModelConfig(cell="lstm", embedding_dim=16, hidden_size=32, num_layers=2, dropout=0.2),
        train=TrainConfig(max_steps=12, validate_every=5, log_every=1, lr=0.005),
    )
    train_lm(cfg, tmp_path / "whole", progress_bar=False)
    train_lm(replace(cfg, train=replace(cfg.train, max_steps=7)), tmp_path / "split", progress_bar=False)
    train_lm(cfg, tmp_path / "split", resume=True, progress_bar=False)
    loss = lambda run: {
        r["step"]: r["train_loss"]
        for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())  # noqa: E731
        if "train_loss" in r
    }
    whole, split = loss("whole"), loss("split")
    assert sorted(split) == list(range(1, 13))
    for step in range(8, 13):
        assert split[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6)
