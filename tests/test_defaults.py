"""The shipped default models: used when --model is omitted, and a clear message when they are missing."""

import csv
import json
import re
from pathlib import Path

from helpers import CHECKPOINTS, IMDB_TEST, ROOT

from nlp_rnn.cli import main
from nlp_rnn.normalise import normalise
from nlp_rnn.tasks import defaults
from nlp_rnn.tasks.metrics import bleu

SHIPPED = ROOT / "checkpoints"


def test_missing_default_model_says_how_to_get_one(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(defaults, "CHECKPOINTS", tmp_path)
    assert main(["translate", "Ein Hund."]) == 2
    err = capsys.readouterr().err
    assert (
        "no --model given and the default translation model" in err
        and "pass --model DIR, or train one" in err
    )
    assert main(["classify", "good"]) == 2
    assert "default classification model" in capsys.readouterr().err


def test_damaged_default_model_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "multi30k-de-en").mkdir()
    (tmp_path / "multi30k-de-en" / "meta.json").write_text("{broken")
    monkeypatch.setattr(defaults, "CHECKPOINTS", tmp_path)
    assert main(["translate", "Ein Hund."]) == 2
    assert "meta.json: corrupt" in capsys.readouterr().err


def test_shipped_translation_model_is_the_default_and_translates(
    multi30k: Path, tmp_path: Path, capsys
) -> None:
    src = (multi30k / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:100]
    ref = (multi30k / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:100]
    (tmp_path / "in.de").write_text("\n".join(src) + "\n", encoding="utf-8")
    assert (
        main(["translate", "--input", str(tmp_path / "in.de"), "--beam-size", "1", "--precision", "fp32"])
        == 0
    )
    hyps = capsys.readouterr().out.split("\n")[:-1]
    assert len(hyps) == 100
    assert bleu(hyps, ref)[0].score > 25


def test_shipped_sentiment_model_is_the_default(sst2: Path, capsys) -> None:
    lines = (sst2 / "test.tsv").read_text(encoding="utf-8").splitlines()[1:201]
    texts, gold = [line.split("\t")[0] for line in lines], [line.split("\t")[1] for line in lines]
    assert (
        main(["classify", "--format", "jsonl", "--", *texts]) == 0
    )  # "--": some PTB texts start with "-lrb-"
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["label"] for r in rows} == {"negative", "positive"}  # names; the data's 0/1 are label_id
    assert sum(str(r["label_id"]) == g for r, g in zip(rows, gold)) / len(gold) > 0.7


def test_the_default_sentiment_model_reads_raw_reviews(tmp_path: Path, capsys) -> None:
    """Whole IMDb test reviews as people write them (case, punctuation, <br /> tags), one per line."""
    with open(IMDB_TEST, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    picked = rows[::500]  # 50 reviews spread over the file (it is sorted by label)
    (tmp_path / "reviews.txt").write_text("\n".join(" ".join(r["text"].split()) for r in picked) + "\n")
    assert main(["classify", "--input", str(tmp_path / "reviews.txt"), "--format", "jsonl"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == len(picked) and {r["label"] for r in out} == {"negative", "positive"}
    assert sum(str(o["label_id"]) == r["label"] for o, r in zip(out, picked)) / len(picked) > 0.8


def test_the_default_sentiment_model_reads_empty_html_only_and_long_lines_as_they_come(
    tmp_path: Path, capsys, caplog
) -> None:
    """Through the command, in the shipped model's own windows: an empty line and one of only HTML are classified
    as empty (one warning for both), a review and its normalised form alike, and a 30,000-character line whole."""
    with open(IMDB_TEST, encoding="utf-8", newline="") as f:
        review = next(csv.DictReader(f))["text"]
    raw = f"<br />{' '.join(review.split())}<br /><br />"
    long = " ".join(review.split()) + " "
    lines = [
        "",
        "<br /><br />",
        raw,
        normalise(raw, ("html", "nfkc", "lower")).strip(),
        (long * 100)[:30_000],
    ]
    (tmp_path / "texts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["classify", "--input", str(tmp_path / "texts.txt"), "--format", "jsonl"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == len(lines)
    assert (
        out[0]["probabilities"] == out[1]["probabilities"]
        and out[2]["probabilities"] == out[3]["probabilities"]
    )
    assert "classifying 2 empty texts" in caplog.text


def test_shipped_bundles_and_configs_name_no_absolute_path() -> None:
    """Data is recorded by relative path or Hub name, never a machine's own folders."""
    files = [
        *CHECKPOINTS.glob("*/config.json"),
        *CHECKPOINTS.glob("*/meta.json"),
        *(ROOT / "configs").glob("*.yaml"),
    ]
    assert len(files) >= 6
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"[\"' ](/(work|home|tmp|root|Users)/|[A-Z]:\\\\)", text), path
