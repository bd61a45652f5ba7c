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


def cpu_name() -> str:
    """The CPU's model name and core count (Linux), for the machine line of a report."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return f"unknown CPU, {os.cpu_count()} cores"
