"""Checkpoint averaging: `train.keep_checkpoints` keeps the last N validations' weights, and `nlp-rnn average`
writes a bundle whose weights are exactly their mean."""

import json
from pathlib import Path

import torch
from helpers import train_tiny_classifier
from safetensors.torch import load_file

from nlp_rnn.cli import main
from nlp_rnn.tasks.base import load


def test_average_of_the_last_and_best_kept_checkpoints(tmp_path: Path, capsys) -> None:
    run = train_tiny_classifier(
        tmp_path, 6, "batch_tokens: 40, validate_every: 2, keep_checkpoints: 2, lr: 0.01"
    )
    kept = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step-00000004", "step-00000006"]  # step 2's was dropped
    weights = [load_file(str(run / "checkpoints" / k / "model.safetensors")) for k in kept]
    assert main(["average", str(run), "--last", "2", "--output", str(tmp_path / "avg")]) == 0
    averaged = load(tmp_path / "avg")
    for name, tensor in averaged.model.state_dict().items():
        if tensor.is_floating_point() and name in weights[0]:
            torch.testing.assert_close(tensor, (weights[0][name] + weights[1][name]) / 2, rtol=0, atol=1e-7)
    assert averaged.meta["averaged"]["steps"] == [4, 6]
    index = [json.loads(line) for line in (run / "checkpoints" / "index.jsonl").read_text().splitlines()]
    best = max(index, key=lambda r: r["score"])
    assert main(["average", str(run), "--best", "1", "--output", str(tmp_path / "best1")]) == 0
    assert load(tmp_path / "best1").meta["averaged"]["steps"] == [best["step"]]
    assert main(["average", str(run), "--last", "3", "--output", str(tmp_path / "x")]) == 2
    assert "2 kept checkpoints, fewer than the 3 asked for" in capsys.readouterr().err
