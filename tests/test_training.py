"""The training loop on a slice of real Multi30k: resume, budgets, bundles, metrics, atomic saves."""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import losses, tiny_config, write_slice

from nlp_rnn import bundle as bundles
from nlp_rnn.tasks.base import load as load_bundle
from nlp_rnn.tasks.translation import Translator, train_translation


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(multi30k: Path, tmp_path: Path) -> None:
    data = write_slice(multi30k, tmp_path / "data")
    cfg = tiny_config(
        data, max_steps=10, validate_every=3, teacher_forcing=0.8
    )  # sampling + dropout use the RNG
    train_translation(cfg, tmp_path / "whole", progress_bar=False)
    train_translation(
        replace(cfg, train=replace(cfg.train, max_steps=5)), tmp_path / "split", progress_bar=False
    )
    # A run killed after its step-5 save left later lines behind; resuming must drop them.
    with open(tmp_path / "split" / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 6, "train_loss": 99.0}) + "\n")
    train_translation(cfg, tmp_path / "split", resume=True, progress_bar=False)
    whole, split = losses(tmp_path / "whole"), losses(tmp_path / "split")
    assert sorted(whole) == sorted(split) == list(range(1, 11))
    for step in range(6, 11):
        assert split[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_output_folder_bundles_metrics_and_round_trip(multi30k: Path, tmp_path: Path) -> None:
    data = write_slice(multi30k, tmp_path / "data")
    out = tmp_path / "run"
    summary = train_translation(tiny_config(data, max_steps=6), out, progress_bar=False)
    assert summary["stopped"] == "budget" and summary["step"] == 6
    assert {p.name for p in out.iterdir()} >= {"best", "last", "metrics.jsonl"}
    assert (out / "last" / bundles.TRAINER).is_file() and not (out / "best" / bundles.TRAINER).exists()
    assert summary["shortlist"]["coverage"] > 0.5 and (out / "best" / bundles.SHORTLIST).is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_keys = {"step", "elapsed_s", "train_loss", "target_tokens", "tokens_per_s"}
    val_keys = {"step", "elapsed_s", "val_loss", "val_ppl", "val_bleu"}
    assert all(train_keys <= set(r) for r in records if "train_loss" in r)
    assert [r["step"] for r in records if "val_loss" in r] == [
        4,
        6,
    ]  # every 4 steps, and at the end of the budget
    assert all(val_keys <= set(r) for r in records if "val_loss" in r)

    meta = bundles.read_meta(out)  # a training folder means its best/
    assert meta["task"] == "translation" and meta["src_lang"] == "de"
    validations = [r for r in records if "val_bleu" in r]
    chosen = max(
        validations, key=lambda r: r["val_bleu"]
    )  # the first of equal scores: a later one must improve
    assert (
        meta["best"]["val_bleu"] == chosen["val_bleu"]
        and meta["best"]["step"] == chosen["step"] == meta["step"]
    )
    data = json.loads((out / "best" / bundles.CONFIG).read_text())["data"]
    assert data["train_src"] == os.path.relpath(
        tmp_path / "data" / "train.de"
    )  # relative, as users name their data
    last = load_bundle(out / "last")
    assert last.meta["step"] == 6 and load_bundle(out).meta["step"] == meta["step"]


def test_bundle_reproduces_the_trained_model_exactly(multi30k: Path, tmp_path: Path) -> None:
    data = write_slice(multi30k, tmp_path / "data", n=200)
    out = tmp_path / "run"
    train_translation(tiny_config(data, max_steps=4), out, progress_bar=False)
    original = load_bundle(out / "best")
    bundles.save(tmp_path / "copy", original)
    copy = load_bundle(tmp_path / "copy")
    for (name, a), (_, b) in zip(original.model.state_dict().items(), copy.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert copy.config == original.config
    texts = ["Ein kleines Mädchen klettert.", "Männer arbeiten."]
    assert [t[0].text for t in Translator(copy).translate(texts)] == [
        t[0].text for t in Translator(original).translate(texts)
    ]


def test_max_minutes_budget_validates_and_saves(multi30k: Path, tmp_path: Path) -> None:
    data = write_slice(multi30k, tmp_path / "data", n=200)
    summary = train_translation(
        tiny_config(data, max_steps=0, max_minutes=0.001, validate_every=1000),
        tmp_path / "run",
        progress_bar=False,
    )
    assert summary["stopped"] == "budget"
    assert (tmp_path / "run" / "best" / bundles.META).is_file()


def test_a_failed_save_leaves_the_previous_bundle_intact(multi30k: Path, tmp_path: Path, monkeypatch) -> None:
    data = write_slice(multi30k, tmp_path / "data", n=200)
    out = tmp_path / "run"
    train_translation(tiny_config(data, max_steps=4), out, progress_bar=False)
    before = (out / "best" / bundles.WEIGHTS).read_bytes()
    saved = load_bundle(out / "best")

    from safetensors import SafetensorError

    from nlp_rnn.errors import NlpRnnError

    def broken(*args, **kwargs):
        raise OSError("permission denied")

    monkeypatch.setattr(saved.tokenizer, "save", broken)
    with pytest.raises(NlpRnnError, match="cannot save .*permission denied.*the previous bundle is intact"):
        bundles.save(out / "best", saved)
    assert (out / "best" / bundles.WEIGHTS).read_bytes() == before
    monkeypatch.undo()

    def disk_full(*args, **kwargs):  # what safetensors raises when the disk fills during the write
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(bundles, "save_file", disk_full)
    with pytest.raises(NlpRnnError) as err:
        bundles.save(out / "best", saved)
    assert (
        str(err.value)
        == f"no space left on device while saving {out / 'best'}; the previous bundle is intact"
    )
    assert (out / "best" / bundles.WEIGHTS).read_bytes() == before
    assert (
        sorted(p.name for p in out.iterdir() if p.name.startswith(".best")) == []
    )  # no temporary folder left behind
    load_bundle(out / "best")


def test_existing_run_is_not_overwritten_without_resume(multi30k: Path, tmp_path: Path) -> None:
    from nlp_rnn.errors import NlpRnnError

    data = write_slice(multi30k, tmp_path / "data", n=200)
    train_translation(tiny_config(data, max_steps=2), tmp_path / "run", progress_bar=False)
    with pytest.raises(NlpRnnError, match="already holds a training run"):
        train_translation(tiny_config(data, max_steps=2), tmp_path / "run", progress_bar=False)
    shutil.rmtree(tmp_path / "run" / "last")
    with pytest.raises(NlpRnnError, match="nothing to resume"):
        train_translation(tiny_config(data, max_steps=2), tmp_path / "run", resume=True, progress_bar=False)


def test_fused_adam_only_where_torch_has_it(monkeypatch) -> None:
    from nlp_rnn.train import fused_adam

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for version, on_cpu in (("2.3.1+cpu", False), ("2.4.0", True), ("2.13.0+cpu", True), ("2.1.0", False)):
        monkeypatch.setattr(torch, "__version__", version)
        assert fused_adam(cpu) == on_cpu and fused_adam(cuda), version
    assert not fused_adam(torch.device("mps"))


def _primitives_created_again(user_setting: str = "") -> int:
    """In a fresh process that widens the cache (the user's own setting, if any, in its environment): oneDNN
    kernels compiled anew for 10 shapes met before, after 1,099 other shapes."""
    import subprocess
    import sys

    script = """
import torch
from nlp_rnn import devices
devices.widen_primitive_cache()
w = torch.randn(4, 3, 3, 3)
for n in list(range(1, 1100)) + ["mark"] + list(range(1, 11)):
    if n == "mark":
        print("MARK", flush=True)
    else:
        torch.nn.functional.conv2d(torch.randn(n, 3, 8, 8), w)
"""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if user_setting:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = user_setting
    env["ONEDNN_VERBOSE"] = "profile_create"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    return out.split("MARK", 1)[1].count("create:cache_miss")


@pytest.mark.slow  # two training runs and two processes of 1,109 convolutions: 17 s alone on a Zen 1
def test_training_keeps_the_kernels_of_earlier_shapes(multi30k: Path, tmp_path: Path, monkeypatch) -> None:
    # The trainer raises oneDNN's primitive cache unless the user set it ...
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    data = write_slice(multi30k, tmp_path / "data", n=50)
    train_translation(tiny_config(data, max_steps=1, validate_every=1), tmp_path / "run", progress_bar=False)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8192"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "100")
    train_translation(tiny_config(data, max_steps=1, validate_every=1), tmp_path / "run2", progress_bar=False)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "100"
    # ... and oneDNN then keeps kernels it would have dropped: shapes met again are not compiled again,
    # where with its default room (1,024, the user's setting here) they are.
    assert _primitives_created_again("1024") > 0
    assert _primitives_created_again() == 0
