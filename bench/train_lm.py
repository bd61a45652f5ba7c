"""Character-level language model on Tiny Shakespeare: validation loss per character against training time.

    python bench/train_lm.py --minutes 3 --seeds 1,2,3
    python bench/train_lm.py --minutes 30 --config configs/shakespeare_char_30min.yaml --plot docs/shakespeare_curve.png

The char-rnn / nanoGPT convention: the first 90 % of the characters train, the last 10 % validate; the
loss is the mean negative log-likelihood per character in nats over the whole validation text.
Training time is wall-clock time of `nlp-rnn train lm --max-minutes M` (validations included).
Generation speed: characters per second of one 2,000-token sample after loading (median of 3).
Anchors (from the project's issue, measured on this machine kind): nanoGPT's CPU configuration
reached 1.886 after 1.5 minutes and 1.72 after 3 minutes (its own 20-batch estimate).
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"


def curve(run: Path) -> list[tuple[float, float, int]]:
    """(minutes, validation loss per character, step) of every validation."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [
        (r["elapsed_s"] / 60, r["val_loss_per_char"], r["step"]) for r in records if "val_loss_per_char" in r
    ]


def generation_speed(run: Path, tokens: int = 2000) -> float:
    sys.path.insert(0, str(ROOT))
    import nlp_rnn

    generator = nlp_rnn.load(run, precision="fp32")
    speeds = []
    for seed in range(3):
        started = time.perf_counter()
        text = generator.generate(["ROMEO:"], max_tokens=tokens, seed=seed)[0][0].text
        speeds.append(len(text) / (time.perf_counter() - started))
    return statistics.median(speeds)


def plot(runs: dict[str, Path], path: Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, run in runs.items():
        points = curve(run)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
    ax.scatter(
        [1.5, 3.0],
        [1.886, 1.72],
        color="black",
        marker="x",
        zorder=5,
        label="nanoGPT CPU config (issue's figures)",
    )
    ax.axhline(1.70, color="grey", linestyle=":", linewidth=1)
    ax.axhline(1.50, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("training time on 2 CPU cores (minutes)")
    ax.set_ylabel("validation loss per character (nats)")
    ax.set_title("Tiny Shakespeare, character-level LSTM")
    ax.set_xlim(0, minutes * 1.02)
    ax.set_ylim(1.3, 3.0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "shakespeare_char.yaml"))
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--plot", default=None, help="PNG of the learning curves")
    parser.add_argument(
        "--include", action="append", default=[], help="LABEL=RUN_FOLDER: another run's curve in the plot"
    )
    parser.add_argument("--plot-only", action="store_true", help="no training: plot the --include runs")
    args = parser.parse_args()
    runs = {label: Path(folder) for label, folder in (item.split("=", 1) for item in args.include)}
    if args.plot_only:
        plot(runs, Path(args.plot), args.minutes)
        print(f"curve: {args.plot}")
        return
    finals, speeds = [], []
    for seed in args.seeds.split(","):
        out = Path(args.output) / f"lm_{Path(args.config).stem}_{args.minutes:g}min_seed{seed}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        started = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nlp_rnn",
                "train",
                "lm",
                "--config",
                args.config,
                "--output",
                str(out),
                "--train",
                str(TEXT),
                "--valid-fraction",
                "0.1",
                "--max-minutes",
                str(args.minutes),
                "--seed",
                seed,
                "--quiet",
            ],
            check=True,
        )
        wall = (time.monotonic() - started) / 60
        points = curve(out)
        best = min(p[1] for p in points)
        finals.append(best)
        speeds.append(generation_speed(out))
        runs[f"{Path(args.config).stem}, {args.minutes:g} min, seed {seed}"] = out
        print(
            f"seed {seed}: best validation loss/char {best:.4f} (last {points[-1][1]:.4f} at "
            f"{points[-1][0]:.2f} min, step "
            f"{points[-1][2]}); whole command {wall:.2f} min; generation {speeds[-1]:,.0f} chars/s",
            flush=True,
        )
        print("  curve: " + ", ".join(f"{m:.2f} min {v:.3f}" for m, v, _ in points), flush=True)
    sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
    print(
        f"{Path(args.config).name}, {args.minutes:g} min, seeds {args.seeds}: validation loss/char "
        f"{statistics.mean(finals):.4f} "
        f"± {sd:.4f} (min {min(finals):.4f}, max {max(finals):.4f}); generation "
        f"{statistics.median(speeds):,.0f} chars/s; "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    if args.plot:
        plot(runs, Path(args.plot), args.minutes)
        print(f"curve: {args.plot}")


if __name__ == "__main__":
    main()
