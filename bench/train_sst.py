"""Train SST-2 / SST-5 classifiers over several seeds; report test accuracy, training time, classify speed.

    python bench/train_sst.py --settings sst2_phrases,sst2,sst5 --seeds 1,2,3 [--minutes M]

Each setting is a config and a training set (below); everything is chosen on dev.tsv (the
best-on-dev bundle), and test accuracy is `nlp-rnn evaluate` on test.tsv. The training budget is
the config's `train.max_minutes` unless --minutes is given. Classify speed is `Predictor.classify`
over the whole test set after loading (median of 3).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "sst"
SETTINGS = {  # name: (set, config, training file)
    "sst2_phrases": (
        "sst2",
        "sst2_phrases.yaml",
        "train_phrases.tsv",
    ),  # the phrase-level training set of the baselines
    "sst2": ("sst2", "sst2.yaml", "train.tsv"),  # sentences only
    "sst5": ("sst5", "sst5.yaml", "train.tsv"),  # sentences only
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help=f"comma-separated, from {', '.join(SETTINGS)}"
    )
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument(
        "--minutes", type=float, default=None, help="training budget per run (default: the config's)"
    )
    parser.add_argument("--output", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from nlp_rnn.tasks.base import load
    from nlp_rnn.tasks.classification import Predictor

    summary = {}
    for setting in args.settings.split(","):
        name, config, train_file = SETTINGS[setting]
        runs = []
        for seed in args.seeds.split(","):
            out = Path(args.output) / f"{setting}_seed{seed}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            budget = ["--max-minutes", str(args.minutes)] if args.minutes else []
            started = time.monotonic()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "nlp_rnn",
                    "train",
                    "classifier",
                    "--config",
                    str(ROOT / "configs" / config),
                    "--output",
                    str(out),
                    "--train",
                    str(DATA / name / train_file),
                    "--valid",
                    str(DATA / name / "dev.tsv"),
                    "--seed",
                    seed,
                    "--quiet",
                    *budget,
                ],
                check=True,
            )
            train_s = time.monotonic() - started
            report = out / "test.json"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "nlp_rnn",
                    "evaluate",
                    "--model",
                    str(out),
                    "--data",
                    str(DATA / name / "test.tsv"),
                    "--report",
                    str(report),
                ],
                check=True,
                capture_output=True,
            )
            test = json.loads(report.read_text())["sets"][0]
            predictor = Predictor(load(out))
            texts = [
                line.split("\t")[0]
                for line in (DATA / name / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
            ]
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                predictor.classify(texts)
                times.append(time.perf_counter() - t0)
            meta = json.loads((out / "best" / "meta.json").read_text())
            runs.append(
                {
                    "seed": int(seed),
                    "test_accuracy": round(100 * test["accuracy"], 2),
                    "test_macro_f1": round(100 * test["macro_f1"], 2),
                    "dev_accuracy": round(100 * meta["best"]["val_acc"], 2),
                    "best_step": meta["best"]["step"],
                    "train_s": round(train_s, 1),
                    "classify_sentences_per_s": round(len(texts) / statistics.median(times), 1),
                }
            )
            print(setting, runs[-1], flush=True)
        accs = [r["test_accuracy"] for r in runs]
        summary[setting] = {
            "runs": runs,
            "training_minutes_median": round(statistics.median(r["train_s"] for r in runs) / 60, 2),
            "test_accuracy_mean": round(statistics.mean(accs), 2),
            "test_accuracy_std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0,
            "test_accuracy_min": min(accs),
            "test_accuracy_max": max(accs),
        }
    Path(args.output).mkdir(parents=True, exist_ok=True)
    path = Path(args.output) / "sst.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}  # keep the other sets' results
    merged.update(summary)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for setting, s in summary.items():
        print(
            f"{setting}: test accuracy {s['test_accuracy_mean']:.2f} ± {s['test_accuracy_std']:.2f} "
            f"% (min {s['test_accuracy_min']:.2f}, "
            f"max {s['test_accuracy_max']:.2f}); dev {statistics.mean(r['dev_accuracy'] for r in s['runs']):.2f} %; "
            f"{s['training_minutes_median']:.1f} min per run (whole command); "
            f"classify {statistics.median(r['classify_sentences_per_s'] for r in s['runs']):.0f} sentences/s"
        )


if __name__ == "__main__":
    main()
