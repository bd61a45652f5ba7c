"""Sequence-level distillation end to end: the teacher's translations become the student's targets."""

from pathlib import Path

import pytest
import yaml
from helpers import CHECKPOINTS, tiny_config, write_slice

from nlp_rnn.cli import main
from nlp_rnn.config import to_dict
from nlp_rnn.tasks.base import load
from nlp_rnn.tasks.translation import Translator
from nlp_rnn.tasks.translation.distill import distill


@pytest.mark.slow
def test_a_student_trains_on_the_teachers_translations(multi30k: Path, tmp_path: Path, capsys) -> None:
    cfg = tiny_config(write_slice(multi30k, tmp_path / "data", n=60), max_steps=4)
    summary = distill(
        CHECKPOINTS / "multi30k-de-en",
        cfg,
        tmp_path / "student",
        beam_size=2,
        precision="fp32",
        progress=False,
    )
    corpus = tmp_path / "student" / "distilled"
    sources = (corpus / "train.src").read_text(encoding="utf-8").splitlines()
    targets = (corpus / "train.tgt").read_text(encoding="utf-8").splitlines()
    assert (
        summary["distilled"]["pairs"]
        == len(sources)
        == len(targets)
        == 60 - summary["distilled"]["empty_left_out"]
    )
    teacher = Translator(load(CHECKPOINTS / "multi30k-de-en"), "fp32")
    expected = [t[0].text for t in teacher.translate(sources[:5], teacher.options(beam_size=2))]
    assert targets[:5] == expected
    references = (tmp_path / "data" / "train.en").read_text(encoding="utf-8").splitlines()
    assert targets != references[: len(targets)]
    student = load(tmp_path / "student")
    assert student.meta["data"]["train"].endswith("train.src") or "distilled" in student.meta["data"]["train"]
    assert student.tokenizer.src_vocab_size == teacher.tokenizer.src_vocab_size  # the teacher's tokenizer
    assert summary["step"] == 4 and Translator(student, "fp32").translate(["Ein Hund."])[0]
    # a second run, through the command, reuses the translations
    stamp = (corpus / "train.tgt").stat().st_mtime_ns
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    args = ["distill", str(CHECKPOINTS / "multi30k-de-en"), "--config", str(config), "--beam-size", "2"]
    assert main([*args, "--precision", "fp32", "--output", str(tmp_path / "student2"), "--quiet"]) == 0
    assert (tmp_path / "student2" / "distilled" / "train.tgt").is_file() and stamp == (
        corpus / "train.tgt"
    ).stat().st_mtime_ns
    assert load(tmp_path / "student2").meta["step"] == 4
    # a trained student's corpus is never replaced: not by a new run into its folder, nor by a resumed one made
    # another way (refused before the teacher translates anything)
    before = (corpus / "train.tgt").read_bytes(), (corpus / "distilled.json").read_bytes()
    other = [*args[:-1], "3", "--precision", "fp32", "--output", str(tmp_path / "student"), "--quiet"]
    assert main(other) == 2
    assert "already holds a training run; use --resume" in capsys.readouterr().err
    assert main([*other, "--resume"]) == 2
    assert "the student to resume trained on translations made with" in capsys.readouterr().err
    assert ((corpus / "train.tgt").read_bytes(), (corpus / "distilled.json").read_bytes()) == before
    # nothing to resume, or a corpus that lost a file: refused before the teacher translates
    fresh = [*other[:-2], str(tmp_path / "fresh"), "--quiet", "--resume"]
    assert main(fresh) == 2 and "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "fresh").exists()
    (corpus / "train.tgt").unlink()
    assert main([*other, "--resume"]) == 2
    assert "lacks train.tgt" in capsys.readouterr().err
    assert (corpus / "distilled.json").read_bytes() == before[1] and not (corpus / "train.tgt").exists()


@pytest.mark.parametrize("option", ["--beam-size", "--batch-size"])
def test_distill_refuses_a_bad_beam_or_batch(option: str, tmp_path: Path, capsys) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("data: {train_src: a.de, train_tgt: a.en}\n")
    assert (
        main(
            [
                "distill",
                str(CHECKPOINTS / "multi30k-de-en"),
                "--config",
                str(config),
                "--output",
                str(tmp_path / "o"),
                option,
                "0",
            ]
        )
        == 2
    )
    assert f"{option} must be at least 1" in capsys.readouterr().err


def test_distill_checks_the_validation_data_before_the_teacher_translates(
    multi30k: Path, tmp_path: Path, capsys
) -> None:
    cfg = tiny_config(write_slice(multi30k, tmp_path / "data", n=20))
    config = tmp_path / "s.yaml"
    data = dict(to_dict(cfg)["data"], valid_src=str(tmp_path / "missing.de"))
    config.write_text(yaml.safe_dump(dict(to_dict(cfg), data=data)))
    out = tmp_path / "o"
    assert (
        main(["distill", str(CHECKPOINTS / "multi30k-de-en"), "--config", str(config), "--output", str(out)])
        == 2
    )
    assert "missing.de" in capsys.readouterr().err
    assert not out.exists()  # nothing translated, no folder left
