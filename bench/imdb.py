"""The sentiment-transfer pipeline on IMDb, each stage timed: pretrain a language model, fine-tune it on the
reviews, train the classifier from it, evaluate on IMDb test (and SST-2 test, raw text in).

    python bench/imdb.py [--pretrain-minutes 25] [--finetune-minutes 8] [--classifier-minutes 20]
                         [--stages pretrain,finetune,classifier,evaluate] [--device cuda] [--data DIR]
                         [--resume]  (continue the pretrain stage of --runs to --pretrain-minutes in all)

Stages (configs/imdb_lm.yaml, imdb_lm_finetune.yaml, imdb.yaml): 1. a language model on WikiText-2's training
text plus the review texts of IMDb's train.csv (never test.csv); 2. that model fine-tuned on the reviews only;
3. the classifier started from it (`--init-from`), chosen on a held-out 5% of train.csv; 4. `nlp-rnn evaluate`
on IMDb's test.csv (25,000 reviews) and SST-2's test.tsv.
Results go to bench/results/imdb.json; each stage's command line, minutes and score are printed.
`--data` names another data folder laid out like ../shared/data (bench/gpu.sh passes its subsets there).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import cpu_name, logged_rates

ROOT = Path(__file__).resolve().parent.parent
NLP_RNN = [sys.executable, "-m", "nlp_rnn"]  # works also where the package is on PYTHONPATH, not installed


class Data:
    """The corpora the pipeline reads, under one folder laid out like ../shared/data."""

    def __init__(self, root: Path) -> None:
        self.wiki = root / "text" / "wikitext-2"
        self.imdb = root / "imdb"
        self.sst2 = root / "sst" / "sst2" / "test.tsv"
        self.sst5 = root / "sst" / "sst5" / "test.tsv"
        self.phrases = root / "sst" / "sst2" / "train_phrases.tsv"


def run(cmd: list[str], log: dict, name: str) -> float:
    print("$ " + " ".join(cmd), flush=True)
    started = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT)
    minutes = (time.monotonic() - started) / 60
    log[name] = {"command": " ".join(cmd), "minutes": round(minutes, 2)}
    print(f"{name}: {minutes:.1f} minutes", flush=True)
    return minutes


def evaluate(model: Path, data: Path, text_column: str, out: Path, device: str = "auto") -> dict:
    cmd = [*NLP_RNN, "evaluate", "--model", str(model), "--data", str(data), "--text-column", text_column]
    cmd += ["--label-column", "label", "--precision", "fp32", "--report", str(out), "--device", device]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    result = json.loads(out.read_text())["sets"][0]
    return {"command": " ".join(cmd), "accuracy": result["accuracy"], "seconds": result["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pretrain-minutes", type=float, default=25)
    parser.add_argument("--finetune-minutes", type=float, default=8)
    parser.add_argument("--classifier-minutes", type=float, default=20)
    parser.add_argument(
        "--classifier-config",
        default="configs/imdb.yaml",
        help="the classifier stage's recipe: configs/imdb.yaml (ULMFiT's) or configs/imdb_one_rate.yaml",
    )
    parser.add_argument("--classifier-name", default="classifier", help="its folder under --runs")
    parser.add_argument(
        "--stages",
        default="pretrain,finetune,classifier,evaluate",
        help="any of pretrain, finetune, classifier, evaluate, baseline, sst, default, ablation",
    )
    parser.add_argument("--ablation-minutes", type=float, default=6)
    parser.add_argument(
        "--default-minutes",
        type=float,
        default=0,
        help="default stage: its budget (0: configs/sentiment.yaml's)",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="ablation stage: only the variants whose names contain one of these (comma-separated)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="pretrain stage: continue RUNS/lm from its last/ bundle up to --pretrain-minutes in all "
        "(its schedule halves the rate on a plateau, so a longer budget continues the same run)",
    )
    parser.add_argument("--ship", default="", help="default stage: copy the model here with fp16 weights")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "imdb-bench"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the corpora's folder")
    parser.add_argument("--device", default="auto", help="the pipeline's stages: auto, cpu, cuda, cuda:N")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "imdb.json"))
    args = parser.parse_args()
    runs, stages = Path(args.runs), args.stages.split(",")
    runs.mkdir(parents=True, exist_ok=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    log: dict = json.loads(out.read_text()) if out.exists() else {}
    log["cpu"] = cpu_name()
    data, device = Data(Path(args.data)), args.device
    log["device"] = device
    common = ["--quiet", "--device", device]
    lm, tuned, clf = runs / "lm", runs / "lm-ft", runs / args.classifier_name
    if "pretrain" in stages:
        cmd = [*NLP_RNN, "train", "lm", "--config", "configs/imdb_lm.yaml", "--output", str(lm)]
        cmd += ["--train", str(data.wiki / "wiki.train.tokens"), "--train", str(data.imdb / "train.csv")]
        cmd += ["--valid", str(data.wiki / "wiki.valid.tokens"), "--max-minutes", str(args.pretrain_minutes)]
        if args.resume:
            cmd.append("--resume")
        run(cmd + common, log, "pretrain")
        log["pretrain"].update(best=best_of(lm), target_tokens_per_s=speed(lm))
    if "finetune" in stages:
        cmd = [*NLP_RNN, "train", "lm", "--config", "configs/imdb_lm_finetune.yaml", "--init-from", str(lm)]
        cmd += ["--output", str(tuned), "--train", str(data.imdb / "train.csv"), "--valid-fraction", "0.05"]
        run(cmd + ["--max-minutes", str(args.finetune_minutes)] + common, log, "finetune")
        log["finetune"].update(best=best_of(tuned), target_tokens_per_s=speed(tuned))
    if "classifier" in stages:
        cmd = [*NLP_RNN, "train", "classifier", "--config", args.classifier_config, "--output", str(clf)]
        cmd += ["--train", str(data.imdb / "train.csv")]
        cmd += [
            "--init-from",
            str(tuned if tuned.exists() else lm),
            "--max-minutes",
            str(args.classifier_minutes),
        ]
        run(cmd + common, log, "classifier")
        log["classifier"].update(best=best_of(clf), examples_per_s=speed(clf))
    if "evaluate" in stages:
        prefix = "" if args.classifier_name == "classifier" else f"{args.classifier_name}_"
        log["evaluate"] = {
            "imdb_test": evaluate(
                clf, data.imdb / "test.csv", "text", runs / f"{prefix}imdb_test.json", device
            ),
            "sst2_test": evaluate(clf, data.sst2, "sentence", runs / f"{prefix}sst2_test.json", device),
        }
        print(json.dumps(log["evaluate"], indent=2), flush=True)
        out.write_text(json.dumps(log, indent=2))
    if "baseline" in stages:  # the same classifier from random weights, the same tokenizer and budget
        baseline(runs, lm, log, args.classifier_minutes, data)
        out.write_text(json.dumps(log, indent=2))
    if "sst" in stages:
        sst(runs, tuned, log, data)
        out.write_text(json.dumps(log, indent=2))
    if "default" in stages:
        default_model(runs, tuned, log, Path(args.ship) if args.ship else None, data, args.default_minutes)
        out.write_text(json.dumps(log, indent=2))
    if "ablation" in stages:
        variants = [v for v in args.variants.split(",") if v]
        ablation(runs, lm, tuned, log, args.ablation_minutes, variants, out)
    out.write_text(json.dumps(log, indent=2))
    print(f"results: {out}")


def baseline(runs: Path, lm: Path, log: dict, minutes: float, data: Data) -> None:
    """configs/imdb.yaml without --init-from: the language model's shape and tokenizer, random weights,
    tuned for a random start: every layer trained from the first step at one learning rate (gradual
    unfreezing and discriminative rates only make sense for pretrained layers)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "imdb.yaml").read_text())
    cfg["train"].update({"unfreeze_every": 0, "layer_lr_decay": 1.0})
    body = json.loads((lm / "best" / "config.json").read_text())["model"]
    cfg["model"]["body"] = {
        k: v for k, v in body.items() if k not in ("init_from", "adaptive_softmax", "tie_output")
    }
    path, folder = runs / "baseline.yaml", runs / "baseline"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [*NLP_RNN, "train", "classifier", "--config", str(path), "--output", str(folder), "--quiet"]
    cmd += ["--train", str(data.imdb / "train.csv")]
    run(cmd + ["--tokenizer", str(lm / "best"), "--max-minutes", str(minutes)], log, "baseline")
    log["baseline"]["best"] = best_of(folder)
    log["baseline"]["imdb_test"] = evaluate(
        folder, data.imdb / "test.csv", "text", runs / "baseline_imdb.json"
    )
    print(json.dumps(log["baseline"], indent=2), flush=True)


def sst(runs: Path, tuned: Path, log: dict, data: Data) -> None:
    """SST-2 (phrase-level training set) and SST-5 (sentences only), both started from the fine-tuned LM."""
    for name, config, test in (
        ("sst2_transfer", "configs/sst2_transfer.yaml", data.sst2),
        ("sst5_transfer", "configs/sst5_transfer.yaml", data.sst5),
    ):
        folder = runs / name
        cmd = [*NLP_RNN, "train", "classifier", "--config", config, "--init-from", str(tuned)]
        run(cmd + ["--output", str(folder), "--quiet"], log, name)
        log[name]["best"] = best_of(folder)
        log[name]["test"] = evaluate(folder, test, "sentence", runs / f"{name}_test.json")
        print(json.dumps(log[name], indent=2), flush=True)


def default_model(
    runs: Path, tuned: Path, log: dict, ship: Path | None, data: Data, minutes: float = 0
) -> None:
    """The shipped default: IMDb's training reviews and SST-2's training phrases together (configs/sentiment.yaml)."""
    import csv

    table = (
        runs / "sentiment-train.tsv"
    )  # TSV is read without quoting: one row a line, tabs only between fields
    with open(table, "w", encoding="utf-8") as out:
        out.write("text\tlabel\n")
        with open(data.imdb / "train.csv", encoding="utf-8", newline="") as rows:
            for row in csv.DictReader(rows):
                out.write(" ".join(row["text"].split()) + "\t" + row["label"] + "\n")
        with open(data.phrases, encoding="utf-8") as rows:
            next(rows)
            for line in rows:
                text, label = line.rstrip("\n").rsplit("\t", 1)
                out.write(" ".join(text.split()) + "\t" + label + "\n")
    folder = runs / "sentiment"
    cmd = [*NLP_RNN, "train", "classifier", "--config", "configs/sentiment.yaml", "--init-from", str(tuned)]
    cmd += ["--train", str(table), "--output", str(folder), "--quiet"]  # the table under --runs
    run(cmd + (["--max-minutes", str(minutes)] if minutes else []), log, "default")
    log["default"]["best"] = best_of(folder)
    model = folder
    if ship is not None:
        sys.path.insert(0, str(ROOT))
        from nlp_rnn import bundle as bundles
        from nlp_rnn.tasks.base import load

        bundle = load(folder)
        bundles.save(ship, bundle, half=True)
        model = ship
        log["default"]["shipped"] = {"path": str(ship), "megabytes": round(folder_size(ship) / 1e6, 1)}
    log["default"]["imdb_test"] = evaluate(model, data.imdb / "test.csv", "text", runs / "default_imdb.json")
    log["default"]["sst2_test"] = evaluate(model, data.sst2, "sentence", runs / "default_sst2.json")
    print(json.dumps(log["default"], indent=2), flush=True)


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def ablation(
    runs: Path, lm: Path, tuned: Path, log: dict, minutes: float, only: list[str], out: Path
) -> None:
    """configs/imdb.yaml with each fine-tuning switch off in turn, all at the same budget; held-out accuracy.
    Each variant's result is merged into `out` as it ends, so two of these (e.g. `--variants` split between
    two processes pinned to one core each) can share one results file."""
    import yaml

    base = yaml.safe_load((ROOT / "configs" / "imdb.yaml").read_text())
    body = json.loads((lm / "best" / "config.json").read_text())["model"]
    body = {k: v for k, v in body.items() if k not in ("init_from", "adaptive_softmax", "tie_output")}
    variants = {
        "full recipe": ({}, tuned),
        "no slanted schedule (plateau)": ({"train": {"schedule": "plateau"}}, tuned),
        "no discriminative rates": ({"train": {"layer_lr_decay": 1.0}}, tuned),
        "no gradual unfreezing": ({"train": {"unfreeze_every": 0}}, tuned),
        "neither (every layer from the start at one rate)": (
            {"train": {"unfreeze_every": 0, "layer_lr_decay": 1.0}},
            tuned,
        ),
        "no LM fine-tuning (stage-1 LM)": ({}, lm),
        "no pretraining (random body, same tokenizer)": ({"model": {"body": body}}, None),
    }
    key = f"ablation_{minutes:g}min"  # one table per budget
    results = log.setdefault(key, {"minutes": minutes, "runs": {}})
    for k, (name, (change, start)) in enumerate(variants.items()):
        if only and not any(part in name for part in only):
            continue
        cfg = json.loads(json.dumps(base))
        for section, values in change.items():
            cfg[section].update(values)
        path = runs / f"ablation-{k}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        folder = runs / f"ablation-{k}"
        cmd = [*NLP_RNN, "train", "classifier", "--config", str(path), "--output", str(folder), "--quiet"]
        cmd += ["--init-from", str(start)] if start else ["--tokenizer", str(lm / "best")]
        run(cmd + ["--max-minutes", str(minutes)], results["runs"], name)
        results["runs"][name]["val_acc"] = best_of(folder).get("val_acc")
        results["runs"][name]["curve"] = validations(folder)
        print(name, results["runs"][name]["val_acc"], flush=True)
        merged = json.loads(out.read_text()) if out.exists() else {}
        table = merged.setdefault(key, {"minutes": minutes, "runs": {}})
        table["runs"][name] = results["runs"][name]
        out.write_text(json.dumps({**merged, "cpu": log["cpu"]}, indent=2))
        log[key] = table


def validations(run_dir: Path) -> list[list[float]]:
    """[minutes, held-out accuracy] of each validation of a run (its metrics.jsonl)."""
    return [[round(r["elapsed_s"] / 60, 2), r["val_acc"]] for r in metrics(run_dir) if "val_acc" in r]


def metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (training windows and validations)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def speed(run_dir: Path) -> float | None:
    """The median of a run's logged training rates, its first two windows (warm-up) left out: target tokens
    per second for a language model, examples (reviews) per second for a classifier."""
    rates = logged_rates(metrics(run_dir))
    return statistics.median(rates) if rates else None


def best_of(run_dir: Path) -> dict:
    meta = json.loads((run_dir / "best" / "meta.json").read_text())
    return meta.get("best", {})


if __name__ == "__main__":
    sys.exit(main())
