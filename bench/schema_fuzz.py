"""schemathesis against a live `nlp-rnn serve` with the shipped models and its default limits, all checks,
for a time budget (the test suite runs a short in-process version with small limits).

    python bench/schema_fuzz.py [--seconds 120] [--output bench/results/schema_fuzz.txt]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import wait_for

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--port", type=int, default=8798)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "schema_fuzz.txt"))
    args = parser.parse_args()
    server = subprocess.Popen(
        ["nlp-rnn", "serve", "--port", str(args.port)], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_for(base)
        started = time.monotonic()
        cmd = [
            "schemathesis",
            "run",
            base + "/openapi.json",
            "--checks",
            "all",
            "--max-time",
            str(args.seconds),
        ]
        result = subprocess.run(cmd + ["--request-timeout", "60"], capture_output=True, text=True)
        report = result.stdout + result.stderr
        alive = server.poll() is None
        report += (
            f"\nexit status {result.returncode}; {time.monotonic() - started:.0f} s; server alive: {alive}\n"
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)
    print(report[-3000:])
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
