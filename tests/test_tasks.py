"""A task is one unit: a toy task defined and registered here trains, saves, loads, predicts, evaluates and
shows in `info` with no edit to any shared module. Every built-in task also reads a Hub dataset name,
driven here through `datasets.load_dataset` on a local dataset folder."""

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
import typer
from helpers import ROOT, call, running, write_dataset
from torch import nn

import nlp_rnn
from nlp_rnn import bundle as bundles
from nlp_rnn.cli import main
from nlp_rnn.config import TrainConfig
from nlp_rnn.deploy.serve import create_app, load_models
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks import base as tasks

# ----------------------------------------------------------------------------- the toy task: majority of bits


@dataclass(frozen=True)
class MajorityModelConfig:
    hidden: int = 16


@dataclass(frozen=True)
class MajorityDataConfig:
    examples: int = 512
    length: int = 7


@dataclass(frozen=True)
class MajorityConfig:
    data: MajorityDataConfig = field(default_factory=MajorityDataConfig)
    model: MajorityModelConfig = field(default_factory=MajorityModelConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(lr=0.02, validate_every=25, log_every=25, max_steps=100)
    )


class MajorityModel(nn.Module):
    def __init__(self, cfg: MajorityModelConfig) -> None:
        super().__init__()
        self.rnn = nn.GRU(1, cfg.hidden, batch_first=True)
        self.output = nn.Linear(cfg.hidden, 2)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(bits.unsqueeze(-1).float())
        return self.output(h[-1])  # (B, 2)


def examples(n: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, length), generator=g)
    return bits, (bits.sum(1) * 2 > length).long()


def read_bits(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    for number, row in enumerate(rows, 1):
        if len(row) != 2 or set(row[0]) - {"0", "1"}:
            raise NlpRnnError(f"{path}:{number}: expected 'BITS LABEL'")
    return torch.tensor([[int(b) for b in r[0]] for r in rows]), torch.tensor([int(r[1]) for r in rows])


class MajorityPredictor:
    def __init__(self, bundle: bundles.Bundle) -> None:
        self.model = bundle.model.eval()

    @torch.no_grad()
    def predict(self, bit_strings: list[str]) -> list[int]:
        return self.model(torch.tensor([[int(b) for b in s] for s in bit_strings])).argmax(-1).tolist()


def majority_options(
    examples: Optional[int] = typer.Option(None, "--examples", help="Training sequences."),
    length: Optional[int] = typer.Option(None, "--length", help="Bits per sequence."),
) -> dict:
    """Train the majority-of-bits toy model."""
    return {"data": {"examples": examples, "length": length}}


def majority(
    bits: list[str] = typer.Argument(..., help="Bit strings."),
    model: Path = typer.Option(..., "--model", help="A majority bundle or training folder."),
) -> None:
    """Print whether each bit string has more ones than zeros (1) or not (0)."""
    for label in MajorityPredictor(tasks.load(model)).predict(bits):
        typer.echo(str(label))


def majority_endpoint(limits) -> tasks.Endpoint:
    return tasks.Endpoint(
        "majority",
        "The majority label of each bit string.",
        {},
        run=lambda predictor, texts, req: predictor.predict(texts),
        answer=lambda labels, req: {"labels": labels},
        batch_key=lambda req: (),
    )


class MajorityTask(tasks.Task):
    name = "majority"
    train_command = tasks.TrainCommand("majority", majority_options, config_required=False)
    config_cls = MajorityConfig
    needs_tokenizer = False
    components = (("recurrent", ("rnn.",)), ("output layer", ("output.",)))

    def build_model(self, cfg, tokenizer, meta):
        return MajorityModel(cfg.model)

    def prepare(self, cfg, out_dir, tokenizer):
        x, y = examples(cfg.data.examples, cfg.data.length, seed=0)
        vx, vy = examples(200, cfg.data.length, seed=1)
        bundle = tasks.new_bundle(self, cfg, None, {"data": {"train": "simulated"}})
        model = bundle.model

        class Batcher:
            def epoch(self, e: int) -> list[list[int]]:
                order = list(range(len(x)))
                random.Random(e).shuffle(order)
                return [order[i : i + 64] for i in range(0, len(order), 64)]

        def validate() -> dict:
            return {"val_acc": float((model(vx).argmax(-1) == vy).float().mean())}

        return tasks.TrainingSetup(
            bundle=bundle,
            batcher=Batcher(),
            collate=lambda index: (x[index], y[index]),
            loss_fn=lambda batch, step: (
                F.cross_entropy(model(batch[0]), batch[1], reduction="sum"),
                len(batch[1]),
            ),
            validate=validate,
            score_key="val_acc",
        )

    def wrap(self, bundle, precision="fp32"):
        return MajorityPredictor(bundle)

    def commands(self):
        return [majority]

    def endpoint(self, limits):
        return majority_endpoint(limits)

    def evaluate(self, bundle, request):
        results = []
        for path in request.data:
            bits, labels = read_bits(path)
            predicted = torch.tensor(
                MajorityPredictor(bundle).predict(["".join(map(str, r.tolist())) for r in bits])
            )
            results.append({"name": Path(path).name, "accuracy": float((predicted == labels).float().mean())})
        return {"task": self.name, "sets": results}

    def report(self, result):
        return [f"{s['name']}: majority accuracy {100 * s['accuracy']:.1f}%" for s in result["sets"]]

    def describe(self, bundle):
        return {"sequence length": bundle.config.data.length}


tasks.register(MajorityTask())


def test_a_task_registered_in_a_test_file_works_end_to_end(tmp_path: Path, capsys) -> None:
    summary = tasks.train("majority", MajorityConfig(), tmp_path / "run", progress_bar=False)
    assert summary["step"] == 100 and summary["best"]["val_acc"] >= 0.9
    assert not list((tmp_path / "run" / "best").glob("*.model"))  # no tokenizer in this bundle

    predictor = nlp_rnn.load(tmp_path / "run")
    assert isinstance(predictor, MajorityPredictor)
    assert predictor.predict(["1110000", "1111101", "0000011"]) == [0, 1, 0]

    bits, labels = examples(300, 7, seed=7)
    (tmp_path / "test.txt").write_text(
        "".join(f"{''.join(map(str, b.tolist()))} {int(y)}\n" for b, y in zip(bits, labels))
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "run"),
                "--data",
                str(tmp_path / "test.txt"),
                "--report",
                str(tmp_path / "report.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    accuracy = json.loads((tmp_path / "report.json").read_text())["sets"][0]["accuracy"]
    assert f"test.txt: majority accuracy {100 * accuracy:.1f}%" in out and accuracy >= 0.9

    assert main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "task:         majority" in out and "sequence length: 7" in out and "recurrent" in out
    (tmp_path / "bad.txt").write_text("0101 1\nxyz\n")
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt:2: expected 'BITS LABEL'" in capsys.readouterr().err


def test_the_toy_task_gets_a_train_command_a_prediction_command_an_endpoint_and_info(
    tmp_path: Path, capsys
) -> None:
    """No shared module names the toy task: the CLI and the server find it in the registry."""
    run = tmp_path / "run"
    assert (
        main(["train", "majority", "--output", str(run), "--length", "5", "--max-steps", "80", "--quiet"])
        == 0
    )
    assert f"model: {run / 'best'}" in capsys.readouterr().out
    assert json.loads((run / "best" / "config.json").read_text())["data"]["length"] == 5
    assert main(["majority", "--model", str(run), "11100", "00011", "10101"]) == 0
    assert capsys.readouterr().out.split() == ["1", "0", "1"]
    assert main(["info", str(run)]) == 0
    assert "sequence length: 5" in capsys.readouterr().out
    assert main(["train", "majority", "--output", str(tmp_path / "x"), "--colour", "red"]) == 2
    assert "No such option: --colour" in capsys.readouterr().err

    app = create_app(load_models([("bits", run)], "cpu", "fp32"))
    with running(app) as base:
        assert call(base, "/majority", {"texts": ["11100", "00011"]}) == (
            200,
            {"model": "bits", "labels": [1, 0]},
        )
        assert (
            call(base, "/majority", {"texts": ["1"], "beam_size": 2})[0] == 422
        )  # the endpoint's own fields only
        assert call(base, "/models")[1]["models"][0]["task"] == "majority"


def test_a_bundle_of_an_unregistered_task_is_refused(tmp_path: Path, capsys) -> None:
    tasks.train(
        "majority",
        MajorityConfig(train=TrainConfig(max_steps=1, validate_every=1)),
        tmp_path / "run",
        progress_bar=False,
    )
    meta = json.loads((tmp_path / "run" / "best" / "meta.json").read_text())
    (tmp_path / "run" / "best" / "meta.json").write_text(json.dumps({**meta, "task": "weather"}))
    assert main(["info", str(tmp_path / "run")]) == 2
    assert "unknown task 'weather'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- Hub dataset names, read from l


def test_every_task_reads_a_dataset_folder_through_load_dataset(
    multi30k: Path, sst2: Path, tmp_path: Path, capsys
) -> None:
    de = (multi30k / "train.de").read_text(encoding="utf-8").splitlines()[:120]
    en = (multi30k / "train.en").read_text(encoding="utf-8").splitlines()[:120]
    mt = write_dataset(
        tmp_path / "mt",
        {
            "train": [{"translation": {"de": d, "en": e}} for d, e in zip(de[:100], en[:100])],
            "validation": [{"translation": {"de": d, "en": e}} for d, e in zip(de[100:], en[100:])],
        },
    )
    (tmp_path / "mt.yaml").write_text(
        "tokenizer: {vocab_size: 400, model_type: unigram}\n"
        "model: {embedding_dim: 16, encoder_hidden: 16, decoder_hidden: 16, attention_dim: 16}\n"
    )
    assert (
        main(
            [
                "train",
                "translation",
                "--config",
                str(tmp_path / "mt.yaml"),
                "--output",
                str(tmp_path / "mt-run"),
                "--dataset",
                str(mt),
                "--src-lang",
                "de",
                "--tgt-lang",
                "en",
                "--max-steps",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "mt-run" / "best" / "meta.json").read_text())["data"]["train_pairs"] == 100

    lines = [
        line.split("\t") for line in (sst2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1:161]
    ]
    rows = [{"sentence": t, "label": int(y)} for t, y in lines]
    sst = write_dataset(tmp_path / "sst", {"train": rows[:120], "validation": rows[120:], "test": rows[120:]})
    (tmp_path / "sst.yaml").write_text(
        "tokenizer: {vocab_size: 400}\nmodel: {embedding_dim: 16, hidden_size: 16}\n"
    )
    assert (
        main(
            [
                "train",
                "classifier",
                "--config",
                str(tmp_path / "sst.yaml"),
                "--output",
                str(tmp_path / "sst-run"),
                "--dataset",
                str(sst),
                "--max-steps",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(["evaluate", "--model", str(tmp_path / "sst-run"), "--dataset", str(sst), "--split", "test"])
        == 0
    )
    assert "(40 examples)" in capsys.readouterr().out

    text = [{"text": line} for line in (multi30k / "train.en").read_text(encoding="utf-8").splitlines()[:200]]
    lm = write_dataset(tmp_path / "lm", {"train": text[:160], "validation": text[160:]})
    (tmp_path / "lm.yaml").write_text(
        "data: {streams: 4, bptt: 16}\nmodel: {embedding_dim: 16, hidden_size: 16, num_layers: 1}\n"
    )
    assert (
        main(
            [
                "train",
                "lm",
                "--config",
                str(tmp_path / "lm.yaml"),
                "--output",
                str(tmp_path / "lm-run"),
                "--dataset",
                str(lm),
                "--max-steps",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    meta = json.loads((tmp_path / "lm-run" / "best" / "meta.json").read_text())
    assert meta["data"]["train"] == f"{lm}:train" and meta["data"]["valid"] == f"{lm}:validation"


def test_every_shipped_config_loads_as_the_config_of_one_task() -> None:
    from nlp_rnn.config import load_config
    from nlp_rnn.tasks.classification import ClassifierConfig

    classes = [tasks.get(name).config_cls for name in tasks.names()]
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        loaded = []
        for cls in classes:
            try:
                loaded.append(load_config(path, cls))
            except NlpRnnError:
                pass
        assert loaded, f"{path.name} loads as no task's config"
    names = load_config(ROOT / "configs" / "sst5.yaml", ClassifierConfig).data.label_names
    assert list(names.values()) == ["very negative", "negative", "neutral", "positive", "very positive"]
