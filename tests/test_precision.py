"""`--precision auto` for inference follows a measured table by CPU kind and task; training keeps its rule."""

import pytest
import torch

from nlp_rnn import precision
from nlp_rnn.precision import INFERENCE_TABLE, cpu_kind, inference_precision, resolve_precision

CPU = torch.device("cpu")
TABLE = {"fast-int8": {"translation": "int8", "*": "bf16"}, "plain": {"*": "fp32"}, "unmeasured": None}


def test_auto_follows_the_injected_table_by_kind_and_task() -> None:
    assert inference_precision("auto", CPU, "translation", kind="fast-int8", table=TABLE) == "int8"
    assert inference_precision("auto", CPU, "language_model", kind="fast-int8", table=TABLE) == "bf16"
    assert inference_precision("auto", CPU, "translation", kind="plain", table=TABLE) == "fp32"
    # a model without int8 kernels takes the kind's general entry
    assert inference_precision("auto", CPU, "translation", False, kind="fast-int8", table=TABLE) == "bf16"


def test_unmeasured_kinds_and_explicit_precisions_keep_the_training_rule() -> None:
    rule = resolve_precision("auto", CPU)
    assert inference_precision("auto", CPU, "translation", kind="unmeasured", table=TABLE) == rule
    assert inference_precision("auto", CPU, "translation", kind="never-seen", table=TABLE) == rule
    for explicit in ("fp32", "bf16", "int8"):
        assert inference_precision(explicit, CPU, "translation", kind="plain", table=TABLE) == explicit
    with pytest.raises(precision.NlpRnnError, match="must be auto"):
        inference_precision("fp16", CPU, "translation", kind="plain", table=TABLE)


def test_this_machine_has_a_kind_and_the_table_names_every_kind() -> None:
    kind = cpu_kind()
    assert kind in INFERENCE_TABLE or kind in ("other", "other-avx512-bf16")
    assert {"amx", "avx512", "avx2"} <= set(INFERENCE_TABLE)
    for entry in INFERENCE_TABLE.values():
        assert entry is None or set(entry.values()) <= {"fp32", "bf16", "int8"}


def test_training_auto_skips_bf16_where_it_was_measured_slower() -> None:
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", CPU, kind="intel-avx512-bf16") == "fp32"
    assert resolve_precision("auto", CPU, kind="amd-avx512-bf16") == ("bf16" if native else "fp32")
    assert resolve_precision("bf16", CPU, kind="intel-avx512-bf16") == "bf16"  # asked for: obeyed


def test_an_avx2_cpu_translates_and_generates_in_int8_and_keeps_fp32_for_the_rest() -> None:
    kernels = "fbgemm" in torch.backends.quantized.supported_engines
    for task in ("translation", "language_model"):
        assert inference_precision("auto", CPU, task, kind="avx2") == ("int8" if kernels else "fp32")
        assert inference_precision("auto", CPU, task, int8_ok=False, kind="avx2") == "fp32"
    for task in ("classification", "forecasting"):
        assert inference_precision("auto", CPU, task, kind="avx2") == "fp32"


def test_a_bf16_interface_leaves_the_bundle_it_shares_in_float32() -> None:
    """Translator/Predictor/Generator in bf16 run a copy: the bundle's model, which the server's other
    interfaces and a later fp32 one use, keeps its float32 weights and answers."""
    from helpers import CHECKPOINTS

    from nlp_rnn.tasks.base import load
    from nlp_rnn.tasks.classification import Predictor
    from nlp_rnn.tasks.language_model import Generator
    from nlp_rnn.tasks.translation import Translator

    def floats(bundle) -> bool:
        return all(p.dtype == torch.float32 for p in bundle.model.parameters())

    de_en, sst2, chars = (load(CHECKPOINTS / n) for n in ("multi30k-de-en", "sst2", "shakespeare-char"))
    texts = ["Ein Hund läuft durch den Park.", "Zwei Männer spielen Fußball."]
    translated = [t[0].text for t in Translator(de_en, "fp32", "off").translate(texts)]
    labels = Predictor(sst2, "fp32").classify(["a gripping , beautifully acted film ."])
    for interface in (Translator(de_en, "bf16", "off"), Predictor(sst2, "bf16"), Generator(chars, "bf16")):
        assert next(interface.model.parameters()).dtype == torch.bfloat16
    assert floats(de_en) and floats(sst2) and floats(chars)
    assert [t[0].text for t in Translator(de_en, "fp32", "off").translate(texts)] == translated
    assert Predictor(sst2, "fp32").classify(["a gripping , beautifully acted film ."]) == labels


def test_an_lstm_under_bf16_autocast_runs_on_a_cpu_without_onednns_bf16_lstm(monkeypatch) -> None:
    """On an AVX2-only CPU oneDNN has no bf16 LSTM and autocast's call fails; the library's LSTM then runs torch's
    own kernel inside the autocast region (as with oneDNN switched off), forward and backward, near fp32, and
    switches oneDNN back on after."""
    from nlp_rnn.nn.encoder import rnn_module

    monkeypatch.setattr(precision, "onednn_bf16_lstm", lambda: False)
    torch.manual_seed(0)
    lstm = rnn_module("lstm", 6, 8, 2, 0.0, True)
    x = torch.randn(3, 5, 6)

    def run(native: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        lstm.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.backends.mkldnn.flags(enabled=not native):
            out = (super(type(lstm), lstm) if native else lstm).forward(x)[0]
        out.float().square().sum().backward()
        return out, [p.grad.clone() for p in lstm.parameters()]

    out, grads = run(native=False)
    assert torch.backends.mkldnn.enabled
    native_out, native_grads = run(native=True)
    torch.testing.assert_close(out, native_out, rtol=0, atol=0)
    for grad, native in zip(grads, native_grads):
        torch.testing.assert_close(grad, native, rtol=0, atol=0)
    lstm.zero_grad()
    expected = lstm(x)[0]
    expected.square().sum().backward()
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.02)
    for grad, p in zip(grads, lstm.parameters()):
        torch.testing.assert_close(grad, p.grad, rtol=0.05, atol=0.05)


def test_auto_on_a_gpu_follows_the_cuda_entry_and_never_picks_int8(monkeypatch) -> None:
    """A CUDA device is looked up as the kind "cuda" (translation: fp32, measured on an H200); other tasks keep
    the training rule (bf16 where the GPU has it); int8 is CPU-only. The GPU's bf16 support is injected."""
    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_precision("auto", gpu, "translation") == "fp32"
    assert inference_precision("auto", gpu, "classification") == "bf16"
    assert inference_precision("auto", gpu, "translation", table={"cuda": {"*": "int8"}}) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert inference_precision("auto", gpu, "classification", table={"cuda": {"*": "bf16"}}) == "fp32"
    assert inference_precision("bf16", gpu, "translation") == "bf16"
