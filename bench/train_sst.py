"""Train SST-2 / SST-5 classifiers over several seeds; report test accuracy, training time, classify speed.

    python bench/train_sst.py --sets sst2,sst5 --seeds 1,2,3 --minutes 15

Sentence-level training labels only (no phrase labels, no pretrained embeddings). Test accuracy is
`nlp-rnn evaluate` on test.tsv with the best-on-dev bundle; classify speed is `Predictor.classify`
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="sst2,sst5")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from nlp_rnn.bundle import load
    from nlp_rnn.classification_task import Predictor

    summary = {}
    for name in args.sets.split(","):
        runs = []
        for seed in args.seeds.split(","):
            out = Path(args.output) / f"{name}_seed{seed}"
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "nlp_rnn", "train", "classifier", "--config", str(ROOT / "configs" / f"{name}.yaml"),
                            "--output", str(out), "--train", str(DATA / name / "train.tsv"), "--valid", str(DATA / name / "dev.tsv"),
                            "--seed", seed, "--max-minutes", str(args.minutes), "--quiet"], check=True)
            train_s = time.monotonic() - started
            report = out / "test.json"
            subprocess.run([sys.executable, "-m", "nlp_rnn", "evaluate", "--model", str(out), "--data", str(DATA / name / "test.tsv"),
                            "--report", str(report)], check=True, capture_output=True)
            test = json.loads(report.read_text())["sets"][0]
            predictor = Predictor(load(out))
            texts = [line.split("\t")[0] for line in (DATA / name / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]]
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                predictor.classify(texts)
                times.append(time.perf_counter() - t0)
            meta = json.loads((out / "best" / "meta.json").read_text())
            runs.append({"seed": int(seed), "test_accuracy": round(100 * test["accuracy"], 2), "test_macro_f1": round(100 * test["macro_f1"], 2),
                         "dev_accuracy": round(100 * meta["best"]["val_acc"], 2), "best_step": meta["best"]["step"],
                         "train_s": round(train_s, 1), "classify_sentences_per_s": round(len(texts) / statistics.median(times), 1)})
            print(name, runs[-1], flush=True)
        accs = [r["test_accuracy"] for r in runs]
        summary[name] = {"runs": runs, "test_accuracy_mean": round(statistics.mean(accs), 2),
                         "test_accuracy_std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0,
                         "test_accuracy_min": min(accs), "test_accuracy_max": max(accs)}
    Path(args.output).mkdir(parents=True, exist_ok=True)
    path = Path(args.output) / "sst.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}  # keep the other sets' results
    merged.update(summary)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
