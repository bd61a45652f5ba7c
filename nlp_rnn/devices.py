"""Where tensors live: `--device auto|cpu|cuda|cuda:N`, moving batches there, and mixed precision per device.

Models, searches and losses create every tensor on the device of the model or batch they are
given, so one `resolve` at the edge (the CLI, `nlp_rnn.load`, the trainer) is all a user sets.
"""

import contextlib
import dataclasses
import os
from typing import Any, Optional

import torch
from torch import nn

from nlp_rnn.errors import NlpRnnError

TRAINING_PRIMITIVE_CACHE = 8192


def widen_primitive_cache() -> None:
    """Raises oneDNN's primitive cache (1,024 by default) to `TRAINING_PRIMITIVE_CACHE` for a training process.

    oneDNN compiles a kernel for every new shape of a bf16 product (about 2 ms each with AMX). Training
    batches change shape at every step (sentences per batch, their lengths, a packed encoder's batch
    per time step), so a translation step met about 35 shapes no longer in the default cache and spent
    ~90 ms of its ~640 compiling them, for as long as the run went on; with room for 8,192 the shapes
    of earlier batches come back and that cost fell to ~15 ms by step 200 (2-core Xeon with AMX,
    docs/results.md). The cost is memory: each kept kernel holds ~0.5 MB (+1.7 GB resident after 200 steps
    there). oneDNN reads the setting once, at its first product in the process, so it takes effect only
    before any; `ONEDNN_PRIMITIVE_CACHE_CAPACITY` set by the user wins (1024: oneDNN's default)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(TRAINING_PRIMITIVE_CACHE))


def resolve(name: str = "auto") -> torch.device:
    """`auto`: CUDA when present (under torchrun the process's LOCAL_RANK GPU), else the CPU."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NlpRnnError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise NlpRnnError(f"--device {name}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        raise NlpRnnError(
            f"--device {name}: no CUDA GPU is available here (this torch build or machine has none); use --device cpu"
        )
    index = device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", 0))
    if index >= torch.cuda.device_count():
        raise NlpRnnError(
            f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s) (cuda:0 ..)"
        )
    return torch.device("cuda", index)


def of(module: nn.Module) -> torch.device:
    """The device of a module's parameters."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def move(obj: Any, device: torch.device) -> Any:
    """Tensors, and the tensors inside dataclasses, tuples, lists and dicts, on `device` (copies only where needed)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj, **{f.name: move(getattr(obj, f.name), device) for f in dataclasses.fields(obj) if f.init}
        )
    if isinstance(obj, (list, tuple)):
        return type(obj)(move(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: move(v, device) for k, v in obj.items()}
    return obj


def half_dtype(device: torch.device) -> torch.dtype:
    """The 16-bit type for autocast: bf16, except on GPUs without it (fp16, which needs a gradient scaler)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool):
    """Matrix products in 16 bits on `device` when `enabled`, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=half_dtype(device))


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """Loss scaling where autocast runs in fp16 (older GPUs); disabled (a pass-through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=enabled and half_dtype(device) == torch.float16)


def describe(device: torch.device) -> str:
    """The machine in words, for model cards: the GPU's name, or the CPU's model name and core count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    name = "CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def out_of_memory(err: BaseException) -> Optional[str]:
    """torch's own words when `err` is running out of memory (a GPU's OutOfMemoryError, the CPU allocator's
    failure, Python's MemoryError), else None."""
    text = str(err)
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if not (
        isinstance(err, MemoryError)
        or (oom is not None and isinstance(err, oom))
        or (isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))
    ):
        return None
    text = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    # the CPU allocator's words come as "[enforce fail at alloc_cpu.cpp:N] err == 0. ..."
    if text.startswith("[enforce fail"):
        text = text.split("] ", 1)[-1].removeprefix("err == 0. ")
    return text.split(" Error code")[0].split(" GPU ")[0].split(" Of the allocated")[0][:200]
