"""Sentence classification: pooling over real tokens, learning on real SST-2, labels, evaluation, bad input."""

import json
from pathlib import Path

import pytest
import torch

from nlp_rnn.cli import main
from nlp_rnn.data import make_batch
from nlp_rnn.nn.classifier import Classifier, ClassifierModelConfig

TINY = """
data: {max_src_len: 80}
tokenizer: {model_type: unigram, vocab_size: 2000}
model: {cell: gru, embedding_dim: 64, hidden_size: 64, bidirectional: true, pooling: max, dropout: 0.3}
train: {batch_tokens: 1200, validate_every: 40, log_every: 10, lr: 0.003, patience: 20}
"""


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_pooling_of_a_padded_batch_equals_each_sentence_alone(pooling: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    cfg = ClassifierModelConfig(
        cell="lstm",
        embedding_dim=16,
        hidden_size=24,
        num_layers=2,
        bidirectional=bidirectional,
        pooling=pooling,
        dropout=0.0,
    )
    model = Classifier(cfg, 30, 3).eval()
    sentences = [[5, 6, 7, 8, 9, 10, 3], [11, 3], [12, 13, 14, 3]]
    with torch.no_grad():
        together = model.pool(model.encode(make_batch(sentences)))
        for i, sentence in enumerate(sentences):
            alone = model.pool(model.encode(make_batch([sentence])))
            torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=1e-5)
    if pooling == "last" and bidirectional:
        enc = model.encode(make_batch(sentences))
        hidden = cfg.hidden_size
        torch.testing.assert_close(
            enc.final[1, :hidden], enc.states[1, 1, :hidden]
        )  # forward: last real token
        torch.testing.assert_close(enc.final[1, hidden:], enc.states[1, 0, hidden:])  # backward: first token


def write_sst_slice(sst2: Path, folder: Path, n: int, names: dict | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count in (("train", n), ("dev", 400), ("test", 300)):
        lines = (sst2 / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        rows = [lines[0]] + lines[1 : count + 1]
        if names:
            rows = [rows[0]] + [f"{t}\t{names[label]}" for t, label in (r.rsplit("\t", 1) for r in rows[1:])]
        paths[split] = folder / f"{split}.tsv"
        paths[split].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths


def train_sst(sst2: Path, folder: Path, sentences: int, steps: int) -> tuple[Path, dict]:
    paths = write_sst_slice(sst2, folder / "data", sentences, names={"0": "negative", "1": "positive"})
    (folder / "tiny.yaml").write_text(TINY)
    code = main(
        [
            "train",
            "classifier",
            "--config",
            str(folder / "tiny.yaml"),
            "--output",
            str(folder / "run"),
            "--train",
            str(paths["train"]),
            "--valid",
            str(paths["dev"]),
            "--max-steps",
            str(steps),
            "--quiet",
        ]
    )
    assert code == 0
    return folder / "run", paths


@pytest.fixture(scope="module")
def sst_model(sst2: Path, tmp_path_factory) -> tuple[Path, dict]:
    """A classifier that has learned something: 200 updates on 3,000 SST-2 sentences."""
    return train_sst(sst2, tmp_path_factory.mktemp("sst"), 3000, 200)


@pytest.fixture(scope="module")
def sst_bundle(sst2: Path, tmp_path_factory) -> tuple[Path, dict]:
    """A real bundle for the tests of labels, evaluation and refusals, which need no learning: 20 updates."""
    return train_sst(sst2, tmp_path_factory.mktemp("sst_bundle"), 1000, 20)


@pytest.mark.slow
def test_training_on_real_sst2_learns_beyond_the_majority_class(sst_model) -> None:
    run, paths = sst_model
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(r["val_acc"] for r in records if "val_acc" in r)
    labels = [line.rsplit("\t", 1)[1] for line in paths["dev"].read_text().splitlines()[1:]]
    majority = max(labels.count(x) for x in set(labels)) / len(labels)
    assert best >= majority + 0.12, (best, majority)


def test_string_labels_round_trip_through_the_bundle(sst_bundle, capsys) -> None:
    run, _ = sst_bundle
    meta = json.loads((run / "best" / "meta.json").read_text())
    assert meta["labels"] == ["negative", "positive"] and meta["task"] == "classification"
    assert (
        main(
            [
                "classify",
                "--model",
                str(run),
                "--format",
                "jsonl",
                "a wonderful , moving film",
                "dull and lifeless",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in rows] == [1, 2]
    for row in rows:
        assert set(row["probabilities"]) == {"negative", "positive"} and row["label"] in row["probabilities"]
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        assert row["probability"] == max(row["probabilities"].values())


def test_evaluate_accuracy_and_f1_agree_with_a_direct_computation(sst_bundle, tmp_path: Path, capsys) -> None:
    run, paths = sst_bundle
    code = main(
        [
            "evaluate",
            "--model",
            str(run),
            "--data",
            str(paths["test"]),
            "--report",
            str(tmp_path / "r.json"),
            "--hyps",
            str(tmp_path / "pred.txt"),
        ]
    )
    assert code == 0 and "confusion matrix" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())["sets"][0]
    gold = [line.rsplit("\t", 1)[1] for line in paths["test"].read_text().splitlines()[1:]]
    pred = (tmp_path / "pred.txt").read_text().splitlines()
    assert len(pred) == len(gold) == report["examples"]
    assert report["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, pred)) / len(gold))
    f1s = []
    for label in ("negative", "positive"):
        tp = sum(g == p == label for g, p in zip(gold, pred))
        precision = tp / max(sum(p == label for p in pred), 1)
        recall = tp / max(sum(g == label for g in gold), 1)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        assert report["per_class"][label]["f1"] == pytest.approx(f1s[-1])
    assert report["macro_f1"] == pytest.approx(sum(f1s) / 2)
    assert sum(map(sum, report["confusion_matrix"])) == len(gold)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_bad_classification_inputs(sst_bundle, tmp_path: Path, capsys) -> None:
    run, _ = sst_bundle
    (tmp_path / "unseen.tsv").write_text("sentence\tlabel\ngood\tpositive\nmeh\tneutral\n")
    code, err = run_cli(["evaluate", "--model", str(run), "--data", str(tmp_path / "unseen.tsv")], capsys)
    assert code == 2 and "unseen.tsv (row 2): label 'neutral' was never seen in training" in err
    (tmp_path / "nolabel.tsv").write_text("sentence\tscore\ngood\t1\n")
    code, err = run_cli(["evaluate", "--model", str(run), "--data", str(tmp_path / "nolabel.tsv")], capsys)
    assert code == 2 and "nolabel.tsv:1: missing column 'label'" in err
    (tmp_path / "header.tsv").write_text("sentence\tlabel\n")
    code, err = run_cli(["evaluate", "--model", str(run), "--data", str(tmp_path / "header.tsv")], capsys)
    assert code == 2 and "header.tsv: no rows after the header" in err
    (tmp_path / "mixed.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tnegative\n")
    (tmp_path / "c.yaml").write_text(TINY)
    code, err = run_cli(
        [
            "train",
            "classifier",
            "--config",
            str(tmp_path / "c.yaml"),
            "--output",
            str(tmp_path / "o"),
            "--train",
            str(tmp_path / "mixed.tsv"),
            "--valid",
            str(tmp_path / "mixed.tsv"),
        ],
        capsys,
    )
    assert code == 2 and "mixed.tsv:3: label 'negative' mixes with labels of the other kind" in err
    code, err = run_cli(["classify", "--model", str(run), "--text-column", "x"], capsys)
    assert code == 2 and "No such option: --text-column" in err and "Traceback" not in err


def test_empty_text_is_classified_with_a_warning(sst_bundle, capsys, caplog) -> None:
    run, _ = sst_bundle
    assert main(["classify", "--model", str(run), "", "fine"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("negative", "positive") for line in lines)
    assert "classifying 1 empty texts" in caplog.text


def test_bundles_of_the_other_task_are_refused(sst_bundle, capsys) -> None:
    run, _ = sst_bundle
    code, err = run_cli(["translate", "--model", str(run), "ein Hund"], capsys)
    assert code == 2 and "this is a classification model; translate needs a translation model" in err
