"""Word-level language models on WikiText-2: validation perplexity per word against wall-clock minutes,
test perplexity with and without the neural cache, beside PyTorch's word_language_model example.

    python bench/wikitext2.py --config configs/wikitext2_small.yaml --minutes 10 --seeds 1,2,3
    python bench/wikitext2.py --config configs/wikitext2_small.yaml --minutes 25 --threads 1 \\
        --peer ../peers/examples/word_language_model --peer-epochs 1 --side-by-side --plot docs/wikitext2_curve.png
    python bench/wikitext2.py --config configs/wikitext2_awd.yaml --minutes 60 --tune-cache
    python bench/wikitext2.py --config configs/wikitext2_example_size.yaml --minutes 10 --threads 1 --seeds 1,2,3 \
        --peer ../peers/examples/word_language_model --side-by-side --peer-each-seed --peer-minutes 10

The peer is run as its README says (`python main.py --data DIR --epochs N`, its defaults: 2-layer
LSTM 200, dropout 0.2, bptt 35, batch 20, SGD lr 20); it validates once per epoch. `--side-by-side`
runs it at the same time as nlp-rnn, each with `--threads` threads (`--peer-each-seed`: beside every seed,
with that seed). `--peer-minutes M` stops the example after M minutes of training instead of at an epoch's
end: a copy of its main.py with three anchored edits (PEER_PATCHES below), which then validates, saves
and tests as the example always does. Perplexity per word is
exp(summed NLL / words), counting one end of line per line: the example's own measure. The cache
(`--tune-cache`) is tuned on the validation file (size 2,000; theta and lambda on a grid) and then
reported on the test file; `--tune-dynamic` does the same for dynamic evaluation's rate. Results go
to bench/results/wikitext2/ (summary.json) and the terminal.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "text" / "wikitext-2"
OUT = ROOT / "bench" / "results" / "wikitext2"
CACHE_GRID = [(theta, lam) for theta in (0.1, 0.2, 0.3, 0.5) for lam in (0.1, 0.2)]
# Dynamic evaluation: SGD rates tried (segments of DYNAMIC_WINDOW words, no decay) on the validation file's
# first DYNAMIC_TUNE_CHARS characters (whole lines; each try reads about 12,000 words at ~400 words/s on
# one core), the best one then reported on the test file.
DYNAMIC_GRID = (0.1, 0.2, 0.3, 0.5)
DYNAMIC_WINDOW = 10
DYNAMIC_TUNE_CHARS = 60_000


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.*)", info)
    bf16 = "avx512_bf16" in info or "amx_bf16" in info
    return f"{name.group(1) if name else 'unknown CPU'}, {os.cpu_count()} cores, native bf16: {'yes' if bf16 else 'no'}"


def env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def nlp_rnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "nlp_rnn", *args]


def start_ours(config: Path, run: Path, minutes: float, seed: int, threads: int) -> subprocess.Popen:
    command = nlp_rnn(
        "train",
        "lm",
        "--config",
        str(config),
        "--output",
        str(run),
        "--train",
        str(DATA / "wiki.train.tokens"),
        "--valid",
        str(DATA / "wiki.valid.tokens"),
        "--max-minutes",
        str(minutes),
        "--seed",
        str(seed),
        "--quiet",
    )
    log = open(run.parent / f"{run.name}.log", "w")
    return subprocess.Popen(command, env=env(threads), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


# A wall-clock budget for the example, which otherwise stops only at the end of an epoch (26 minutes on one
# thread here): three edits to a copy of its main.py, each anchored on its own text. Training stops after
# the budget's minutes of training (its validations are not counted), then the example validates, saves and
# tests as it always does; it prints the minutes it trained.
PEER_PATCHES = (
    (
        "# Loop over epochs.\n",
        "# Loop over epochs.\n_BUDGET_S = float(os.environ['PEER_MINUTES']) * 60\n_START = time.time()\n",
    ),
    (
        "        if args.dry_run:\n            break",
        "        if args.dry_run or time.time() - _START > _BUDGET_S:\n            break",
    ),
    (
        "        train()\n        val_loss = evaluate(val_data)\n",
        "        if time.time() - _START > _BUDGET_S:\n            break\n        train()\n        _v = time.time()\n"
        "        val_loss = evaluate(val_data)\n        _START += time.time() - _v\n"
        "        print('| trained minutes {:.3f}'.format((time.time() - _START) / 60))\n",
    ),
)


def timed_peer_script(peer: Path, out: Path) -> Path:
    """A copy of the example's main.py that stops after PEER_MINUTES minutes of training."""
    text = (peer / "main.py").read_text()
    for anchor, replacement in PEER_PATCHES:
        if text.count(anchor) != 1:
            raise SystemExit(
                f"{peer / 'main.py'}: cannot find {anchor.strip()!r} once to add the time budget"
            )
        text = text.replace(anchor, replacement)
    script = out / "peer_main_timed.py"
    script.write_text(text)
    return script


def start_peer(
    peer: Path, epochs: int, threads: int, out: Path, seed: int = 1111, minutes: float = 0.0
) -> subprocess.Popen:
    """The example reads DIR/train.txt, valid.txt, test.txt: links to the shared files. With `minutes`, the
    timed copy of its main.py runs (up to `epochs` epochs, stopped after that much training)."""
    data = out / "peer-data"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        link = data / f"{split}.txt"
        if not link.exists():
            link.symlink_to(DATA / f"wiki.{split}.tokens")
    log = open(out / f"peer-s{seed}.log", "w")
    script = str(timed_peer_script(peer, out)) if minutes else "main.py"
    command = [
        sys.executable,
        script,
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        "--save",
        str(out / f"peer-s{seed}.pt"),
    ]
    environment = dict(env(threads), PYTHONPATH=str(peer.resolve()), PEER_MINUTES=str(minutes))
    return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=peer)


def our_curve(run: Path) -> list[tuple[float, float]]:
    """(minutes of training, validation perplexity per word) of every validation."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["elapsed_s"] / 60, r["val_ppl_per_word"]) for r in records if "val_ppl_per_word" in r]


def our_speed(run: Path) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in records if "tokens_per_s" in r)


def peer_results(log: Path) -> dict:
    """The example's epochs (cumulative minutes, valid ppl), its words/s and its test ppl."""
    text = log.read_text()
    epochs = [
        (float(t), float(p))
        for t, p in re.findall(r"end of epoch\s+\d+ \| time:\s*([\d.]+)s.*?valid ppl\s+([\d.]+)", text)
    ]
    curve, total = [], 0.0
    for seconds, ppl in epochs:
        total += seconds
        curve.append((total / 60, ppl))
    trained = [float(m) for m in re.findall(r"\| trained minutes ([\d.]+)", text)]
    if len(trained) == len(curve):  # the timed copy: minutes of training, its validations not counted
        curve = [(m, ppl) for m, (_, ppl) in zip(trained, curve)]
    ms = [float(m) for m in re.findall(r"ms/batch\s+([\d.]+)", text)]
    test = re.search(r"End of training \| test loss\s+[\d.]+ \| test ppl\s+([\d.]+)", text)
    return {
        "curve": curve,
        "words_per_s": 20 * 35 / (statistics.median(ms) / 1000) if ms else None,
        "test_ppl": float(test.group(1)) if test else None,
    }


def evaluate(
    run: Path, split: str, cache: tuple = (), dynamic: float = 0.0, data: Path | None = None
) -> float:
    kind = ".cache" if cache else f".dynamic{dynamic}" if dynamic else ""
    report = run.parent / f"{run.name}.{split}{kind}.json"
    args = [
        "evaluate",
        "--model",
        str(run),
        "--data",
        str(data or DATA / f"wiki.{split}.tokens"),
        "--report",
        str(report),
    ]
    if cache:
        size, theta, lam = cache
        args += ["--cache-size", str(size), "--cache-theta", str(theta), "--cache-lambda", str(lam)]
    if dynamic:
        args += ["--dynamic-lr", str(dynamic), "--dynamic-window", str(DYNAMIC_WINDOW)]
    subprocess.run(nlp_rnn(*args), check=True, capture_output=True, cwd=ROOT)
    return json.loads(report.read_text())["sets"][0]["perplexity_per_word"]


def tune_cache(run: Path, size: int) -> dict:
    """The cache's theta and lambda chosen on the validation file, then scored on the test file."""
    scores = {(t, lam): evaluate(run, "valid", (size, t, lam)) for t, lam in CACHE_GRID}
    theta, lam = min(scores, key=scores.get)
    return {
        "size": size,
        "theta": theta,
        "lambda": lam,
        "valid_ppl": scores[(theta, lam)],
        "test_ppl": evaluate(run, "test", (size, theta, lam)),
    }


def valid_head(out: Path) -> Path:
    """The validation file's first DYNAMIC_TUNE_CHARS characters, in whole lines."""
    head, size = [], 0
    for line in (DATA / "wiki.valid.tokens").read_text(encoding="utf-8").splitlines(keepends=True):
        if size >= DYNAMIC_TUNE_CHARS:
            break
        head.append(line)
        size += len(line)
    path = out / "wiki.valid-head.tokens"
    path.write_text("".join(head), encoding="utf-8")
    return path


def tune_dynamic(run: Path) -> dict:
    """Dynamic evaluation's rate chosen on the head of the validation file, then scored on the test file."""
    head = valid_head(run.parent)
    plain = evaluate(run, "valid-head", data=head)
    scores = {lr: evaluate(run, "valid-head", dynamic=lr, data=head) for lr in DYNAMIC_GRID}
    best = min(scores, key=scores.get)
    print(f"dynamic evaluation on the validation head: without {plain:.1f}, {scores}", flush=True)
    return {
        "lr": best,
        "window": DYNAMIC_WINDOW,
        "valid_head_ppl_without": plain,
        "valid_head_ppl": scores[best],
        "test_ppl": evaluate(run, "test", dynamic=best),
    }


def at(curve: list[tuple[float, float]], minutes: float) -> float | None:
    """The last validation at or before `minutes`."""
    seen = [
        ppl for m, ppl in curve if m <= minutes * 1.03 + 0.1
    ]  # a budget's last validation lands just past it
    return seen[-1] if seen else None


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
    ax.set_xlabel("training minutes (wall clock)")
    ax.set_ylabel("validation perplexity per word")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "wikitext2_small.yaml")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peer", type=Path, help="pytorch/examples' word_language_model folder")
    parser.add_argument(
        "--peer-epochs",
        type=int,
        default=None,
        help="the peer's --epochs (default: 1; with --peer-minutes, its own default of 40, the minutes decide)",
    )
    parser.add_argument(
        "--peer-only",
        action="store_true",
        help="run only the peer(s), beside nothing of ours: our runs are read from --out's summary.json",
    )
    parser.add_argument(
        "--side-by-side", action="store_true", help="run the peer at the same time as the first seed"
    )
    parser.add_argument(
        "--peer-minutes",
        type=float,
        default=0.0,
        help="stop the peer after this many minutes of training (a timed copy of its main.py; 0: whole epochs)",
    )
    parser.add_argument(
        "--peer-each-seed", action="store_true", help="run the peer beside every seed, with that seed"
    )
    parser.add_argument(
        "--tune-cache", action="store_true", help="tune the cache on validation, report it on test"
    )
    parser.add_argument("--cache-size", type=int, default=2000)
    parser.add_argument(
        "--tune-dynamic",
        action="store_true",
        help="tune dynamic evaluation's rate on validation, report it on test",
    )
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--existing", type=Path, help="no training: the cache and dynamic evaluation of this trained run"
    )
    args = parser.parse_args()
    args.out = args.out.resolve()  # the peer runs in its own folder
    if args.peer_epochs is None:
        args.peer_epochs = 40 if args.peer_minutes else 1
    args.out.mkdir(parents=True, exist_ok=True)
    if args.existing:
        result = {"cpu": cpu(), "run": str(args.existing), "test_ppl": evaluate(args.existing, "test")}
        if args.tune_cache:
            result["cache"] = tune_cache(args.existing, args.cache_size)
        if args.tune_dynamic:
            result["dynamic"] = tune_dynamic(args.existing)
        print(json.dumps(result, indent=2))
        (args.out / f"{args.existing.name}.evaluations.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    started, summary = (
        time.time(),
        {"cpu": cpu(), "config": str(args.config), "minutes": args.minutes, "runs": {}},
    )
    print(f"machine: {summary['cpu']}; {args.threads} thread(s) per run", flush=True)
    peers = {}
    curves = {}
    earlier = json.loads((args.out / "summary.json").read_text()) if args.peer_only else None
    for n, seed in enumerate(int(s) for s in args.seeds.split(",")):
        run = args.out / f"{args.config.stem}-s{seed}"
        if earlier is not None:  # our run as measured before; the peer alone now
            summary["runs"][f"nlp-rnn seed {seed}"] = earlier["runs"][f"nlp-rnn seed {seed}"]
            curves[f"nlp-rnn {args.config.stem} (seed {seed})"] = earlier["runs"][f"nlp-rnn seed {seed}"][
                "curve"
            ]
            peers[seed] = start_peer(
                args.peer, args.peer_epochs, args.threads, args.out, seed, args.peer_minutes
            )
            peers[seed].wait()
            continue
        if run.exists():
            raise SystemExit(f"{run} exists: remove it or give --out elsewhere")
        ours = start_ours(args.config, run, args.minutes, seed, args.threads)
        if args.peer and (n == 0 or args.peer_each_seed):
            if not args.side_by_side:
                ours.wait()
            peers[seed] = start_peer(
                args.peer, args.peer_epochs, args.threads, args.out, seed, args.peer_minutes
            )
            if not args.side_by_side:
                peers[seed].wait()
        ours.wait()
        if ours.returncode:
            raise SystemExit(f"nlp-rnn failed: see {run.parent / (run.name + '.log')}")
        if (
            seed in peers and args.peer_each_seed and peers[seed].wait()
        ):  # the next pair starts on a quiet machine
            raise SystemExit(f"the PyTorch example failed: see {args.out / f'peer-s{seed}.log'}")
        curve = our_curve(run)
        result = {
            "curve": curve,
            "words_per_s": our_speed(run),
            "valid_ppl": curve[-1][1],
            "test_ppl": evaluate(run, "test"),
        }
        if args.tune_cache:
            result["cache"] = tune_cache(run, args.cache_size)
        if args.tune_dynamic:
            result["dynamic"] = tune_dynamic(run)
        summary["runs"][f"nlp-rnn seed {seed}"] = result
        curves[f"nlp-rnn {args.config.stem} (seed {seed})"] = curve
        print(
            f"seed {seed}: valid ppl/word {result['valid_ppl']:.1f} after {curve[-1][0]:.1f} min, test "
            f"{result['test_ppl']:.1f}"
            + (f", with the cache {result['cache']['test_ppl']:.1f}" if "cache" in result else "")
            + (f", dynamic evaluation {result['dynamic']['test_ppl']:.1f}" if "dynamic" in result else "")
            + f"; {result['words_per_s']:,.0f} words/s",
            flush=True,
        )
    for seed, process in peers.items():
        if process.wait():
            raise SystemExit(f"the PyTorch example failed: see {args.out / f'peer-s{seed}.log'}")
        result = peer_results(args.out / f"peer-s{seed}.log")
        summary.setdefault("peers", {})[f"seed {seed}"] = result
        curves[f"PyTorch example, its defaults (seed {seed})"] = result["curve"]
        print(f"PyTorch example, seed {seed}: {result}", flush=True)
    if peers:
        summary["peer"] = next(iter(summary["peers"].values()))
    ours = [r for r in summary["runs"].values()]
    theirs_all = list(summary.get("peers", {}).values())
    marks = sorted({round(m, 1) for r in theirs_all for m, _ in r["curve"]} | {args.minutes})
    for minutes in marks:
        mine = [at(r["curve"], minutes) for r in ours]
        line = f"at {minutes:.1f} min: nlp-rnn {', '.join('-' if p is None else f'{p:.1f}' for p in mine)}"
        if theirs_all:
            theirs = [at(r["curve"], minutes) for r in theirs_all]
            line += f"; PyTorch example {', '.join('-' if p is None else f'{p:.1f}' for p in theirs)}"
            if all(theirs) and all(mine):
                lower = 1 - statistics.mean(mine) / statistics.mean(theirs)
                line += f" (nlp-rnn's mean {100 * lower:.1f} % lower)"
        print(line)
    if len(ours) > 1:
        finals = [r["valid_ppl"] for r in ours]
        print(
            f"valid ppl/word over {len(ours)} seeds: {statistics.mean(finals):.1f} ± {statistics.stdev(finals):.1f}"
        )
    if theirs_all and all(r["words_per_s"] for r in theirs_all):
        peer_speed = statistics.mean(r["words_per_s"] for r in theirs_all)
        ratio = statistics.mean(r["words_per_s"] for r in ours) / peer_speed
        print(
            f"words/s: nlp-rnn {statistics.mean(r['words_per_s'] for r in ours):,.0f}, PyTorch example "
            f"{peer_speed:,.0f} ({ratio:.2f}x)"
        )
    summary["seconds"] = round(time.time() - started)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        plot(curves, args.plot, f"WikiText-2, {summary['cpu']}, {args.threads} thread(s) per run")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
