"""Multi-process training on torch.distributed, started by `torchrun`: one process per GPU (NCCL) or CPU group (gloo).

Every process builds the same batch order from the seed and takes its share of each batch; the
summed loss of every share is divided by the batch's global token count and the gradients are
summed across processes (DistributedDataParallel's all-reduce, done by the trainer after backward,
because tasks call their models directly and the loss is normalised by a global count), so N
processes make exactly the update one process makes on the whole batch. Process 0 alone validates
and writes files; it broadcasts what the others need to stay in step. A failed collective (another
process died) becomes one clear error instead of a hang.
"""

import datetime
import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

from nlp_rnn.errors import NlpRnnError

log = logging.getLogger(__name__)
TIMEOUT_ENV = "NLP_RNN_DIST_TIMEOUT"  # seconds a process waits for the others (covers a whole validation)


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets the env:// variables) with several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> None:
    """Joins the process group torchrun describes (env://); NCCL for GPUs, gloo for CPUs."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise NlpRnnError("this torch build has no torch.distributed; run a single process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives run on this process's GPU
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 1800)))
    try:
        dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
    except (RuntimeError, ValueError) as err:
        raise NlpRnnError(
            f"cannot join the training processes ({backend}): {str(err).splitlines()[0][:200]}"
        ) from None
    log.info("process %d of %d (%s, %s)", dist.get_rank(), dist.get_world_size(), backend, device)


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(like: torch.device) -> torch.device:
    return like if dist.get_backend() == "nccl" else torch.device("cpu")


def _collective(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except RuntimeError as err:  # DistBackendError and gloo's connection errors are RuntimeErrors
        reason = re.sub(r"^\[[^\]]*\]\s*", "", str(err).splitlines()[0])[
            :120
        ]  # without gloo's source location
        raise NlpRnnError(
            f"process {rank()}: lost the other training processes ({reason}); one of them stopped, see its error"
        ) from None


def sum_floats(values: Iterable[float], device: torch.device) -> list[float]:
    """Element-wise sums over all processes."""
    values = list(values)
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    _collective(lambda: dist.all_reduce(t))
    return t.tolist()


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every process when it is True on any (e.g. a stop request)."""
    return sum_floats([1.0 if flag else 0.0], device)[0] > 0 if active() else flag


def broadcast(obj: Any) -> Any:
    """Process 0's `obj` on every process (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    _collective(lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def gather(obj: Any) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if not active():
        return [obj]
    out: list = [None] * world()
    _collective(lambda: dist.all_gather_object(out, obj))
    return out


def barrier() -> None:
    if active():
        _collective(dist.barrier)


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Process 0's parameters and buffers on every process (as DistributedDataParallel does at start)."""
    if not active():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dev = _comm_device(tensor.device)
        buf = tensor.data.to(dev)
        _collective(lambda buf=buf: dist.broadcast(buf, src=0))
        tensor.data.copy_(buf)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sums the gradients of `params` over all processes in one all-reduce.

    A parameter no process has a gradient for keeps `grad None` (so the optimizer skips it, as in
    one process); a process without one (an empty share, an unused branch) contributes zeros.
    """
    if not active() or not params:
        return
    dev = _comm_device(params[0].device)
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float().to(dev) for p in params]
        + [torch.tensor([float(p.grad is not None) for p in params], device=dev)]
    )
    _collective(lambda: dist.all_reduce(flat))
    offset = 0
    has = flat[-len(params) :].tolist()
    for p, seen in zip(params, has):
        n = p.numel()
        if seen:
            summed = flat[offset : offset + n].view_as(p).to(p.device, p.dtype)
            if p.grad is None:
                p.grad = summed.clone()
            else:
                p.grad.copy_(summed)
        offset += n
