"""Load test of `nlp-rnn serve`: N concurrent clients for M minutes against every endpoint, mixing good
requests, malformed ones and clients that disconnect mid-request.

    python bench/serve_load.py [--clients 64] [--minutes 5] [--max-pending 256] [--output bench/results/serve_load.json]

The server runs the shipped models in its own process (`nlp-rnn serve`). Every good request's answer
is checked against the answer the same text gets alone (a lost or misattributed answer counts as
wrong). Reported: throughput, p50/p99 latency of accepted requests, status counts, server errors
(5xx), how fast a 503 answers, and the server's memory (VmRSS) after warm-up and at the end.
"""

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from common import cpu_name, wait_for

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "Ein Hund rennt durch den Schnee.",
    "Zwei Männer spielen Fußball im Park.",
    "Eine Frau liest ein Buch am Strand.",
    "Kinder spielen auf der Straße.",
]
REVIEWS = [
    "a gripping , beautifully acted film .",
    "dull and far too long .",
    "a wonderful film .",
    "boring .",
]


def post(base: str, path: str, body: bytes, timeout: float = 60) -> tuple[int, dict, float]:
    started = time.perf_counter()
    request = urllib.request.Request(base + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), time.perf_counter() - started
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), time.perf_counter() - started


def same(a, b) -> bool:
    """The answer a text gets among others equals the one it gets alone: the same model, texts and labels,
    scores and probabilities within 1e-4 (batched float sums differ in the last digits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-4
    return a == b


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--max-pending", type=int, default=256)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    args = parser.parse_args()
    cmd = ["nlp-rnn", "serve", "--port", str(args.port), "--max-pending", str(args.max_pending)]
    cmd += ["--model", "de-en=checkpoints/multi30k-de-en", "--model", "sst2=checkpoints/sst2"]
    cmd += ["--model", "chars=checkpoints/shakespeare-char", "--precision", "fp32"]
    server = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}"
    wait_for(base)
    expected = {}
    for s in SENTENCES:
        expected[("translate", s)] = post(
            base, "/translate", json.dumps({"texts": [s], "beam_size": 1}).encode()
        )[1]
    for r in REVIEWS:
        expected[("classify", r)] = post(base, "/classify", json.dumps({"texts": [r]}).encode())[1]
    memory_start = rss_mb(server.pid)
    statuses, wrong, latencies, busy_latencies, errors = Counter(), [0], [], [], []
    lock, deadline = threading.Lock(), time.monotonic() + 60 * args.minutes

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            kind = rng.random()
            try:
                if kind < 0.35:
                    s = rng.choice(SENTENCES)
                    status, body, seconds = post(
                        base, "/translate", json.dumps({"texts": [s], "beam_size": 1}).encode()
                    )
                    ok = status != 200 or same(body, expected[("translate", s)])
                elif kind < 0.7:
                    r = rng.choice(REVIEWS)
                    status, body, seconds = post(base, "/classify", json.dumps({"texts": [r]}).encode())
                    ok = status != 200 or same(body, expected[("classify", r)])
                elif kind < 0.8:
                    body_ = {"texts": ["ROMEO:"], "max_tokens": 20, "seed": rng.randrange(10)}
                    status, body, seconds = post(base, "/generate", json.dumps(body_).encode())
                    ok = True
                elif kind < 0.92:
                    bad = rng.choice(
                        [b"{not json", b'{"texts": "x"}', b'{"texts": ["x"], "beam_size": "2"}', b"\xff\xfe"]
                    )
                    status, body, seconds = post(base, rng.choice(["/translate", "/classify"]), bad)
                    ok = 400 <= status < 500
                else:  # a client that sends its request and leaves
                    with socket.create_connection(("127.0.0.1", args.port), timeout=5) as sock:
                        payload = json.dumps({"texts": [rng.choice(SENTENCES)]}).encode()
                        sock.sendall(
                            b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                            + payload
                        )
                    status, seconds, ok = "left", 0.0, True
            except Exception as err:  # a transport failure is an error of the server
                with lock:
                    errors.append(repr(err))
                continue
            with lock:
                statuses[status] += 1
                wrong[0] += 0 if ok else 1
                if status == 200:
                    latencies.append(seconds)
                elif status == 503:
                    busy_latencies.append(seconds)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    time.sleep(2)
    memory_end = rss_mb(server.pid)
    server.terminate()
    server.wait(timeout=60)
    latencies.sort()
    result = {
        "clients": args.clients,
        "minutes": args.minutes,
        "requests": sum(statuses.values()),
        "answered_per_s": round(statuses[200] / elapsed, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
        "server_errors_5xx": sum(
            v for k, v in statuses.items() if isinstance(k, int) and k >= 500 and k != 503
        ),
        "transport_errors": len(errors),
        "wrong_answers": wrong[0],
        "p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "p99_s": round(latencies[int(len(latencies) * 0.99)], 3) if latencies else None,
        "busy_503_p99_s": round(sorted(busy_latencies)[int(len(busy_latencies) * 0.99)], 3)
        if busy_latencies
        else None,
        "memory_mb_after_warmup": round(memory_start, 1),
        "memory_mb_end": round(memory_end, 1),
        "cpu": cpu_name(),
        "first_errors": errors[:3],
        "median_latency_s": round(statistics.median(latencies), 3) if latencies else None,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["server_errors_5xx"] == 0 and result["wrong_answers"] == 0 else 1)


if __name__ == "__main__":
    main()
