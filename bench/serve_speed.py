"""`nlp-rnn serve` under load: 1, 8 and 32 concurrent clients sending 8-sentence greedy requests.

    python bench/serve_speed.py [--model checkpoints/multi30k-de-en] [--precision fp32] [--clients 1,8,32]

Starts the server in its own process on a free port, sends the 1,000 sentences of test_2016_flickr as 8-sentence
requests from N client threads, and reports requests/s, sentences/s (with its fraction of the roofline: batch mode's
greedy multiply-adds per sentence at the machine's measured product rate, as bench/decode_speed.py counts them) and
the p50/p99 latency of a request; also the latency of one-sentence requests from one client, of 200 requests with one
empty text (the server's own cost), and
"batch mode": `Translator.translate` over the same sentences in this process at the server's maximum batch, the
server idle meanwhile. Each of `--rounds` rounds sends the 1,000 sentences once and is followed at once by a
batch-mode pass, and "of_batch_mode" is the median of the rounds' ratios: this machine's speed drifts by 20 % and
more between minutes, so a ratio of two passes measured minutes apart says little. (Batch mode always comes second
in a round; an effect of that order would be in every ratio.) Each client thread keeps one HTTP/1.1 connection
open (as `requests.Session` or httpx clients do); `--new-connections` opens one per request instead (urllib's way,
this script's before the twelfth session). The CPU seconds of the clients (this process), the server and its model
process are reported for each load: the clients run on the same cores as the server. "arrival_order" is batch mode
over the same sentences in the server's batches: consecutive texts, the round's mean batch at a time."""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import fraction, product_rate, wait_for
from decode_speed import decoding_macs

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "multi30k"


def post(url: str, body: dict) -> tuple[float, dict]:
    """One request on a connection of its own."""
    started = time.perf_counter()
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - started, answer


class KeptAlive:
    """`post` on one open connection per client thread."""

    def __init__(self, port: int) -> None:
        self.port, self.local = port, threading.local()

    def post(self, path: str, body: dict) -> tuple[float, dict]:
        started = time.perf_counter()
        for attempt in (1, 2):  # the server closes a connection idle for 5 s: open another, once
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            try:
                conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {data[:200]!r}")
        return time.perf_counter() - started, json.loads(data)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of process `pid` alone, and of its live descendants (the model process)
    together (Linux /proc; zeros elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> tuple[float, list[int]]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            children = [
                int(c)
                for t in Path(f"/proc/{p}/task").iterdir()
                for c in (t / "children").read_text().split()
            ]
            return (int(fields[11]) + int(fields[12])) / ticks, children
        except (OSError, ValueError, IndexError):
            return 0.0, []

    server, pending = own(pid)
    descendants = 0.0
    while pending:
        seconds, more = own(pending.pop())
        descendants += seconds
        pending += more
    return server, descendants


def batching(base: str) -> dict:
    """The server's batch counters for the model (GET /health)."""
    with urllib.request.urlopen(base + "/health", timeout=30) as response:
        return json.loads(response.read())["batching"]["m"]


def phase(before: dict, after: dict) -> dict:
    """What the model did between two readings: batches, their mean size, the share of time it ran."""
    batches = after["batches"] - before["batches"]
    wall = after["uptime_s"] - before["uptime_s"]
    return {
        "batches": batches,
        "mean_batch": round((after["texts"] - before["texts"]) / max(batches, 1), 1),
        "model_busy": round((after["busy_s"] - before["busy_s"]) / max(wall, 1e-9), 3),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "multi30k-de-en"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--request-size", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument(
        "--settle-ms", type=float, default=10.0, help="the server's --settle-ms (its default)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="the server's --in-process (the model in the server process)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="send the 1,000 sentences this many times per load, each followed by a batch-mode pass",
    )
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="a new connection per request (urllib) instead of one kept open per client",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sentences = (DATA / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nlp_rnn",
            "serve",
            "--model",
            f"m={args.model}",
            "--port",
            str(port),
            "--precision",
            args.precision,
            "--max-batch",
            str(args.max_batch),
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--settle-ms",
            str(args.settle_ms),
            "--device",
            "cpu",
        ]
        + (["--in-process"] if args.in_process else []),
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    results: dict = {
        "model": args.model,
        "precision": args.precision,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "settle_ms": args.settle_ms,
        "model_process": not args.in_process,
        "connections": "per request" if args.new_connections else "kept open per client",
    }
    alive = KeptAlive(port)

    def translate(body: dict) -> tuple[float, dict]:
        return post(base + "/translate", body) if args.new_connections else alive.post("/translate", body)

    try:
        wait_for(base)
        for text in sentences[:5]:  # warm-up
            translate({"texts": [text], "beam_size": 1})
        # the server's own cost: a request with one empty text (HTTP, validation, the queue, the model process's
        # round trip; next to no model work)
        for _ in range(10):
            translate({"texts": [""], "beam_size": 1})
        empty = [translate({"texts": [""], "beam_size": 1})[0] for _ in range(200)]
        results["empty_text_latency_ms"] = {"p50": round(1000 * statistics.median(empty), 2)}
        print("one empty text:", results["empty_text_latency_ms"], flush=True)
        single = [translate({"texts": [t], "beam_size": 1})[0] for t in sentences[:100]]
        results["one_sentence_latency_ms"] = {
            "p50": round(1000 * statistics.median(single), 1),
            "p99": round(1000 * percentile(single, 0.99), 1),
        }
        print("one sentence:", results["one_sentence_latency_ms"], flush=True)
        requests = [sentences[i : i + args.request_size] for i in range(0, len(sentences), args.request_size)]
        # batch mode in this process, the server idle meanwhile: each round of the server under load is
        # followed by one batch-mode pass, so that each ratio compares two passes a few seconds apart
        # (this machine's speed drifts by 20 % and more between minutes)
        from nlp_rnn.tasks.base import load
        from nlp_rnn.tasks.translation import Translator

        translator = Translator(load(args.model, device="cpu"), args.precision)
        opts = translator.options(beam_size=1)
        translator.translate(sentences[:64], opts, args.max_batch)  # warm-up
        # the roofline: the multiply-adds of batch mode's greedy decoding (over its whole call's shortlist union, a
        # bound on a server batch's smaller one) at this machine's product rate, measured with the server idle
        outputs = translator.translate(sentences, opts, args.max_batch)
        macs = decoding_macs(translator, sentences, outputs, 1, args.max_batch)
        rate = product_rate(translator.precision)
        roofline = rate / macs
        results.update(
            product_rate_gmacs=round(rate / 1e9, 1),
            macs_per_sentence_m=round(macs / 1e6, 2),
            roofline_sentences_per_s=round(roofline, 1),
        )
        print(
            f"roofline: {roofline:,.1f} sentences/s ({macs / 1e6:.1f} M multiply-adds each at {rate / 1e9:.1f} GMAC/s)"
        )

        def batch_mode(chunk: int = 0) -> float:
            started = time.perf_counter()
            for i in range(0, len(sentences), chunk or len(sentences)):
                translator.translate(sentences[i : i + (chunk or len(sentences))], opts, args.max_batch)
            return len(sentences) / (time.perf_counter() - started)

        for clients in (int(c) for c in args.clients.split(",")):
            rounds = []
            for _ in range(args.rounds):
                before = batching(base)
                cpu = time.process_time(), cpu_seconds(server.pid)
                started = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    latencies = [
                        t
                        for t, _ in pool.map(
                            lambda texts: translate({"texts": texts, "beam_size": 1}), requests
                        )
                    ]
                wall = time.perf_counter() - started
                after = cpu_seconds(server.pid)
                client_cpu = time.process_time() - cpu[0]
                served = phase(before, batching(base))
                batch = batch_mode()
                # no batches counted (a /health without them): no arrival-order figure rather than a whole-corpus one
                arrival = batch_mode(int(served["mean_batch"])) if served["mean_batch"] >= 1 else float("nan")
                rounds.append(
                    {
                        "sentences_per_s": len(sentences) / wall,
                        "latencies": latencies,
                        "served": served,
                        "batch_mode": batch,
                        "arrival_order": arrival,
                        "cpu": (
                            client_cpu / wall,
                            (after[0] - cpu[1][0]) / wall,
                            (after[1] - cpu[1][1]) / wall,
                        ),
                    }
                )
            latencies = [t for r in rounds for t in r["latencies"]]
            shares = [r["sentences_per_s"] / r["batch_mode"] for r in rounds]

            def median(key: str, rows: list = rounds) -> float:  # rows: this load's rounds, bound now
                return statistics.median(r[key] for r in rows)

            results[f"clients_{clients}"] = {
                "requests_per_s": round(median("sentences_per_s") / args.request_size, 1),
                "sentences_per_s": round(median("sentences_per_s"), 1),
                "latency_ms_p50": round(1000 * statistics.median(latencies), 1),
                "latency_ms_p99": round(1000 * percentile(latencies, 0.99), 1),
                "batches": sum(r["served"]["batches"] for r in rounds),
                "mean_batch": round(statistics.mean(r["served"]["mean_batch"] for r in rounds), 1),
                "model_busy": round(statistics.median(r["served"]["model_busy"] for r in rounds), 3),
                "cpu_s_per_s": {  # CPU seconds per second of wall time; 2.0 is both cores
                    name: round(statistics.median(r["cpu"][i] for r in rounds), 2)
                    for i, name in enumerate(("clients", "server", "model_process"))
                },
                # batch mode: `Translator.translate` over all 1,000 sentences at the server's maximum batch,
                # right after each round; arrival order: the same over the server's own batches (consecutive
                # requests' texts, the round's mean batch at a time, each sorted by length only within itself)
                "batch_mode_sentences_per_s": round(median("batch_mode"), 1),
                "arrival_order_sentences_per_s": round(median("arrival_order"), 1),
                "roofline_fraction": fraction(median("sentences_per_s") / roofline),
                "batch_mode_roofline_fraction": fraction(median("batch_mode") / roofline),
                "of_batch_mode_rounds": [round(x, 3) for x in shares],
                "of_batch_mode": round(statistics.median(shares), 3),
                "of_arrival_order": round(
                    statistics.median(r["sentences_per_s"] / r["arrival_order"] for r in rounds), 3
                ),
            }
            print(f"{clients} clients:", results[f"clients_{clients}"], flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
