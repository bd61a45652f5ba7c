"""Which numeric precision a model runs at: `auto` resolved for a device, and models fixed to one precision."""

import torch

from nlp_rnn import devices
from nlp_rnn.errors import NlpRnnError


def resolve_precision(precision: str, device: torch.device = torch.device("cpu")) -> str:
    """`auto`: bf16 on GPUs that have it and where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), else fp32.
    int8 is never chosen automatically (opt-in: a small loss of accuracy for speed)."""
    if precision not in ("auto", "fp32", "bf16", "int8"):
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
    return "bf16" if native else "fp32"


def precision_for(model, precision: str) -> str:
    """`resolve_precision` for this model: a model fixed to one precision (ONNX Runtime: fp32) refuses the others."""
    fixed = getattr(model, "fixed_precision", None)
    if fixed is None:
        return resolve_precision(precision, devices.of(model))
    if precision not in ("auto", fixed):
        raise NlpRnnError(f"--precision {precision}: this model runs in {fixed} only (--engine onnxruntime)")
    return fixed
