"""What every task's raw-text interface shares: batched search over id lists, precision, chunked streams.

The interfaces themselves (`Translator`, `Predictor`, `Generator`, ...) live in their task modules;
`wrap` finds a bundle's through the task registry.
"""

import logging
from typing import Iterable, Iterator, Sequence

import torch

from nlp_rnn import devices
from nlp_rnn.bundle import Bundle
from nlp_rnn.data import make_batch, ordered_batches
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.search import Hypothesis, SearchOptions, search

log = logging.getLogger(__name__)


def search_ids(model, src_ids: Sequence[Sequence[int]], opts: SearchOptions, batch_size: int) -> list[list[Hypothesis]]:
    """n-best hypotheses for each source id list (each ending in EOS), in input order."""
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    model.eval()
    device = devices.of(model)
    for index in ordered_batches([len(s) for s in src_ids], batch_size):
        batch = devices.move(make_batch([src_ids[i] for i in index]), device)
        for i, hyps in zip(index, search(model, batch, opts)):
            results[i] = hyps
    return results


def resolve_precision(precision: str, device: torch.device = torch.device("cpu")) -> str:
    """`auto`: bf16 on GPUs that have it and where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), else fp32.
    int8 is never chosen automatically (opt-in: a small loss of accuracy for speed)."""
    if precision not in ("auto", "fp32", "bf16", "int8"):
        raise NlpRnnError(f"--precision must be auto, fp32, bf16 or int8, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise NlpRnnError("--precision int8 runs on the CPU (fbgemm kernels); use --device cpu, or bf16 on a GPU")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native else "fp32"


def precision_for(model, precision: str) -> str:
    """`resolve_precision` for this model: a model fixed to one precision (ONNX Runtime: fp32) refuses the others."""
    fixed = getattr(model, "fixed_precision", None)
    if fixed is None:
        return resolve_precision(precision, devices.of(model))
    if precision not in ("auto", fixed):
        raise NlpRnnError(f"--precision {precision}: this model runs in {fixed} only (--engine onnxruntime)")
    return fixed


def with_precision(model, precision: str):
    """The model to run at a resolved precision: itself (fp32), a bf16 copy's weights in place, or an int8 copy."""
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        from nlp_rnn.int8 import quantize

        return quantize(model)
    return model


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def wrap(bundle: Bundle, **options):
    """The raw-text interface of a bundle's task (a `Translator`, `Predictor`, `Generator`, ...)."""
    from nlp_rnn import task as tasks

    return tasks.of(bundle).wrap(bundle, **options)
