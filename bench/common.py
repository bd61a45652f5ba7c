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


def fraction(x: float) -> float:
    """A roofline fraction to three significant digits: 0.182 on a CPU, 0.00143 on a launch-bound GPU (three
    decimals would print 0.0 there)."""
    return float(f"{x:.3g}")


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


def seq2seq_macs(model) -> dict:
    """Multiply-adds of a translation model counted from its shapes: `source` per source piece (the encoder
    and the attention keys), `step` per decoded target position (the decoder cell, the attention query and
    the combination), `per_source` per step and source piece (the attention's scores and context), and
    `per_column` per step and output column (the output layer: times the columns computed)."""
    dec, enc = model.decoder, model.encoder
    rnn = getattr(enc, "rnn", None)
    att = dec.attention
    key = 0 if att is None or getattr(att, "key_layer", None) is None else att.key_layer.weight.numel()
    query = 0 if att is None or getattr(att, "query_layer", None) is None else att.query_layer.weight.numel()
    step = sum(p.numel() for c in dec.cells for n, p in c.named_parameters() if "weight" in n)
    return {
        "source": key
        + (0 if rnn is None else sum(p.numel() for n, p in rnn.named_parameters() if "weight" in n)),
        "step": step + dec.combine.weight.numel() + query,
        "per_source": 0
        if att is None
        else 2 * dec.combine.weight.size(1),  # score (A) and context (Dv), about
        "per_column": dec.cfg.decoder_hidden,
    }


def traced(run, device) -> dict:
    """`run()` traced by torch.profiler: its operators by host time printed; the counts of operators and kernel launches
    (on a GPU) and host against device milliseconds returned."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as trace:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = trace.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=45), flush=True)

    def device_us(e) -> float:  # torch renamed self_cuda_time_total to self_device_time_total
        return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))

    return {
        "operators": sum(e.count for e in events if e.key.startswith("aten::")),
        "kernel_launches": sum(e.count for e in events if e.key.startswith("cudaLaunchKernel")),
        "host_ms": round(sum(e.self_cpu_time_total for e in events) / 1e3, 1),
        "device_ms": round(sum(device_us(e) for e in events) / 1e3, 1),
    }
