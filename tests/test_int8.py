"""`--precision int8`: int8 products close to fp32, the int8 recurrent layers close to torch's, and the
shipped models keep their quality (BLEU within 0.5 of fp32, sentiment labels agreeing on at least 99 %)."""

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import IMDB_TEST, ROOT

from nlp_rnn.data import make_batch
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn import int8
from nlp_rnn.nn.encoder import Encoder
from nlp_rnn.nn.int8 import Int8Encoder, Int8Linear, Int8Stack, Packed, product
from nlp_rnn.precision import resolve_precision
from nlp_rnn.search import SearchOptions
from nlp_rnn.tasks.base import load
from nlp_rnn.tasks.classification import Predictor
from nlp_rnn.tasks.metrics import bleu
from nlp_rnn.tasks.translation import Translator

CHECKPOINTS = ROOT / "checkpoints"


def test_int8_products_are_close_to_fp32() -> None:
    torch.manual_seed(0)
    x, w, b = torch.randn(50, 64), torch.randn(96, 64) * 0.1, torch.randn(96)
    exact = F.linear(x, w, b)
    approx = Int8Linear(w, b)(x.view(5, 10, 64)).view(50, 96)
    assert (approx - exact).norm() / exact.norm() < 0.02


def test_the_int8_product_past_torch_function_handling_equals_torchs_own_call() -> None:
    torch.manual_seed(2)
    linear = Int8Linear(torch.randn(48, 16), torch.randn(48))
    for rows in (1, 5):
        x = torch.randn(rows, 16)
        packed = linear.packed.pick(rows) if isinstance(linear.packed, Packed) else linear.packed
        assert torch.equal(product(x, linear.packed), torch.ops.quantized.linear_dynamic(x, packed, True))
    assert torch._C._is_torch_function_enabled()  # switched off for the call only


def test_large_products_take_onednn_where_it_is_faster_with_the_same_numbers(monkeypatch) -> None:
    """Where oneDNN's int8 kernels are faster for large products (AMX), an Int8Linear packs its weight for them at
    its first large product: the same quantisation, so the same numbers to float rounding; small ones keep fbgemm."""
    monkeypatch.setattr(int8, "_onednn_for_large", lambda: True)  # as on AMX, whatever this CPU is
    monkeypatch.setattr(int8, "ONEDNN_AFTER_ROWS", 0)  # packed at the first large product
    torch.manual_seed(4)
    w, b = torch.randn(600, 256) * 0.1, torch.randn(600)
    linear, engine = Int8Linear(w, b), torch.backends.quantized.engine
    assert isinstance(linear.packed, Packed) and linear.packed.large is None
    small, large = torch.randn(2, 256), torch.randn(linear.packed.from_rows, 256)
    fbgemm = linear.packed.small
    assert torch.equal(linear(small), torch.ops.quantized.linear_dynamic(small, fbgemm, True))
    assert linear.packed.large is None  # not packed for a small product
    waiting = Int8Linear(
        w, b
    )  # with the default, large products run in fbgemm until they pay for the packing
    monkeypatch.setattr(int8, "ONEDNN_AFTER_ROWS", 3 * waiting.packed.from_rows)
    for _ in range(2):
        assert torch.equal(waiting(large), torch.ops.quantized.linear_dynamic(large, fbgemm, True))
        assert waiting.packed.large is None
    monkeypatch.setattr(int8, "ONEDNN_AFTER_ROWS", 0)
    try:
        got = linear(large)
    except RuntimeError as err:  # a CPU whose oneDNN build lacks int8 kernels: the kind is not listed there
        pytest.skip(f"oneDNN int8 products not available here: {err}")
    assert (
        linear.packed.large is not None and torch.backends.quantized.engine == engine
    )  # the engine restored
    assert torch.allclose(got, torch.ops.quantized.linear_dynamic(large, fbgemm, True), rtol=1e-4, atol=1e-4)
    exact = large @ w.t() + b
    assert float((got - exact).norm() / exact.norm()) < 0.05  # int8's own error


def test_an_int8_product_restricted_to_rows_equals_those_columns_of_the_whole_product() -> None:
    torch.manual_seed(1)
    x, w, b = torch.randn(7, 32), torch.randn(200, 32), torch.randn(200)
    whole = Int8Linear(w, b, keep_rows=True)
    rows = torch.tensor([0, 5, 6, 77, 150, 199])
    assert torch.equal(whole.rows(rows)(x), whole(x)[:, rows])  # the same int8 rows and scales
    with pytest.raises(NlpRnnError, match="keep_rows"):
        Int8Linear(w, b).rows(rows)


def test_rows_with_common_ones_packed_once_give_the_same_columns() -> None:
    torch.manual_seed(3)
    w, b = torch.randn(200, 32), torch.randn(200)
    whole = Int8Linear(w, b, keep_rows=True)
    common = torch.tensor([2, 5, 40, 120])
    for rows in ([2, 3, 5, 40, 41, 120, 199], [0, 2, 5, 40, 120], [2, 5, 40, 120]):
        rows = torch.tensor(rows)
        split = whole.rows(rows, common)
        columns = getattr(split, "columns", torch.arange(rows.numel()))  # the split's own column order
        assert sorted(columns.tolist()) == list(range(rows.numel()))
        for x in (torch.randn(3, 32), torch.randn(2, 4, 32)):  # a step's (B, I) and any leading shape
            assert torch.equal(split(x), whole.rows(rows)(x)[..., columns])
    assert whole.common[0] is common  # packed at the first call, kept for the next
    kept = whole.common[1]
    whole.rows(torch.tensor([1, 2, 5, 40, 120]), common)
    assert whole.common[1] is kept
    lacking = torch.tensor([2, 5, 7])  # without all the common rows: packed whole, still the same
    assert torch.equal(whole.rows(lacking, common)(x), whole(x)[..., lacking])


@pytest.mark.parametrize(
    "cell, layers, bidirectional", [("gru", 1, True), ("lstm", 2, True), ("rnn_tanh", 1, False)]
)
def test_int8_recurrent_layers_follow_torch_and_ignore_padding(
    cell: str, layers: int, bidirectional: bool
) -> None:
    torch.manual_seed(1)
    encoder = Encoder(cell, 16, 32, layers, bidirectional, dropout=0.0).eval()
    batch = make_batch([[5] * n for n in (9, 4, 1, 6)])
    embedded = torch.randn(4, 9, 16)
    exact, approx = (
        encoder(embedded, batch.src_len, batch.src_mask),
        Int8Encoder(encoder)(embedded, batch.src_len, batch.src_mask),
    )
    assert (approx.states - exact.states).norm() / exact.states.norm() < 0.05
    assert (approx.final - exact.final).norm() / exact.final.norm() < 0.05
    assert torch.equal(approx.states[~batch.src_mask], torch.zeros_like(approx.states[~batch.src_mask]))
    if not bidirectional:  # a language model's stack: same call convention, state carried in and out
        h0 = torch.randn(layers, 4, 32)
        out, h = encoder.rnn(embedded, h0)
        out8, h8 = Int8Stack(encoder.rnn)(embedded, h0)
        assert (out8 - out).norm() / out.norm() < 0.05 and (h8 - h).norm() / h.norm() < 0.05


@pytest.mark.slow
def test_int8_keeps_the_shipped_models_quality(multi30k: Path, sst2: Path) -> None:
    sources = (multi30k / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:300]
    refs = (multi30k / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:300]
    bundle = load(CHECKPOINTS / "multi30k-de-en")
    scores = {}
    for precision in ("fp32", "int8"):
        translator = Translator(bundle, precision)
        out = translator.translate(sources, SearchOptions(beam_size=1), 128)
        scores[precision] = bleu([o[0].text for o in out], refs)[0].score
    assert abs(scores["int8"] - scores["fp32"]) <= 0.5, scores
    texts = [line.split("\t")[0] for line in (sst2 / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    classifier = load(CHECKPOINTS / "sst2")
    fp32, int8 = Predictor(classifier, "fp32").classify(texts), Predictor(classifier, "int8").classify(texts)
    agree = sum(a.label == b.label for a, b in zip(fp32, int8)) / len(texts)
    assert agree >= 0.99, agree
    # the default sentiment model (`classify` without --model), which `auto` runs in int8 on some CPU kinds:
    # SST-2's sentences and 100 raw IMDb test reviews (on an AVX2-only CPU a review takes ~0.17 s in each precision:
    # 200 made this the suite's slowest test by far, 142 s on a Zen 1)
    with open(IMDB_TEST, encoding="utf-8", newline="") as rows:
        reviews = [row["text"] for _, row in zip(range(100), csv.DictReader(rows))]
    default = load(CHECKPOINTS / "sentiment")
    labels = [
        line.split("\t")[1] for line in (sst2 / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    ]
    for name, sample in (("sst2", texts), ("imdb", reviews)):
        fp32, int8 = Predictor(default, "fp32").classify(sample), Predictor(default, "int8").classify(sample)
        agree = sum(a.label == b.label for a, b in zip(fp32, int8)) / len(sample)
        assert agree >= 0.99, (name, agree)
        if name == "sst2":  # the figure the bundle's card and the README state for it, in fp32
            names = dict(zip(default.meta["label_values"], default.meta["labels"]))
            right = sum(names[y] == p.label for y, p in zip(labels, fp32)) / len(labels)
            stated = default.meta["tests"]["SST-2 test accuracy"]
            assert right == pytest.approx(stated, abs=0.0006), (right, stated)
            assert f"{100 * stated:.2f} %" in (ROOT / "README.md").read_text()
    with pytest.raises(NlpRnnError, match="--precision int8 runs on the CPU"):
        resolve_precision("int8", torch.device("cuda"))
