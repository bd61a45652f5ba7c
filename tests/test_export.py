"""ONNX export and ONNX Runtime: the masked encoder equals the packed one, the exported shipped models translate
and classify like PyTorch, a sentence alone equals itself in a padded batch, and bad exports are one line."""

from pathlib import Path

import pytest
import torch
from helpers import ROOT

from nlp_rnn.data import make_batch
from nlp_rnn.deploy.onnx import MaskedEncoder, export, load_exported
from nlp_rnn.nn.encoder import Encoder
from nlp_rnn.search import SearchOptions
from nlp_rnn.tasks.base import load
from nlp_rnn.tasks.classification import Predictor
from nlp_rnn.tasks.translation import Translator

CHECKPOINTS = ROOT / "checkpoints"


@pytest.mark.parametrize(
    "cell, layers, bidirectional", [("gru", 1, True), ("lstm", 2, True), ("rnn_relu", 2, False)]
)
def test_the_masked_encoder_gives_the_states_of_the_packed_one(
    cell: str, layers: int, bidirectional: bool
) -> None:
    torch.manual_seed(0)
    encoder = Encoder(cell, 6, 5, layers, bidirectional, dropout=0.0).eval()
    lengths = torch.tensor([7, 3, 1, 5])
    batch = make_batch([[4 + (i * 3 + j) % 9 for j in range(n)] for i, n in enumerate(lengths.tolist())])
    embedded = torch.randn(4, 7, 6)
    packed, masked = (
        encoder(embedded, batch.src_len, batch.src_mask),
        MaskedEncoder(encoder)(embedded, batch.src_len, batch.src_mask),
    )
    torch.testing.assert_close(masked.states, packed.states, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(masked.final, packed.final, atol=1e-6, rtol=1e-5)


class Exports(dict):
    """The shipped bundles exported to ONNX on first use, so a test that needs one model exports only it."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def __missing__(self, name: str) -> Path:
        folder = {"de-en": "multi30k-de-en", "sst2": "sst2"}[name]
        self[name] = export(load(CHECKPOINTS / folder), self.out / name)
        return self[name]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    return Exports(tmp_path_factory.mktemp("onnx"))


@pytest.mark.slow
def test_onnx_runtime_translates_like_pytorch_and_alone_equals_batched(
    exported: dict, multi30k: Path
) -> None:
    assert sorted(p.name for p in exported["de-en"].iterdir()) == [
        "config.json",
        "decoder_step.onnx",
        "encoder.onnx",
        "manifest.json",
        "sentencepiece.model",
    ]
    sentences = (multi30k / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:200]
    torch_side, ort_side = (
        Translator(load(CHECKPOINTS / "multi30k-de-en"), "fp32", "off"),  # the whole output layer, as ONNX
        Translator(load_exported(exported["de-en"]), "fp32"),
    )
    # a beam's batch: 64 sentences on ONNX Runtime (its step takes the encoder states per beam row), else 256
    assert (ort_side.batch_size(1), ort_side.batch_size(5), torch_side.batch_size(5)) == (256, 64, 256)
    greedy = SearchOptions(beam_size=1, max_length=60)
    mine = [t[0].text for t in ort_side.translate(sentences, greedy, batch_size=64)]
    theirs = [t[0].text for t in torch_side.translate(sentences, greedy, batch_size=64)]
    same = sum(a == b for a, b in zip(mine, theirs))
    assert same >= 196, f"{same} of 200 identical"
    # The longest sentence alone, and padded among shorter ones, under ONNX Runtime; beam search runs too.
    longest = max(sentences, key=len)
    alone = ort_side.translate([longest], greedy)[0][0]
    batched = ort_side.translate([longest] + sentences[:20], greedy, batch_size=64)[0][0]
    assert alone.text == batched.text and alone.score == pytest.approx(batched.score, abs=1e-4)
    beams = ort_side.translate(sentences[:8], SearchOptions(beam_size=5, n_best=2, max_length=60))
    assert [b[0].text for b in beams] == [
        t[0].text for t in torch_side.translate(sentences[:8], SearchOptions(beam_size=5, max_length=60))
    ]


@pytest.mark.slow  # the export takes 4-11 s: the fast tier leaves it out
def test_onnx_runtime_classifies_like_pytorch(exported: dict, sst2: Path) -> None:
    texts = [
        line.split("\t")[0] for line in (sst2 / "test.tsv").read_text(encoding="utf-8").splitlines()[1:201]
    ]
    mine, theirs = (
        Predictor(load_exported(exported["sst2"])).classify(texts),
        Predictor(load(CHECKPOINTS / "sst2")).classify(texts),
    )
    assert [p.label for p in mine] == [p.label for p in theirs]
    assert max(abs(a.probability - b.probability) for a, b in zip(mine, theirs)) < 1e-4


@pytest.mark.slow
def test_the_cli_exports_and_runs_on_onnx_runtime_and_refuses_bad_folders(
    exported: dict, tmp_path: Path, capsys
) -> None:
    """The commands in this process (`main`, as the console script calls it); the console script itself runs
    in a subprocess in test_cli."""
    from nlp_rnn.cli import main

    capsys.readouterr()
    assert (
        main(
            [
                "translate",
                "--engine",
                "onnxruntime",
                "--model",
                str(exported["de-en"]),
                "Ein Hund rennt durch den Schnee.",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "A dog runs through the snow."
    assert (
        main(
            [
                "classify",
                "--engine",
                "onnxruntime",
                "--model",
                str(exported["sst2"]),
                "a gripping , beautifully acted film .",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("positive\t")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    for argv, message in (
        (
            ("export", str(broken), "--output", str(tmp_path / "x")),
            f"error: {broken / 'meta.json'}: corrupt (not valid JSON)",
        ),
        (
            ("translate", "--engine", "onnxruntime", "--model", str(CHECKPOINTS / "multi30k-de-en"), "x"),
            f"error: {CHECKPOINTS / 'multi30k-de-en'}: a PyTorch bundle; export it first",
        ),
        (
            (
                "translate",
                "--engine",
                "onnxruntime",
                "--model",
                str(exported["de-en"]),
                "--shortlist",
                "on",
                "x",
            ),
            "error: --shortlist on works with one torch model: an ensemble or an exported ONNX model",
        ),
        (
            (
                "translate",
                "--engine",
                "onnxruntime",
                "--model",
                str(exported["de-en"]),
                "--precision",
                "bf16",
                "x",
            ),
            "error: --precision bf16: this model runs in fp32 only (--engine onnxruntime)",
        ),
        (
            ("export", str(CHECKPOINTS / "shakespeare-char"), "--output", str(tmp_path / "y")),
            "error: "
            + str(CHECKPOINTS / "shakespeare-char")
            + ": ONNX export covers translation models and classifiers",
        ),
    ):
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith(message), err


def test_exporting_is_seen_inside_an_onnx_export_and_a_trace_only(tmp_path: Path) -> None:
    """`fast.exporting` (the plain operators and one graph for every batch) reads the exporter's flags itself:
    true while `export_graph` or torch.jit.trace runs the module, false before and after."""
    from nlp_rnn.nn import fast
    from nlp_rnn.onnxrt import export_graph

    seen, onnx = [], []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(fast.exporting())
            onnx.append((fast._onnx_exporting(), torch.onnx.is_in_onnx_export()))
            return fast.tanh(x) * 3

    assert not fast.exporting()
    export_graph(Probe(), (torch.ones(2, 4),), tmp_path / "probe.onnx", ["x"], ["y"], {0: {0: "B"}})
    assert seen and all(seen)
    assert onnx and all(ours and theirs for ours, theirs in onnx)  # the flags it caches, and torch's call
    seen.clear()
    onnx.clear()
    torch.jit.trace(Probe(), (torch.ones(2, 4),), check_trace=False)  # its check runs the module eagerly too
    assert seen and all(seen)
    seen.clear()
    with torch.no_grad():
        Probe()(torch.ones(2, 4))
    assert seen == [False] and not fast.exporting()
    assert onnx[-1] == (False, False)
