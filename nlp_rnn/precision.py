"""Which numeric precision a model runs at: `auto` resolved for a device, and models fixed to one precision.

Training and inference have separate rules. Training (`resolve_precision`): bf16 autocast where the
device multiplies bf16 natively and it was not measured slower than fp32 there, else fp32.
Inference (`precision_for`, `--precision auto` of
translate/classify/generate/serve): the fastest precision measured on this kind of CPU that stays
within the quality tolerance (BLEU within 0.2 of fp32, sentiment labels agreeing on 99 %), looked up
in `INFERENCE_TABLE` by CPU kind (or "cuda" on a CUDA GPU) and task. Kinds nobody measured fall back to the
training rule.
"""

import functools
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import devices
from nlp_rnn.errors import NlpRnnError

PRECISIONS = ("auto", "fp32", "bf16", "int8")

# `--precision auto` for inference on a CPU (or a CUDA GPU: "cuda"): kind -> task (or "*") -> precision, from
# `bench/decode_speed.py` side by side on one machine (docs/results.md has the runs). None: unmeasured.
INFERENCE_TABLE: dict[str, Optional[dict[str, str]]] = {
    # AMD EPYC (Zen 4), AVX-512 BF16, 2 cores: greedy de->en 824 (int8) / 661 (bf16) / 335 (fp32) sentences/s;
    # again 2026-12-01 with the shortlist and the sigmoid attention: greedy 1,073 / 975 / 434, beam 5 234 / 198 / 122.
    # Language models (the shipped character LSTM, `bench/generate_speed.py`, 2 cores): 1 / 32 samples 4,632 / 32,631
    # (int8), 2,692 / 25,255 (bf16), 1,519 / 11,183 (fp32) characters/s; Tiny Shakespeare's last 10 %: the same loss
    # per character in int8 as in fp32 to 0.001 nats (docs/results.md).
    # Classification (`bench/classify_speed.py`, 2 cores, 2026-12-02): the shipped default on SST-2 test 733 / 1,589 /
    # 1,114 and 773 / 1,224 / 886 sentences/s (fp32 / bf16 / int8, two runs), on 300 IMDb reviews 27.5 / 63.2 / 48.4
    # and 26.0 / 58.2 / 44.8; checkpoints/sst2 965 / 2,649 / 1,762; bf16 labels agree with fp32's on >= 99.9 %.
    # AMD EPYC Zen 5 (family 26), the same kind, 2 cores, 2026-12-02: greedy 1,315 (int8) / 1,095 (bf16) / 540 (fp32)
    # sentences/s, beam 5 274 / 253 / 127, with the shortlist; character LM 1 / 32 samples 8,127 / 59,212 (int8),
    # 4,347 / 43,607 (bf16), 3,856 / 18,357 (fp32); classification (the shipped default) SST-2 1,410 / 2,598 / 2,170
    # sentences/s and IMDb 82.1 / 153.8 / 115.6 reviews/s (fp32 / bf16 / int8): the same choices.
    "amd-avx512-bf16": {
        "translation": "int8",
        "classification": "bf16",
        "language_model": "int8",
        "*": "bf16",
    },
    # Intel Xeon with AVX-512 BF16 and no AMX (KVM, model 207), 1 thread: 540 (int8) / 338 (fp32) / 210 (bf16):
    # bf16 products run at 41 GMAC/s against fp32's 73 here, so bf16 is never the choice.
    # Language models, 1 thread: 1 / 32 samples 1,843 / 21,672 (int8) against 1,239 / 10,258 (fp32) characters/s.
    "intel-avx512-bf16": {
        "translation": "int8",
        "classification": "int8",
        "language_model": "int8",
        "*": "fp32",
    },
    # Intel Xeon with AMX (KVM, family 6 model 167), 2 cores, 2026-12-02, shortlist on: greedy de->en 1,480 / 1,448
    # (bf16) against 1,408 / 1,380 (int8) sentences/s, beam 5 (the shipped model's default) 312 / 310 against 337 / 321
    # (two runs each); the server with 32 clients 881.7 (int8) against 732.0 (bf16) sentences/s. Classification (the
    # shipped default): SST-2 1,632 / 5,102 / 2,135 sentences/s, IMDb 63.7 / 235.3 / 86.0 reviews/s (fp32 / bf16 /
    # int8), bf16 labels agreeing with fp32's on 99.9 %. Character LM 1 / 32 samples 4,920 / 36,699 (int8) against
    # 2,379 / 33,793 (bf16) characters/s.
    # Again 2026-12-04 (three alternations, warm): bf16 generates faster (greedy 1,317 / 1,325 / 1,189 against 1,053 /
    # 954 / 1,024, beam 5 306 / 305 / 302 against 270 / 265 / 277), but the whole translate command over 1,000 lines is
    # faster in int8 (greedy 3.2-3.3 against 3.5-4.1 s, beam 5 5.9-6.0 against 6.6-6.8: bf16 compiles its kernels in
    # the first pass) and so is the server (one sentence 14 against 24 ms, 32 clients 660-690 against 536-576).
    "amx": {
        "translation": "int8",
        "classification": "bf16",
        "language_model": "int8",
        "*": "bf16",
    },
    "avx512": None,  # unmeasured
    # AMD EPYC with AVX2 only (no AVX-512, no native bf16), 2 cores, 2026-11-22 (before the shortlist): greedy de->en
    # 437 (int8) / 349 (fp32) sentences/s, beam 5 109.1 / 59.5, BLEU within 0.2 of fp32; bf16 is emulated there
    # (75.5). AMD EPYC Zen 1 (KVM, family 23 model 1), AVX2 only, 2 cores, 2026-12-03, shortlist on: greedy 238.1 (int8)
    # / 227.9 (fp32), beam 5 55.6 / 48.5, BLEU 37.65 / 37.68. Classification (the shipped default): SST-2 267.2 (int8)
    # / 287.8 (fp32) sentences/s, IMDb 5.6 / 6.1 reviews/s: fp32. Character LM 1 / 32 samples 1,428 / 6,892 (int8)
    # against 837 / 5,095 (fp32) characters/s (at 2274f99+), 1.4679 against 1.4682 nats per character: int8. bf16 is
    # emulated.
    "avx2": {"translation": "int8", "language_model": "int8", "*": "fp32"},
    # A CUDA GPU (the key for any CUDA device): one NVIDIA H200, 2026-12-04, `bench/decode_speed.py` and batch sizes
    # side by side (docs/results.md): decoding is bound by kernel launches (GPU busy ~10 % of a beam-5 batch), and
    # bf16 adds casts: greedy 4,594 (fp32) / 3,748 (bf16), beam 5 714 / 627 sentences/s without the shortlist; at 256
    # sentences a batch beam 5 1,462 / 1,145. Other tasks keep the training rule (bf16 where the GPU has it).
    "cuda": {"translation": "fp32"},
}


# Training with `precision: auto` on a CPU that multiplies bf16 natively: whether bf16 autocast was measured
# faster than fp32 there (`bench/train_multi30k.py`, the default config). Kinds not listed keep bf16.
TRAINING_BF16: dict[str, bool] = {
    # 3,486 (bf16 autocast) against 2,092 (fp32) target tokens/s, 2 cores; the IMDb language model 8,843 against
    # 5,236 tokens/s, its classifier 31.7 against 23.6 reviews/s (2026-12-01)
    "amd-avx512-bf16": True,
    "intel-avx512-bf16": False,  # 1,063 (bf16 autocast) against 1,736 (fp32) target tokens/s, 1 thread
    # Intel Xeon with AMX, 2 cores, 2026-12-02: `bench/train_step.py` 5,281 against 4,042 target tokens/s;
    # `bench/imdb.py --stages speed --speed-minutes 2`: the IMDb language model 15,190 against 8,883 tokens/s, its
    # classifier 44.2 against 29.2 reviews/s
    "amx": True,
}


def cpu_kind() -> str:
    """amx, {vendor}-avx512-bf16, avx512, avx2 or other: what decides the products' speed."""
    cpu = torch.cpu
    if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return "amx"
    if getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return f"{cpu_vendor()}-avx512-bf16"
    if getattr(cpu, "_is_avx512_supported", lambda: False)():
        return "avx512"
    return "avx2" if getattr(cpu, "_is_avx2_supported", lambda: False)() else "other"


@functools.cache
def onednn_bf16_lstm() -> bool:
    """Whether torch's CPU LSTM can run under bf16 autocast here. Autocast sends it to oneDNN's bf16 LSTM, which
    needs AVX-512: on an AVX2-only CPU oneDNN fails with "could not create a primitive descriptor for the LSTM
    forward propagation primitive" (seen on a 2-core AMD EPYC Zen 1, 2026-12-03)."""
    return bool(getattr(torch.cpu, "_is_avx512_supported", lambda: False)())


def cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(
                    line.split(":", 1)[1].strip(), "other"
                )
    except OSError:
        pass
    return "other"


def resolve_precision(
    precision: str, device: torch.device = torch.device("cpu"), kind: Optional[str] = None
) -> str:
    """Training's rule. `auto`: bf16 on GPUs that have it and where the CPU multiplies bf16 natively
    (AVX512-BF16 or AMX) unless bf16 was measured slower than fp32 on that kind of CPU
    (`TRAINING_BF16`), else fp32. int8 is never chosen for training."""
    if precision not in PRECISIONS:
        raise NlpRnnError(f"--precision must be auto, fp32, bf16 or int8, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise NlpRnnError(
            "--precision int8 runs on the CPU (fbgemm kernels); use --device cpu, or bf16 on a GPU"
        )
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )
    return "bf16" if native and TRAINING_BF16.get(kind or cpu_kind(), True) else "fp32"


def inference_precision(
    precision: str,
    device: torch.device,
    task: str = "*",
    int8_ok: bool = True,
    kind: Optional[str] = None,
    table: Optional[dict] = None,
) -> str:
    """`auto` for inference: the table's entry for this CPU kind (or "cuda" on a CUDA device) and task
    (int8 only on the CPU, where the model supports it and the int8 kernels exist), else the training rule.
    `kind` and `table` are injectable."""
    resolved = resolve_precision(precision, device)
    if precision != "auto" or device.type not in ("cpu", "cuda"):
        return resolved
    entry = (INFERENCE_TABLE if table is None else table).get(
        kind or ("cuda" if device.type == "cuda" else cpu_kind())
    )
    if not entry:
        return resolved
    choice = entry.get(task, entry.get("*", resolved))
    if choice == "bf16" and resolved == "fp32" and device.type == "cuda":
        return resolved  # a GPU without bf16
    if choice == "int8" and device.type != "cpu":
        return resolved
    if choice == "int8":
        kernels = hasattr(torch.ops.quantized, "linear_dynamic") and (
            "fbgemm" in torch.backends.quantized.supported_engines
        )
        if not (int8_ok and kernels):
            choice = entry.get("*", resolved)
            choice = resolved if choice == "int8" else choice
    return choice


def precision_for(model, precision: str, task: str = "*") -> str:
    """The precision a loaded model runs at for inference; a model fixed to one precision (ONNX Runtime:
    fp32) refuses the others."""
    fixed = getattr(model, "fixed_precision", None)
    if fixed is None:
        return inference_precision(
            precision, devices.of(model), task, callable(getattr(model, "int8_", None))
        )
    if precision not in ("auto", fixed):
        raise NlpRnnError(f"--precision {precision}: this model runs in {fixed} only (--engine onnxruntime)")
    return fixed
