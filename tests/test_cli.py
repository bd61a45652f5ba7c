"""The `nlp-rnn` command driven end to end on a slice of real Multi30k: train -> translate -> evaluate."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_slice

from nlp_rnn.cli import main

TINY_CONFIG = """
data: {src_lang: de, tgt_lang: en, max_src_len: 60, max_tgt_len: 60}
tokenizer: {model_type: unigram, vocab_size: 500}
model: {embedding_dim: 32, encoder_hidden: 48, decoder_hidden: 64, attention_dim: 48, dropout: 0.1}
train: {batch_tokens: 1200, validate_every: 10, log_every: 5, lr: 0.003}
decode: {beam_size: 3}
"""


def run(args: list[str], capsys, stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(multi30k: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    data = write_slice(multi30k, folder / "data", n=600)
    (folder / "tiny.yaml").write_text(TINY_CONFIG)
    code = main(
        [
            "train",
            "translation",
            "--config",
            str(folder / "tiny.yaml"),
            "--output",
            str(folder / "run"),
            "--train-src",
            data.train_src,
            "--train-tgt",
            data.train_tgt,
            "--valid-src",
            data.valid_src,
            "--valid-tgt",
            data.valid_tgt,
            "--max-steps",
            "20",
            "--set",
            "train.log_every=4",  # over the config's 5
            "--quiet",
        ]
    )
    assert code == 0
    return folder / "run"


@pytest.mark.slow
def test_train_writes_a_usable_training_folder(trained: Path) -> None:
    assert (trained / "best" / "meta.json").is_file() and (trained / "last" / "trainer.pt").is_file()
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 20
    # `--set train.log_every=4` replaced the config file's 5: training logged every 4th step, and says so
    logged = [r["step"] for r in records if "train_loss" in r]
    assert logged[:3] == [4, 8, 12]
    assert json.loads((trained / "best" / "config.json").read_text())["train"]["log_every"] == 4


def test_resume_through_the_cli_continues_to_a_larger_budget(trained: Path, tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    config = trained.parent / "tiny.yaml"
    data = trained.parent / "data"
    code, out, _ = run(
        [
            "train",
            "translation",
            "--config",
            str(config),
            "--output",
            str(copy),
            "--train-src",
            str(data / "train.de"),
            "--train-tgt",
            str(data / "train.en"),
            "--valid-src",
            str(data / "val.de"),
            "--valid-tgt",
            str(data / "val.en"),
            "--max-steps",
            "25",
            "--resume",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0 and "at step 25" in out


def test_translate_arguments_keep_alignment(trained: Path, capsys) -> None:
    code, out, _ = run(
        ["translate", "--model", str(trained), "Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen."], capsys
    )
    lines = out.split("\n")[:-1]
    assert code == 0 and len(lines) == 3 and lines[1] == "" and lines[0] and lines[2]


def test_translate_stdin_odd_lines_stay_aligned(trained: Path, capsys, monkeypatch, caplog) -> None:
    odd = [
        "Ein Hund.",
        "",
        "   \t ",
        "Haus " * 2000,
        "Steuer\x07zeichen\x1b[31m rot",
        "Ein Mädchen ☃ 漢字.",
        "Ende.",
    ]
    stdin = ("\n".join(odd) + "\n").encode()
    code, out, err = run(
        ["translate", "--model", str(trained), "--batch-size", "2"],
        capsys,
        stdin=stdin,
        monkeypatch=monkeypatch,
    )
    assert code == 0 and len(out.split("\n")[:-1]) == len(odd) and "Traceback" not in err
    code, out, _ = run(
        ["translate", "--model", str(trained), "--batch-size", "2", "--format", "jsonl"],
        capsys,
        stdin=stdin,
        monkeypatch=monkeypatch,
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in rows] == odd
    assert [len(r["translations"]) for r in rows] == [
        1,
        0,
        0,
        1,
        1,
        1,
        1,
    ]  # blank lines: no translation, still a line
    assert "truncated 1 inputs" in caplog.text


def test_translate_invalid_utf8_on_stdin_is_a_one_line_error(trained: Path, capsys, monkeypatch) -> None:
    code, out, err = run(
        ["translate", "--model", str(trained)],
        capsys,
        stdin=b"Ein Hund.\nkaputt \xff\xfe\n",
        monkeypatch=monkeypatch,
    )
    assert code == 2 and err.strip().splitlines()[-1] == "error: stdin:2: not valid UTF-8"
    assert len(out.split("\n")[:-1]) <= 1  # never more lines out than good lines in


def test_translate_files_jsonl_nbest_and_attention_plot(trained: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "in.de").write_text("Ein Mann.\n\nZwei Frauen laufen.\n")
    code, _, _ = run(
        [
            "translate",
            "--model",
            str(trained),
            "--input",
            str(tmp_path / "in.de"),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--format",
            "jsonl",
            "--beam-size",
            "4",
            "--n-best",
            "3",
            "--attention-plot",
            str(tmp_path / "att.png"),
        ],
        capsys,
    )
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3] and rows[1]["translations"] == []
    for row in (rows[0], rows[2]):
        scores = [t["score"] for t in row["translations"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert len({t["text"] for t in row["translations"]}) >= 2
    assert (tmp_path / "att.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_bleu_matches_the_sacrebleu_command(
    trained: Path, multi30k: Path, tmp_path: Path, capsys
) -> None:
    for lang in ("de", "en"):
        lines = (multi30k / f"test_2016_flickr.{lang}").read_text(encoding="utf-8").splitlines()[:60]
        (tmp_path / f"test.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, _ = run(
        [
            "evaluate",
            "--model",
            str(trained),
            "--src",
            str(tmp_path / "test.de"),
            "--ref",
            str(tmp_path / "test.en"),
            "--beam-size",
            "2",
            "--report",
            str(tmp_path / "r.json"),
            "--hyps",
            str(tmp_path / "hyps.en"),
        ],
        capsys,
    )
    assert code == 0 and "BLEU signature: nrefs:1|case:mixed|eff:no|tok:13a" in out
    report = json.loads((tmp_path / "r.json").read_text())
    sacrebleu = subprocess.run(
        [
            sys.executable,
            "-m",
            "sacrebleu",
            str(tmp_path / "test.en"),
            "-i",
            str(tmp_path / "hyps.en"),
            "-b",
            "-w",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert report["sets"][0]["bleu"] == pytest.approx(float(sacrebleu.stdout.strip()), abs=0.005)
    assert report["decoding"]["beam_size"] == 2 and report["sets"][0]["sentences"] == 60


@pytest.mark.parametrize(
    "args, message",
    [
        (["translate", "--model", "/nonexistent/model", "x"], "model folder not found"),
        (["translate", "--beam-size", "0", "x"], "--beam-size must be at least 1"),
        (
            ["translate", "--n-best", "3", "--beam-size", "2", "x"],
            "--n-best 3 needs --beam-size of at least 3",
        ),
        (["translate", "--format", "xml", "x"], "--format must be text or jsonl"),
    ],
)
def test_bad_translate_options(trained: Path, args: list[str], message: str, capsys) -> None:
    if "--model" not in args:
        args = args[:1] + ["--model", str(trained)] + args[1:]
    code, _, err = run(args, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_evaluate_src_ref_of_different_lengths(trained: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "s.de").write_text("a\nb\nc\n")
    (tmp_path / "r.en").write_text("a\nb\n")
    code, _, err = run(
        [
            "evaluate",
            "--model",
            str(trained),
            "--src",
            str(tmp_path / "s.de"),
            "--ref",
            str(tmp_path / "r.en"),
        ],
        capsys,
    )
    assert code == 2 and "s.de has 3 lines but" in err and "r.en has 2" in err


@pytest.mark.parametrize(
    "setting, words",
    [
        ("train.lr", "--set train.lr: expected SECTION.KEY=VALUE"),
        ("train.lrr=0.1", "--set train.lrr=0.1: config: unknown key 'train.lrr'"),
        ("train.lr=fast", "--set train.lr=fast: config: train.lr"),
        ("train.lr=[", "--set train.lr=[: the value is not valid YAML"),
        ("train=3", "--set train=3: config: train must be a mapping"),
    ],
)
def test_a_bad_set_is_one_line_naming_it(setting: str, words: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "c.yaml").write_text("model: {cell: gru}\n")
    code, _, err = run(
        ["train", "translation", "--config", str(tmp_path / "c.yaml"), "--output", str(tmp_path / "o")]
        + ["--set", "model.cell=lstm", "--set", setting],
        capsys,
    )
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_settings_replace_only_their_keys(tmp_path: Path) -> None:
    from nlp_rnn.config import load_config, with_settings
    from nlp_rnn.tasks.translation.config import TranslationConfig

    (tmp_path / "c.yaml").write_text("model: {cell: lstm, dropout: 0.1}\ntrain: {lr: 0.003, seed: 7}\n")
    cfg = load_config(tmp_path / "c.yaml", TranslationConfig)
    new = with_settings(cfg, ["train.lr=0.002", "model.dropout=0.25", "train.average=ema", "train.lr=2e-3"])
    assert (new.train.lr, new.model.dropout, new.train.average) == (0.002, 0.25, "ema")
    assert (new.model.cell, new.train.seed) == ("lstm", 7)  # the file's other keys stay
    assert (cfg.train.lr, cfg.model.dropout, cfg.train.average) == (
        0.003,
        0.1,
        "none",
    )  # not changed in place


def test_train_errors_are_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.yaml").write_text("model:\n  cell: gru\n  layers: 2\n")
    code, _, err = run(
        ["train", "translation", "--config", str(tmp_path / "bad.yaml"), "--output", str(tmp_path / "o")],
        capsys,
    )
    assert code == 2 and "unknown key 'model.layers'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_console_script_pipes_stdin_without_traceback(trained: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nlp_rnn", "translate", "--model", str(trained)],
        input=b"Ein Hund.\n\nEine Katze.\n",
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0 and len(result.stdout.decode().split("\n")[:-1]) == 3
    assert b"Traceback" not in result.stderr


def test_classify_refuses_a_translation_bundle(trained: Path, capsys) -> None:
    code, _, err = run(["classify", "--model", str(trained), "a good film"], capsys)
    assert code == 2 and "this is a translation model; classify needs a classification model" in err


def test_running_out_of_memory_is_one_line_naming_what_to_lower(capsys, monkeypatch) -> None:
    """A real allocator failure (40 TB asked of the CPU) inside a command leaves as one line with torch's words
    and the settings to lower, not as an "internal error ... report it"."""
    import torch

    from nlp_rnn.tasks.translation import Translator

    def too_big(self, texts, opts=None, batch_size=64):
        return torch.empty(10**13)

    monkeypatch.setattr(Translator, "translate", too_big)
    assert main(["translate", "Ein Hund rennt."]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err
    assert "error: out of memory (DefaultCPUAllocator: can't allocate memory: you tried to allocate" in err
    assert "--batch-size" in err and "train.batch_tokens" in err and "--resume" in err
