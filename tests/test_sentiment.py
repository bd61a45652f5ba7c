"""Sentiment: frozen pretrained embeddings, readable label names, ensembles, the shipped SST-2 model."""

import gzip
import json
import re
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SST2

from nlp_rnn.cli import main
from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig
from nlp_rnn.nn.classifier import ClassifierModelConfig
from nlp_rnn.tasks.base import load, train
from nlp_rnn.tasks.classification import ClassifierConfig

WORDS = ["good", "bad", "film", "movie", "great", "awful", "boring", "fun"]


def vector(word: str, width: int) -> list[float]:
    return [round((hash(word) % 97) / 97 + k * 0.01, 4) for k in range(width)]


def write_vectors(path: Path, words: list[str], width: int, header: bool, extra: str = "") -> None:
    lines = ([f"{len(words)} {width}"] if header else []) + [
        f"{w} " + " ".join(map(str, vector(w, width))) for w in words
    ]
    text = "\n".join(lines) + "\n" + extra
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")


def write_sst(folder: Path, n: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count in (("train", n), ("dev", 300), ("test", 200)):
        lines = (SST2 / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        paths[split] = folder / f"{split}.tsv"
        paths[split].write_text("\n".join(lines[: count + 1]) + "\n", encoding="utf-8")
    return paths


def tiny_config(paths: dict, **model) -> ClassifierConfig:
    return ClassifierConfig(
        data=DataConfig(
            train=str(paths["train"]), valid=str(paths["dev"]), label_names={"0": "negative", "1": "positive"}
        ),
        tokenizer=TokenizerConfig(model_type="word", vocab_size=2000),
        model=ClassifierModelConfig(cell="gru", embedding_dim=8, hidden_size=16, dropout=0.1, **model),
        train=TrainConfig(batch_tokens=800, validate_every=20, log_every=10, lr=0.01, max_steps=20),
    )


def test_frozen_embeddings_stay_while_the_rest_learns_and_coverage_is_in_the_bundle(
    tmp_path: Path, capsys
) -> None:
    paths = write_sst(tmp_path / "data", 600)
    words = sorted(
        {w for line in paths["train"].read_text().splitlines()[1:] for w in line.split("\t")[0].split()}
    )[:300]
    write_vectors(tmp_path / "vec.txt", words, 8, header=False)
    frozen = train(
        "classification",
        tiny_config(paths, pretrained_embeddings=str(tmp_path / "vec.txt"), freeze_embeddings=True),
        tmp_path / "frozen",
        progress_bar=False,
    )
    assert frozen["step"] == 20
    bundle = load(tmp_path / "frozen" / "last")
    pieces = [bundle.tokenizer.src.id_to_piece(i) for i in range(bundle.tokenizer.src_vocab_size)]
    info = bundle.meta["embeddings"]["pretrained_embeddings"]
    in_vocab = [p[1:] for p in pieces if p.startswith("\u2581") and len(p) > 1]
    assert (
        info["words"] == len(in_vocab)
        and info["covered"] == len(set(in_vocab) & set(words)) > 50
        and info["frozen"]
    )
    # The trained embedding rows are the file's vectors exactly; the encoder moved away from its initialisation.
    row = pieces.index("\u2581" + words[10])
    assert bundle.model.embed.weight[row].tolist() == pytest.approx(vector(words[10], 8))
    torch.manual_seed(1)  # the run's seed: the model as training started, before the vectors were loaded
    initial = type(bundle.model)(bundle.config.model, bundle.tokenizer.src_vocab_size, 2)
    without = [i for i, p in enumerate(pieces) if p[1:] not in words]
    assert torch.equal(
        bundle.model.embed.weight[without], initial.embed.weight[without]
    )  # frozen: not a row moved
    trained = dict(bundle.model.named_parameters())
    for name, value in initial.named_parameters():
        if not name.startswith("embed."):
            assert not torch.equal(value, trained[name]), f"{name} did not train"
    moving = train(
        "classification",
        tiny_config(paths, pretrained_embeddings=str(tmp_path / "vec.txt")),
        tmp_path / "moving",
        progress_bar=False,
    )
    assert moving["step"] == 20
    assert load(tmp_path / "moving" / "last").model.embed.weight[row].tolist() != pytest.approx(
        vector(words[10], 8)
    )
    assert main(["info", str(tmp_path / "frozen")]) == 0
    assert re.search(r"vec\.txt: [\d,]+ of [\d,]+ words \(\d+\.\d%\), frozen", capsys.readouterr().out)


def test_label_names_reach_classify_evaluate_and_survive_the_bundle(tmp_path: Path, capsys) -> None:
    paths = write_sst(tmp_path / "data", 400)
    config = tmp_path / "c.yaml"
    config.write_text(
        "tokenizer: {model_type: word, vocab_size: 2000}\n"
        "model: {cell: gru, embedding_dim: 8, hidden_size: 16}\ntrain: {batch_tokens: 800, validate_every: 10}\n"
    )
    assert (
        main(
            [
                "train",
                "classifier",
                "--config",
                str(config),
                "--output",
                str(tmp_path / "run"),
                "--train",
                str(paths["train"]),
                "--valid",
                str(paths["dev"]),
                "--label-names",
                "0=negative,1=positive",
                "--max-steps",
                "10",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["classify", "--model", str(tmp_path / "run"), "a fine film", "--format", "jsonl"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["label"] in ("negative", "positive") and row["label_id"] == ["negative", "positive"].index(
        row["label"]
    )
    assert set(row["probabilities"]) == {"negative", "positive"}
    assert (
        main(["classify", "--model", str(tmp_path / "run" / "best"), "a fine film"]) == 0
    )  # the bundle alone
    assert capsys.readouterr().out.split("\t")[0] == row["label"]
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "run"),
                "--data",
                str(paths["test"]),
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "negative" in out and "positive" in out and "gold \\ pred" in out
    report = json.loads((tmp_path / "r.json").read_text())["sets"][0]
    assert set(report["per_class"]) == {"negative", "positive"} and report["labels"] == [
        "negative",
        "positive",
    ]
    assert main(["info", str(tmp_path / "run")]) == 0 and "0 negative" in capsys.readouterr().out


def test_bad_embeddings_and_label_names_are_one_line_errors(tmp_path: Path, capsys) -> None:
    paths = write_sst(tmp_path / "data", 200)
    bad = {
        "ragged.txt": (
            "good 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8\nbad 0.1 0.2\n",
            "ragged.txt, line 2: 2 values where the earlier rows have 8",
        ),
        "wide.vec": (
            "2 5\ngood 1 2 3 4 5\n",
            "vectors have 5 values (header), but the embedding dimension is 8",
        ),
        "wide.txt": ("good 1 2 3 4 5\n", "vectors have 5 values (line 1), but the embedding dimension is 8"),
        "text.txt": ("good 0.1 0.2 0.3 x 0.5 0.6 0.7 0.8\n", "text.txt, line 1: 'x' is not a number"),
        "empty.txt": ("", "empty.txt: no vectors (empty file)"),
        "fake.txt.gz": ("good 1 2 3 4 5 6 7 8\n", "fake.txt.gz: named .gz but not gzip-compressed"),
    }
    config = tmp_path / "c.yaml"
    config.write_text(
        "tokenizer: {model_type: word, vocab_size: 2000}\nmodel: {cell: gru, embedding_dim: 8, hidden_size: 8}\n"
    )
    base = [
        "train",
        "classifier",
        "--config",
        str(config),
        "--train",
        str(paths["train"]),
        "--valid",
        str(paths["dev"]),
        "--max-steps",
        "1",
        "--quiet",
    ]
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        assert (
            main(
                base
                + [
                    "--output",
                    str(tmp_path / name.replace(".", "_")),
                    "--pretrained-embeddings",
                    str(tmp_path / name),
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
    for names, message in (
        ("0=negative,1=positive,2=neutral", "data.label_names: label '2' does not occur in"),
        ("0=negative", "data label '1' has no name in data.label_names"),
        ("0=bad,1=bad", "two labels share a name"),
        ("negative", "--label-names must look like 0=negative,1=positive"),
    ):
        assert main(base + ["--output", str(tmp_path / "o"), "--label-names", names]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (names, err)
    assert not (tmp_path / "o").exists() or not (tmp_path / "o" / "last").exists()


@pytest.mark.slow
def test_the_shipped_sst2_model_scores_the_readme_figure(capsys, tmp_path: Path) -> None:
    figure = re.search(
        r"shipped `checkpoints/sst2` scores \*\*(\d+\.\d+) %\*\* on SST-2 test",
        (ROOT / "docs" / "results.md").read_text(),
    )
    assert figure, "the README states the shipped model's test accuracy"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(ROOT / "checkpoints" / "sst2"),
                "--data",
                str(SST2 / "test.tsv"),
                "--precision",
                "fp32",  # the documented figure is fp32's; `auto` may pick int8 on this CPU kind
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    accuracy = 100 * json.loads((tmp_path / "r.json").read_text())["sets"][0]["accuracy"]
    assert accuracy == pytest.approx(float(figure.group(1)), abs=0.1)
    capsys.readouterr()
    assert (
        main(
            [
                "classify",
                "--model",
                str(ROOT / "checkpoints" / "sst2"),
                "a gorgeous , witty , seductive movie .",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.split("\t")[0] == "positive"


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities_and_trains_each_as_alone() -> None:
    from nlp_rnn.data import make_batch
    from nlp_rnn.nn.classifier import Classifier, build

    torch.manual_seed(0)
    ensemble = build(
        ClassifierModelConfig(cell="gru", embedding_dim=8, hidden_size=8, members=3, dropout=0.0), 40, 3
    ).eval()
    assert all(isinstance(m, Classifier) for m in ensemble.members)
    assert not torch.equal(
        ensemble.members[0].embed.weight, ensemble.members[1].embed.weight
    )  # each its own initialisation
    batch = make_batch([[5, 6, 7, 3], [8, 3]], labels=[0, 2])
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m.logits(batch), -1) for m in ensemble.members]).mean(0)
        torch.testing.assert_close(torch.softmax(ensemble.logits(batch), -1), mean)
    loss, count = ensemble(batch)
    loss.backward()
    for member in ensemble.members:  # the gradient each member gets is the one of its own loss alone
        grads = [p.grad.clone() for p in member.parameters()]
        member.zero_grad()
        member(batch)[0].backward()
        for before, p in zip(grads, member.parameters()):
            torch.testing.assert_close(before, p.grad)
    assert count == 2
