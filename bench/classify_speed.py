"""Classification speed and agreement per precision: the shipped default sentiment model (or --model) on SST-2
test's sentences and on raw IMDb test reviews, in fp32, bf16 and int8, one process, one after the other.

    python bench/classify_speed.py [--model checkpoints/sentiment] [--precisions fp32,bf16,int8]
                                   [--reviews 500] [--threads 0] [--repeats 3] [--json FILE]

Prints texts/s (medians of --repeats passes after one warm-up pass over the first 64 texts), the speed-up over
the first precision named (fp32), accuracy against the labels, and the share of labels that agree with its:
what `--precision auto`'s table (nlp_rnn/precision.py, INFERENCE_TABLE) decides classification by (the fastest
precision whose labels agree with fp32's on at least 99 %).
"""

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "sentiment"))
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--reviews", type=int, default=500, help="the first N reviews of IMDb test.csv")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(DATA), help="the corpora's folder")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch
    from common import cpu_name

    from nlp_rnn.tasks.base import load
    from nlp_rnn.tasks.classification import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    rows = (data / "sst" / "sst2" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sets = {"sst2_test": ([r.split("\t")[0] for r in rows], [r.split("\t")[1] for r in rows])}
    with open(data / "imdb" / "test.csv", encoding="utf-8", newline="") as f:
        reviews = [row for _, row in zip(range(args.reviews), csv.DictReader(f))]
    sets[f"imdb_test_first_{len(reviews)}"] = ([r["text"] for r in reviews], [r["label"] for r in reviews])
    bundle = load(args.model)
    names = dict(zip(bundle.meta["label_values"], bundle.meta["labels"]))
    results: dict = {"model": args.model, "cpu": cpu_name(), "threads": torch.get_num_threads(), "sets": {}}
    precisions = args.precisions.split(",")
    first = precisions[0]  # the reference: speed-up and agreement are against it
    for set_name, (texts, labels) in sets.items():
        rows_out, reference = {}, None
        for precision in precisions:
            predictor = Predictor(
                load(args.model), precision
            )  # a fresh bundle: bf16 converts its model in place
            predictor.classify(texts[:64])  # warm-up
            seconds = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                out = predictor.classify(texts)
                seconds.append(time.perf_counter() - started)
            got = [p.label for p in out]
            reference = reference or got
            row = {
                "texts_per_s": round(len(texts) / statistics.median(seconds), 1),
                "accuracy": round(sum(names[y] == g for y, g in zip(labels, got)) / len(texts), 4),
                f"agrees_with_{first}": round(sum(a == b for a, b in zip(reference, got)) / len(texts), 4),
            }
            rows_out[precision] = row
        base = rows_out[first]["texts_per_s"]
        for row in rows_out.values():
            row["speed_up"] = round(row["texts_per_s"] / base, 2)
        results["sets"][set_name] = rows_out
        for precision, row in rows_out.items():
            print(f"{set_name} {precision}: {row}", flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
