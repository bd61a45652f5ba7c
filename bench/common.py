"""What several bench scripts share: waiting for a server to answer, and the CPU's name for reports."""

import os
import time
import urllib.request
from pathlib import Path


def wait_for(base: str, seconds: float = 120) -> None:
    """Returns once `base`/health answers (the server has loaded its models)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base}: the server did not answer within {seconds:g} s") from None
            time.sleep(0.1)


def logged_rates(records: list[dict]) -> list[float]:
    """A training run's logged rates (`tokens_per_s` of its metrics.jsonl records: target tokens, or examples,
    per second), its first two windows (warm-up) left out; the benchmarks report their median."""
    return [r["tokens_per_s"] for r in records if "tokens_per_s" in r][2:]


def cpu_name() -> str:
    """The CPU's model name and core count (Linux), for the machine line of a report."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return f"unknown CPU, {os.cpu_count()} cores"


def product_rate(dtype: str = "fp32", seconds: float = 1.0, device: str = "cpu") -> float:
    """Multiply-adds per second this machine sustains in a large matrix product at torch's current thread
    count (fp32, bf16, or int8 through the same fbgemm kernel the int8 models use): the roofline that
    the bench scripts' fractions divide by. On a CUDA device: an 8192-square product there (fp32 without
    TF32, as torch computes fp32 products by default)."""
    import torch
    import torch.nn.functional as F

    cuda = torch.device(device).type == "cuda"
    rows, inner, cols = (8192, 8192, 8192) if cuda else (256, 1024, 4096)
    x, w = torch.randn(rows, inner, device=device), torch.randn(cols, inner, device=device) * 0.03
    if dtype == "int8":
        from nlp_rnn.nn.int8 import Int8Linear  # the callers put the repository on sys.path

        layer = Int8Linear(w, None)
        run = lambda: layer(x)  # noqa: E731
    else:
        if dtype == "bf16":
            x, w = x.bfloat16(), w.bfloat16()
        run = lambda: F.linear(x, w)  # noqa: E731
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    run()
    sync()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()
        count += 1
        sync()
    return count * rows * inner * cols / (time.perf_counter() - started)
