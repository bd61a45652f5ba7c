"""Training that survives its environment: SIGTERM/SIGUSR1 save last/ and a resumed run equals an
uninterrupted one; NaN/inf losses are skipped, too many in a row stop with the best bundle intact."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from nlp_rnn.cli import main
from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.classifier import ClassifierModelConfig
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.classification import ClassifierConfig
from nlp_rnn.train import Trainer

ROWS = [("a fine and moving film", 1), ("dull , long and bad", 0), ("great cast , great story", 1)] * 20


def config(tmp_path: Path, **train) -> ClassifierConfig:
    table = tmp_path / "rows.tsv"
    table.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in ROWS))
    return ClassifierConfig(
        data=DataConfig(train=str(table), valid=str(table)),
        tokenizer=TokenizerConfig(model_type="unigram", vocab_size=300),
        model=ClassifierModelConfig(embedding_dim=8, hidden_size=8, dropout=0.3),
        train=TrainConfig(**{"batch_tokens": 60, "validate_every": 4, "log_every": 1, "lr": 0.01, **train}),
    )


def trainer(cfg: ClassifierConfig, out: Path, resume: bool = False, on_step=None) -> Trainer:
    setup = tasks.get("classification").prepare(cfg, out, tasks.TokenizerChoice(out, resume))
    if on_step is not None:
        loss_fn = setup.loss_fn

        def wrapped(batch, step):
            return on_step(step) or loss_fn(batch, step)

        setup.loss_fn = wrapped
    run = Trainer(cfg.train, setup, out, progress_bar=False)
    run.run = lambda: Trainer.run(run, resume)
    return run


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_saves_last_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, sig) -> None:
    cfg = config(tmp_path, max_steps=10)
    trainer(cfg, tmp_path / "whole").run()

    def kill_at_5(step):
        if step == 4:  # during the fifth step: it finishes, then the run stops and saves
            os.kill(os.getpid(), sig)

    summary = trainer(cfg, tmp_path / "split", on_step=kill_at_5).run()
    assert summary["stopped"] == "interrupted" and summary["step"] == 5
    assert (tmp_path / "split" / "last" / "meta.json").is_file()
    trainer(cfg, tmp_path / "split", resume=True).run()
    whole, split = losses(tmp_path / "whole"), losses(tmp_path / "split")
    assert sorted(split) == sorted(whole) == list(range(1, 11))
    for step in range(6, 11):
        assert split[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6)


def test_auto_resume_starts_then_resumes(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "cfg.yaml"
    config(tmp_path)  # writes the table
    cfg.write_text(
        f"data: {{train: {tmp_path / 'rows.tsv'}, valid: {tmp_path / 'rows.tsv'}}}\n"
        "tokenizer: {model_type: unigram, vocab_size: 300}\nmodel: {embedding_dim: 8, hidden_size: 8}\n"
        "train: {batch_tokens: 60, validate_every: 4}\n"
    )
    args = [
        "train",
        "classifier",
        "--config",
        str(cfg),
        "--output",
        str(tmp_path / "run"),
        "--quiet",
        "--auto-resume",
    ]
    assert main([*args, "--max-steps", "3"]) == 0
    assert main([*args, "--max-steps", "6"]) == 0  # continues from step 3 instead of refusing the folder
    assert "stopped (budget) at step 6" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_acc" in r] == [3, 4, 6]


def test_nonfinite_losses_are_skipped_and_too_many_in_a_row_stop_with_best_intact(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_steps=8, nonfinite_patience=3)
    nan = torch.tensor(float("nan"), requires_grad=True)
    run = trainer(cfg, tmp_path / "skip", on_step=lambda step: (nan * 1, 3) if step in (2, 5) else None)
    summary = run.run()
    assert summary["step"] == 8
    records = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("nonfinite_skipped", 0) for r in records if "train_loss" in r][-1] == 2
    assert all(torch.isfinite(p).all() for p in tasks.load(tmp_path / "skip").model.parameters())

    stop = trainer(cfg, tmp_path / "stop", on_step=lambda step: (nan * 1, 3) if step >= 4 else None)
    with pytest.raises(NlpRnnError, match="3 steps in a row with a non-finite loss; training stopped"):
        stop.run()
    best = tasks.load(tmp_path / "stop")
    assert best.meta["step"] == 4 and all(torch.isfinite(p).all() for p in best.model.parameters())


def test_tensorboard_event_files_hold_the_scalars_of_metrics_jsonl(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer(config(tmp_path, max_steps=8), tmp_path / "run").run()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("train/train_loss", "train_loss"), ("train/lr", "lr"), ("valid/acc", "val_acc")):
        logged = [r for r in records if key in r]
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [r["step"] for r in logged], tag
        assert [e.value for e in scalars] == pytest.approx([r[key] for r in logged], rel=1e-6), tag
    off = config(tmp_path, max_steps=2, tensorboard=False)
    trainer(off, tmp_path / "off").run()
    assert not (tmp_path / "off" / "tensorboard").exists()
