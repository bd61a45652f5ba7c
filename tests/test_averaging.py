"""Checkpoint averaging: `train.keep_checkpoints` keeps the last N validations' weights, and `nlp-rnn average`
writes a bundle whose weights are exactly their mean; `train.init_seed` starts runs of different seeds from the
same weights, and `nlp-rnn average --model A --model B ...` averages such models into one (a model soup)."""

import json
from pathlib import Path

import torch
from helpers import CHECKPOINTS, train_tiny_classifier
from safetensors.torch import load_file

from nlp_rnn.cli import main
from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig
from nlp_rnn.nn.classifier import ClassifierModelConfig
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.base import load
from nlp_rnn.tasks.classification import ClassifierConfig
from nlp_rnn.tasks.classification.interface import Predictor


def test_average_of_the_last_and_best_kept_checkpoints(tmp_path: Path, capsys) -> None:
    run = train_tiny_classifier(  # a document classifier: its batch-norm head has running statistics
        tmp_path,
        6,
        "batch_tokens: 40, validate_every: 2, keep_checkpoints: 2, lr: 0.01",
        model="encoder: language_model, body: {embedding_dim: 8, hidden_size: 8, num_layers: 1}, window: 4, "
        "head_size: 6",
    )
    kept = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step-00000004", "step-00000006"]  # step 2's was dropped
    weights = [load_file(str(run / "checkpoints" / k / "model.safetensors")) for k in kept]
    assert main(["average", str(run), "--last", "2", "--output", str(tmp_path / "avg")]) == 0
    averaged = load(tmp_path / "avg")
    state = averaged.model.state_dict()
    assert any(name.endswith("running_var") for name in state)  # buffers are averaged, not the last one's
    assert not torch.equal(*(w[next(n for n in state if n.endswith("running_var"))] for w in weights))
    for name, tensor in state.items():
        if tensor.is_floating_point() and name in weights[0]:
            torch.testing.assert_close(tensor, (weights[0][name] + weights[1][name]) / 2, rtol=0, atol=1e-7)
    assert averaged.meta["averaged"]["steps"] == [4, 6]
    assert "the mean of the checkpoints of steps 4, 6 of" in (tmp_path / "avg" / "README.md").read_text()
    index = [json.loads(line) for line in (run / "checkpoints" / "index.jsonl").read_text().splitlines()]
    best = max(index, key=lambda r: r["score"])
    assert main(["average", str(run), "--best", "1", "--output", str(tmp_path / "best1")]) == 0
    assert load(tmp_path / "best1").meta["averaged"]["steps"] == [best["step"]]
    assert main(["average", str(run), "--last", "3", "--output", str(tmp_path / "x")]) == 2
    assert "2 kept checkpoints, fewer than the 3 asked for" in capsys.readouterr().err


def initial_weights(tmp_path: Path, **train) -> dict:
    table = tmp_path / "rows.tsv"
    table.write_text("sentence\tlabel\n" + "a fine film\t1\ndull and bad\t0\n" * 5)
    cfg = ClassifierConfig(
        data=DataConfig(train=str(table), valid=str(table)),
        tokenizer=TokenizerConfig(model_type="unigram", vocab_size=300),
        model=ClassifierModelConfig(embedding_dim=8, hidden_size=8),
        train=TrainConfig(**train),
    )
    out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    setup = tasks.get("classification").prepare(cfg, out, tasks.TokenizerChoice(out))
    return {**setup.bundle.model.state_dict(), "next draw": torch.rand(4)}  # what dropout would draw next


def test_init_seed_gives_the_same_initial_weights_whatever_the_seed(tmp_path: Path) -> None:
    a, b = initial_weights(tmp_path, seed=1, init_seed=7), initial_weights(tmp_path, seed=2, init_seed=7)
    weights = [k for k in a if k != "next draw"]
    assert all(torch.equal(a[k], b[k]) for k in weights)
    c = initial_weights(tmp_path, seed=7)  # init_seed 7 is what seed 7 alone gives
    assert all(torch.equal(a[k], c[k]) for k in weights)
    d = initial_weights(tmp_path, seed=2)
    assert not all(torch.equal(a[k], d[k]) for k in weights)
    # after the weights, torch's generator follows train.seed: dropout is seed 2's with or without init_seed
    assert torch.equal(b["next draw"], torch.manual_seed(2) and torch.rand(4))
    assert not torch.equal(a["next draw"], b["next draw"])
    # init_seed equal to seed is the same run as no init_seed, draws included
    same = initial_weights(tmp_path, seed=7, init_seed=7)
    assert all(torch.equal(same[k], c[k]) for k in c)


def test_models_fine_tuned_from_one_start_average_into_one(tmp_path: Path, capsys) -> None:
    runs = [
        train_tiny_classifier(tmp_path / name, 4, f"batch_tokens: 40, lr: 0.01, seed: {seed}, init_seed: 3")
        for name, seed in (("a", 1), ("b", 2), ("c", 3))
    ]
    models = [load(run).model.state_dict() for run in runs]
    assert not all(torch.equal(models[0][k], models[1][k]) for k in models[0])  # trained apart
    soup = tmp_path / "soup"
    assert main(["average", *(x for run in runs for x in ("--model", str(run))), "--output", str(soup)]) == 0
    averaged = load(soup)
    for name, tensor in averaged.model.state_dict().items():
        if tensor.is_floating_point():
            mean = sum(m[name].double() for m in models) / 3
            torch.testing.assert_close(tensor, mean.float(), rtol=0, atol=1e-6)
    assert averaged.meta["averaged"]["from"] == [str(run) for run in runs]
    assert "best" not in averaged.meta and "step" not in averaged.meta  # the first model's, not the mean's
    card = (soup / "README.md").read_text()
    assert f"the mean of 3 models fine-tuned from one start (a model soup): {runs[0]}, {runs[1]}" in card
    assert "validation" not in card.split("## Scores")[-1].split("## Use")[0]
    assert "seed 1, init_seed 3" in card  # what reproduces a member
    # a model averaged with itself is itself: the same probabilities
    twice = tmp_path / "twice"
    assert main(["average", "--model", str(runs[0]), "--model", str(runs[0]), "--output", str(twice)]) == 0
    texts = ["a fine film", "dull and bad", "never seen before"]
    own, again = (
        Predictor(load(runs[0]), "fp32").classify(texts),
        Predictor(load(twice), "fp32").classify(texts),
    )
    assert [p.probabilities for p in own] == [p.probabilities for p in again]


def test_models_that_cannot_be_averaged_are_one_line_each(tmp_path: Path, capsys) -> None:
    run = train_tiny_classifier(tmp_path / "a", 2)
    wider = train_tiny_classifier(tmp_path / "wider", 2, model="embedding_dim: 8, hidden_size: 12")
    cases = [
        (["--model", str(run)], "give at least two --model"),
        (["--model", str(run), "--model", str(wider)], f"{run} and {wider} have different architectures"),
        (["--model", str(run), "--model", str(CHECKPOINTS / "multi30k-de-en")], "have different tasks"),
        ([str(run), "--last", "1", "--model", str(run), "--model", str(run)], "not both"),
        ([], "give a RUN with --last N or --best N, or --model"),
    ]
    for args, message in cases:
        assert main(["average", *args, "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    # the output must not be a folder averaged from: saving would replace the run
    before = sorted(p.name for p in run.iterdir())
    for output in (run, run / "best"):
        assert main(["average", "--model", str(run), "--model", str(run), "--output", str(output)]) == 2
        assert f"--output {output} would overwrite {run}" in capsys.readouterr().err
    assert main(["average", str(run), "--last", "1", "--output", str(run)]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before and load(run).model is not None
