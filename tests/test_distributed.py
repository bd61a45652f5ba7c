"""Devices and multi-process training: torchrun with gloo on the CPU equals one process, resumes exactly,
writes from process 0 only; every tensor follows the model's device; run-folder locks; bad devices.

NLP_RNN_TEST_DEVICE (default: cuda where there is a GPU, else cpu) picks the device of the device tests.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, copy_examples, free_port, losses, tiny_config, write_slice
from safetensors.torch import load_file

from nlp_rnn import bundle as bundles
from nlp_rnn.config import to_dict
from nlp_rnn.data import make_batch
from nlp_rnn.errors import BundleError, NlpRnnError
from nlp_rnn.nn.classifier import Classifier, ClassifierModelConfig
from nlp_rnn.search import SearchOptions, beam_search, greedy
from nlp_rnn.tasks.base import load as load_bundle
from nlp_rnn.tasks.base import train
from nlp_rnn.train import RunLock

# The device the device tests train on: a GPU where there is one, else the CPU. A test that only means
# something off the CPU (a model moved between devices) says so and skips on a CPU-only machine.
DEVICE = os.environ.get("NLP_RNN_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")


def torchrun(cfg, out: Path, *extra: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node N -m nlp_rnn train translation ...` with gloo on the CPU."""
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(processes),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "nlp_rnn",
        "train",
        "translation",
        "--config",
        str(path),
        "--output",
        str(out),
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_make_the_update_one_process_makes_and_only_process_0_writes(
    multi30k: Path, tmp_path: Path
) -> None:
    data = write_slice(multi30k, tmp_path / "data", n=300)
    cfg = tiny_config(data, max_steps=6, validate_every=3, num_threads=1)
    cfg = replace(cfg, model=replace(cfg.model, dropout=0.0))
    train("translation", cfg, tmp_path / "one", progress_bar=False, device="cpu")
    done = torchrun(cfg, tmp_path / "two")
    one, two = (
        load_file(str(tmp_path / "one/last/model.safetensors")),
        load_file(str(tmp_path / "two/last/model.safetensors")),
    )
    assert one.keys() == two.keys()
    moved = max(
        float((one[k] - load_bundle(tmp_path / "one/best").model.state_dict()[k]).abs().max()) for k in one
    )
    assert (
        moved > 1e-3
    )  # the steps after the best model changed the weights: the comparison below means something
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=2e-5, msg=name)
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    # Process 0 alone wrote: every step logged once, each validation once, and one summary line printed.
    records = metrics(tmp_path / "two")
    assert [r["step"] for r in records if "train_loss" in r] == list(range(1, 7))
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert done.stdout.count("stopped (budget) at step 6") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        ".lock",
        "best",
        "cache",
        "last",
        "metrics.jsonl",
        "tensorboard",
    ]
    assert len(list((tmp_path / "two" / "tensorboard").iterdir())) == 1  # one event file: process 0's
    assert bundles.load_trainer_state(tmp_path / "two/last")["world_size"] == 2


@pytest.mark.slow
def test_a_stopped_two_process_run_resumes_like_an_uninterrupted_one(multi30k: Path, tmp_path: Path) -> None:
    data = write_slice(multi30k, tmp_path / "data", n=300)
    cfg = tiny_config(
        data, max_steps=8, validate_every=3, teacher_forcing=0.8, num_threads=1
    )  # dropout and sampling draw
    torchrun(cfg, tmp_path / "whole")
    torchrun(replace(cfg, train=replace(cfg.train, max_steps=4)), tmp_path / "split")
    torchrun(cfg, tmp_path / "split", "--resume")
    whole, split = losses(tmp_path / "whole"), losses(tmp_path / "split")
    assert sorted(whole) == sorted(split) == list(range(1, 9))
    for step in range(5, 9):
        assert split[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6)
    # Each process kept its own random-number state; one process cannot resume a two-process run.
    ranks = bundles.load_trainer_state(tmp_path / "split/last")["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch_rng"], ranks[1]["torch_rng"])
    with pytest.raises(NlpRnnError, match=r"saved by a run of 2 process\(es\), resumed with 1"):
        train("translation", cfg, tmp_path / "split", resume=True, progress_bar=False, device="cpu")


@pytest.mark.slow
def test_a_run_folder_has_one_owner_and_a_killed_owner_leaves_no_stuck_lock(
    multi30k: Path, tmp_path: Path
) -> None:
    data = write_slice(multi30k, tmp_path / "data", n=100)
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from nlp_rnn.train import RunLock; "
            f"lock = RunLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            NlpRnnError,
            match=rf"{out}: a training that is still running owns this folder \(pid {holder.pid} on ",
        ):
            train("translation", tiny_config(data, max_steps=1), out, progress_bar=False, device="cpu")
        assert not (out / "last").exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        holder.wait()
    assert (out / RunLock.NAME).is_file()
    summary = train("translation", tiny_config(data, max_steps=1), out, progress_bar=False, device="cpu")
    assert summary["step"] == 1


def test_a_cuda_device_where_there_is_none_is_one_line(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from nlp_rnn import devices
    from nlp_rnn.cli import main

    for argv in (
        ["translate", "--device", "cuda", "ein Hund"],
        [
            "train",
            "classifier",
            "--config",
            str(ROOT / "configs/sst2.yaml"),
            "--output",
            str(tmp_path / "o"),
            "--device",
            "cuda:1",
        ],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: --device {argv[argv.index('--device') + 1]}: no CUDA GPU is available "
            "here (this torch build or machine has none); use --device cpu"
        ]
    with pytest.raises(NlpRnnError, match="--device must be auto, cpu, cuda or cuda:N, got 'gpu0'"):
        devices.resolve("gpu0")
    assert devices.resolve("auto") == torch.device("cpu")


@pytest.mark.slow
def test_searches_classification_and_the_loss_create_every_tensor_on_the_model_device(copy_model) -> None:
    """With the default device `meta`, any tensor made without the model's device would be a meta tensor and fail."""
    src, tgt = copy_examples(6, seed=5)
    batch = make_batch(src, tgt)
    classifier = Classifier(
        ClassifierModelConfig(cell="gru", embedding_dim=8, hidden_size=8, word_dropout=0.3), 14, 3
    )
    expected_greedy = greedy(copy_model, batch, SearchOptions(beam_size=1))
    torch.set_default_device("meta")
    try:
        hyps = greedy(copy_model, batch, SearchOptions(beam_size=1, attention=True))
        beams = beam_search(
            copy_model, batch, SearchOptions(beam_size=3, n_best=2, attention=True, no_repeat_ngram=2)
        )
        probs = torch.softmax(classifier.eval().logits(make_batch(src, labels=[0, 1, 2, 0, 1, 2])), -1)
        classifier.train()
        class_loss, _ = classifier(make_batch(src, labels=[0, 1, 2, 0, 1, 2]))
        copy_model.train()
        loss, count = copy_model(batch, teacher_forcing=0.5, label_smoothing=0.1)
        loss.backward()
    finally:
        torch.set_default_device("cpu")
        copy_model.zero_grad(set_to_none=True)
        copy_model.eval()
    assert [h.tokens for h in hyps] == [h.tokens for h in expected_greedy]
    assert all(h.attention.device.type == "cpu" for h in hyps) and all(len(b) == 2 for b in beams)
    assert (
        probs.device.type == "cpu"
        and class_loss.device.type == "cpu"
        and loss.device.type == "cpu"
        and count > 0
    )


def test_a_model_trained_on_the_test_device_loads_anywhere_and_translates_the_same(
    multi30k: Path, tmp_path: Path
) -> None:
    from nlp_rnn.tasks.translation import Translator

    if torch.device(DEVICE).type == "cpu":
        pytest.skip(
            "needs a GPU (or NLP_RNN_TEST_DEVICE naming one): on the CPU it would compare a CPU load with a CPU load"
        )

    data = write_slice(multi30k, tmp_path / "data", n=100)
    train(
        "translation",
        tiny_config(data, max_steps=2, validate_every=2),
        tmp_path / "run",
        progress_bar=False,
        device=DEVICE,
    )
    here, cpu = (
        load_bundle(tmp_path / "run/best", device=DEVICE),
        load_bundle(tmp_path / "run/best", device="cpu"),
    )
    assert next(here.model.parameters()).device.type == torch.device(DEVICE).type
    sentences = (multi30k / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:8]
    for beam in (1, 3):
        on_device = [
            t[0].pieces
            for t in Translator(here, "fp32", "off").translate(
                sentences, SearchOptions(beam_size=beam, max_length=20, min_length=5)
            )
        ]
        on_cpu = [
            t[0].pieces
            for t in Translator(cpu, "fp32", "off").translate(
                sentences, SearchOptions(beam_size=beam, max_length=20, min_length=5)
            )
        ]
        assert on_device == on_cpu and any(on_cpu)


def test_a_config_that_does_not_fit_the_weights_is_refused_before_anything_is_allocated(
    tmp_path: Path,
) -> None:
    src = tmp_path / "bundle"
    shipped = load_bundle(ROOT / "checkpoints" / "multi30k-de-en")
    bundles.save(src, shipped)
    config = json.loads((src / bundles.CONFIG).read_text())
    config["model"]["decoder_hidden"] = 4_000_000
    (src / bundles.CONFIG).write_text(json.dumps(config))
    started = time.monotonic()
    with pytest.raises(BundleError) as err:
        load_bundle(src)
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert (
        "\n" not in message
        and f"{src / bundles.WEIGHTS}: " in message
        and f"but {src / bundles.CONFIG} describes" in message
    )
    assert "4000000" in message and f"{shipped.config.model.decoder_hidden}" in message
