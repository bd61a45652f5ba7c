"""Sharing models: every bundle carries a model card; `push --dry-run` writes the exact upload; hf://ORG/NAME
loads from the Hugging Face cache with offline mode on (a pre-filled cache, no network, nothing mocked)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, train_tiny_classifier

from nlp_rnn.cli import main

CHECKPOINTS = ROOT / "checkpoints"


def test_a_trained_bundle_has_a_model_card_and_push_dry_run_writes_the_upload(tmp_path: Path, capsys) -> None:
    run = train_tiny_classifier(tmp_path)
    card = (run / "best" / "README.md").read_text()
    for fact in (
        "# nlp-rnn classification model",
        "**Labels:** negative, positive",
        "validation acc:",
        "nlp-rnn train classifier --output",
        "hardware:",
        "## Limitations",
        "rows.tsv",
    ):
        assert fact in card, fact
    upload = tmp_path / "upload"
    assert main(["push", str(run), "--repo", "someone/sentiment-test", "--dry-run", str(upload)]) == 0
    assert sorted(p.name for p in upload.iterdir()) == sorted(
        p.name for p in (run / "last").iterdir() if p.name != "trainer.pt"
    )
    assert "trainer.pt" in {p.name for p in (run / "last").iterdir()}
    assert main(["push", str(run), "--repo", "not a repo", "--dry-run", str(upload)]) == 2
    assert "--repo not a repo: expected ORG/NAME" in capsys.readouterr().err


@pytest.mark.slow
def test_hf_names_load_from_a_prefilled_cache_in_offline_mode(tmp_path: Path) -> None:
    cache, commit = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--sst2-test"
    shutil.copytree(CHECKPOINTS / "sst2", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    text = "a gripping , beautifully acted film ."

    def classify(model: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", "from nlp_rnn.cli import entry; entry()", "classify", text]
        command += ["--model", model, "--precision", "fp32"]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)

    local, hub = classify(str(CHECKPOINTS / "sst2")), classify("hf://someone/sst2-test")
    assert hub.returncode == 0, hub.stderr
    assert hub.stdout == local.stdout and hub.stdout.startswith("positive")
    pinned = classify(f"hf://someone/sst2-test@{commit}")
    assert pinned.stdout == local.stdout
    missing = classify("hf://someone/not-cached")
    assert missing.returncode == 2
    assert (
        "hf://someone/not-cached: not in the local Hub cache and the Hub cannot be reached" in missing.stderr
    )
