"""The sentiment-transfer pipeline on IMDb, each stage timed: pretrain a language model, fine-tune it on the
reviews, train the classifier from it, evaluate on IMDb test (and SST-2 test, raw text in).

    python bench/imdb.py [--pretrain-minutes 25] [--finetune-minutes 8] [--classifier-minutes 20]
                         [--classifier-steps N]  (stage 3 budgeted in steps instead of minutes)
                         [--stages pretrain,finetune,classifier,evaluate] [--device cuda] [--data DIR]
                         [--resume]  (continue the pretrain stage of --runs to --pretrain-minutes in all)
                         [--reverse --tokenizer RUNS/lm/best --ensemble-with OTHER/classifier]  (the backward
                         direction with a forward run's tokenizer, evaluated alone and with the forward classifier)
                         [--classifier-seed N --classifier-name NAME-seedN]  (another seed of stage 3)

Stages (configs/imdb_lm.yaml, imdb_lm_finetune.yaml, imdb.yaml): 1. a language model on WikiText-2's training
text plus the review texts of IMDb's train.csv (never test.csv); 2. that model fine-tuned on the reviews only;
3. the classifier started from it (`--init-from`), chosen on a held-out 5% of train.csv; 4. `nlp-rnn evaluate`
on IMDb's test.csv (25,000 reviews) and SST-2's test.tsv.
Other stages: baseline (stage 3 from random weights), sst (SST-2 and SST-5 from the stage-2 model, or with
`--sst-from NAME` from the IMDb classifier RUNS/NAME), soup (SST-5 classifiers of `--seeds` from that IMDb classifier
sharing their head's start, `--soup-steps` each, averaged into one model), default (the shipped default model:
a classifier of reviews and SST-2 phrases together, its continuation on the phrases, and their weights averaged
1/3 : 2/3; `--ship DIR` writes its fp16 bundle), ablation (the fine-tuning switches,
`--variants`), speed (stages 1 and 3 for `--speed-minutes` each in fp32 and in bf16: their training rates side by side).
Results go to bench/results/imdb.json (after each stage); each stage's command line, minutes and score are printed.
`--data` names another data folder laid out like ../shared/data (bench/gpu.sh passes its subsets there).
"""

import argparse
import json
import shutil
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


def train(kind: str, config: str, output: Path) -> list[str]:
    """The start of an `nlp-rnn train KIND` command line: its config and output folder."""
    return [*NLP_RNN, "train", kind, "--config", config, "--output", str(output)]


def run(cmd: list[str], log: dict, name: str) -> float:
    print("$ " + " ".join(cmd), flush=True)
    started = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT)
    minutes = (time.monotonic() - started) / 60
    log[name] = {"command": " ".join(cmd), "minutes": round(minutes, 2)}
    print(f"{name}: {minutes:.1f} minutes", flush=True)
    return minutes


def evaluate(
    model: Path, data: Path, text_column: str, out: Path, device: str = "auto", also: tuple[Path, ...] = ()
) -> dict:
    """`nlp-rnn evaluate` of the model (with `also`: the ensemble of it and those) on one labelled set, fp32."""
    cmd = [*NLP_RNN, "evaluate", "--model", str(model), *(x for m in also for x in ("--model", str(m)))]
    cmd += ["--data", str(data), "--text-column", text_column]
    cmd += ["--label-column", "label", "--precision", "fp32", "--report", str(out), "--device", device]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    result = json.loads(out.read_text())["sets"][0]
    return {"command": " ".join(cmd), "accuracy": result["accuracy"], "seconds": result["seconds"]}


STAGES = (
    "pretrain",
    "finetune",
    "classifier",
    "evaluate",
    "baseline",
    "sst",
    "soup",
    "default",
    "ablation",
    "speed",
)


def arguments() -> argparse.Namespace:
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
    parser.add_argument(
        "--classifier-steps",
        type=int,
        default=0,
        help="classifier stage: a budget in steps instead of --classifier-minutes (its schedule spread over them), "
        "e.g. another seed of a run measured on a faster machine, for the same recipe at a different speed",
    )
    parser.add_argument("--classifier-name", default="classifier", help="its folder under --runs")
    parser.add_argument(
        "--classifier-seed",
        type=int,
        default=0,
        help="classifier stage: train with this seed (0: the config's); give each seed its own --classifier-name",
    )
    parser.add_argument(
        "--stages",
        default="pretrain,finetune,classifier,evaluate",
        help="any of " + ", ".join(STAGES) + " (run in that order)",
    )
    parser.add_argument("--ablation-minutes", type=float, default=6)
    parser.add_argument(
        "--seeds", default="1", help="sst stage: the seeds to train each model with, e.g. 1,2,3"
    )
    parser.add_argument(
        "--sst-from",
        default="",
        help="sst stage: start from this IMDb classifier (a folder under --runs, e.g. one-rate) instead of the "
        "fine-tuned language model",
    )
    parser.add_argument(
        "--soup-steps",
        type=int,
        default=1600,
        help="soup stage: each SST-5 member's budget in steps (from --sst-from, default one-rate; --seeds)",
    )
    parser.add_argument(
        "--default-minutes",
        type=float,
        default=0,
        help="default stage: its budget (0: configs/sentiment.yaml's)",
    )
    parser.add_argument(
        "--speed-minutes",
        type=float,
        default=2,
        help="speed stage: each run's budget (stage 1, then stage 3 for three quarters of it; fp32 and bf16)",
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
    parser.add_argument(
        "--reverse",
        action="store_true",
        help="pretrain stage: a backward language model (model.reverse: it reads text right to left), so the "
        "fine-tuned model and the classifier read backwards too (ULMFiT's second direction)",
    )
    parser.add_argument(
        "--tokenizer",
        default="",
        help="pretrain stage: this trained tokenizer folder (e.g. another run's RUNS/lm/best) instead of training "
        "one: needed for --ensemble-with, whose members share one",
    )
    parser.add_argument(
        "--ensemble-with",
        default="",
        help="evaluate stage: also evaluate the classifier and this one (a folder, e.g. the other direction's) "
        "together, their class probabilities averaged",
    )
    parser.add_argument("--ship", default="", help="default stage: copy the model here with fp16 weights")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "imdb-bench"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the corpora's folder")
    parser.add_argument("--device", default="auto", help="the pipeline's stages: auto, cpu, cuda, cuda:N")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "imdb.json"))
    args = parser.parse_args()
    if args.classifier_steps < 0:
        parser.error(
            f"--classifier-steps must be 0 (minutes) or a number of steps, got {args.classifier_steps}"
        )
    return args


class Pipeline:
    """The stages over one --runs folder; each method is a stage of --stages and adds its entry to `log`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.runs = args, Path(args.runs)
        self.runs.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.output)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.log: dict = json.loads(self.out.read_text()) if self.out.exists() else {}
        self.log["cpu"], self.log["device"] = cpu_name(), args.device
        self.data, self.device = Data(Path(args.data)), args.device
        self.common = ["--quiet", "--device", args.device]
        self.lm, self.tuned = self.runs / "lm", self.runs / "lm-ft"
        self.clf = self.runs / args.classifier_name

    def save(self) -> None:
        self.out.write_text(json.dumps(self.log, indent=2))

    def pretrain(self) -> None:
        data = self.data
        cmd = train("lm", "configs/imdb_lm.yaml", self.lm)
        cmd += ["--train", str(data.wiki / "wiki.train.tokens"), "--train", str(data.imdb / "train.csv")]
        cmd += [
            "--valid",
            str(data.wiki / "wiki.valid.tokens"),
            "--max-minutes",
            str(self.args.pretrain_minutes),
        ]
        if self.args.resume:
            cmd.append("--resume")
        if self.args.reverse:
            cmd += ["--set", "model.reverse=true"]
        if self.args.tokenizer:
            cmd += ["--tokenizer", self.args.tokenizer]
        run(cmd + self.common, self.log, "pretrain")
        self.log["pretrain"].update(best=best_of(self.lm), target_tokens_per_s=speed(self.lm))

    def finetune(self) -> None:
        cmd = train("lm", "configs/imdb_lm_finetune.yaml", self.tuned) + ["--init-from", str(self.lm)]
        cmd += ["--train", str(self.data.imdb / "train.csv")]
        cmd += ["--valid-fraction", "0.05", "--max-minutes", str(self.args.finetune_minutes)]
        run(cmd + self.common, self.log, "finetune")
        self.log["finetune"].update(best=best_of(self.tuned), target_tokens_per_s=speed(self.tuned))

    def classifier(self) -> None:
        cmd = train("classifier", self.args.classifier_config, self.clf)
        cmd += ["--train", str(self.data.imdb / "train.csv"), "--init-from", str(self.start())]
        if self.args.classifier_seed:
            cmd += ["--seed", str(self.args.classifier_seed)]
        if self.args.classifier_steps:
            budget = ["--max-steps", str(self.args.classifier_steps), "--max-minutes", "0"]
        else:
            budget = ["--max-minutes", str(self.args.classifier_minutes)]
        run(cmd + budget + self.common, self.log, "classifier")
        self.log["classifier"].update(best=best_of(self.clf), examples_per_s=speed(self.clf))

    def start(self) -> Path:
        """The language model stage 3 starts from: the fine-tuned one where stage 2 ran."""
        return self.tuned if self.tuned.exists() else self.lm

    def evaluate(self) -> None:
        name, data, device = self.args.classifier_name, self.data, self.device
        prefix = "" if name == "classifier" else f"{name}_"
        self.log["evaluate"] = {
            "imdb_test": evaluate(
                self.clf, data.imdb / "test.csv", "text", self.runs / f"{prefix}imdb_test.json", device
            ),
            "sst2_test": evaluate(
                self.clf, data.sst2, "sentence", self.runs / f"{prefix}sst2_test.json", device
            ),
        }
        if self.args.ensemble_with:
            other = (Path(self.args.ensemble_with),)
            self.log["evaluate"]["ensemble"] = {
                "with": self.args.ensemble_with,
                "imdb_test": evaluate(
                    self.clf,
                    data.imdb / "test.csv",
                    "text",
                    self.runs / f"{prefix}ensemble_imdb_test.json",
                    device,
                    other,
                ),
            }
        print(json.dumps(self.log["evaluate"], indent=2), flush=True)

    def baseline(self) -> None:  # the same classifier from random weights, the same tokenizer and budget
        baseline(self.runs, self.lm, self.log, self.args.classifier_minutes, self.data)

    def sst(self) -> None:
        seeds = [int(x) for x in self.args.seeds.split(",") if x]
        sst(self.runs, self.tuned, self.log, self.data, seeds, self.args.sst_from)

    def soup(self) -> None:
        seeds = [int(x) for x in self.args.seeds.split(",") if x]
        origin = self.runs / (self.args.sst_from or "one-rate")
        sst5_soup(self.runs, origin, self.log, self.data, seeds, self.args.soup_steps)

    def default(self) -> None:
        ship = Path(self.args.ship) if self.args.ship else None
        default_model(self.runs, self.tuned, self.log, ship, self.data, self.args.default_minutes)

    def ablation(self) -> None:
        variants = [v for v in self.args.variants.split(",") if v]
        ablation(self.runs, self.lm, self.tuned, self.log, self.args.ablation_minutes, variants, self.out)

    def speed(self) -> None:
        stage_speeds(
            self.runs, self.lm, self.start(), self.log, self.data, self.args.speed_minutes, self.device
        )


def main() -> None:
    args = arguments()
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        sys.exit(f"--stages: unknown {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    pipeline = Pipeline(args)
    for name in STAGES:
        if name in stages:
            getattr(pipeline, name)()
            pipeline.save()
    print(f"results: {pipeline.out}")


def stage_speeds(
    runs: Path, lm: Path, start: Path, log: dict, data: Data, minutes: float, device: str
) -> None:
    """Stage 1 (the language model, from scratch with RUNS/lm's tokenizer) and stage 3 (the one-rate classifier
    from the stage-2 model) for a few minutes each in fp32 and in bf16 autocast: the median of each run's logged
    rates (target tokens/s; reviews/s), first two windows left out, and the best validation score reached."""
    import yaml

    table = log.setdefault("speed", {"minutes": minutes, "runs": {}})
    table["minutes"] = minutes
    for precision in ("fp32", "bf16"):
        for stage, config, budget in (
            ("lm", "configs/imdb_lm.yaml", minutes),
            ("classifier", "configs/imdb_one_rate.yaml", 0.75 * minutes),
        ):
            cfg = yaml.safe_load((ROOT / config).read_text())
            cfg["train"]["precision"] = precision
            name = f"{stage}-{precision}"
            path, folder = runs / f"speed-{name}.yaml", runs / f"speed-{name}"
            path.write_text(yaml.safe_dump(cfg))
            shutil.rmtree(folder, ignore_errors=True)
            cmd = train("lm" if stage == "lm" else "classifier", str(path), folder)
            cmd += ["--quiet", "--device", device, "--max-minutes", str(budget)]
            if stage == "lm":
                cmd += [
                    "--train",
                    str(data.wiki / "wiki.train.tokens"),
                    "--train",
                    str(data.imdb / "train.csv"),
                ]
                cmd += ["--valid", str(data.wiki / "wiki.valid.tokens"), "--tokenizer", str(lm / "best")]
            else:
                cmd += ["--train", str(data.imdb / "train.csv"), "--init-from", str(start)]
            run(cmd, table["runs"], name)
            table["runs"][name].update(rate=speed(folder), best=best_of(folder))
            print(name, json.dumps(table["runs"][name]["rate"]), flush=True)


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
    cmd = train("classifier", str(path), folder) + ["--quiet", "--train", str(data.imdb / "train.csv")]
    run(cmd + ["--tokenizer", str(lm / "best"), "--max-minutes", str(minutes)], log, "baseline")
    log["baseline"]["best"] = best_of(folder)
    log["baseline"]["imdb_test"] = evaluate(
        folder, data.imdb / "test.csv", "text", runs / "baseline_imdb.json"
    )
    print(json.dumps(log["baseline"], indent=2), flush=True)


def sst(runs: Path, tuned: Path, log: dict, data: Data, seeds: list[int], start: str = "") -> None:
    """SST-2 (phrase-level training set) and SST-5 (sentences only), both started from the fine-tuned LM, once per
    seed (seed 1 in RUNS/sst2_transfer, seed N in RUNS/sst2_transfer-seedN) — or, with `start` (`--sst-from`, a
    classifier folder under RUNS such as one-rate), from that IMDb classifier's body, in
    RUNS/sst2_transfer-from-START[-seedN]. A seed whose folder and test report are already there is read back, not
    trained again (say so in the log), so seeds can be added later; with two or more seeds the mean and sample
    standard deviation of the test accuracies are reported."""
    suffix, origin = (f"-from-{start}", runs / start) if start else ("", tuned)
    for base, config, test in (
        ("sst2_transfer", "configs/sst2_transfer.yaml", data.sst2),
        ("sst5_transfer", "configs/sst5_transfer.yaml", data.sst5),
    ):
        name = base + suffix
        entry = log.setdefault(name, {})
        by_seed = entry.setdefault("seeds", {})
        for seed in seeds:
            tag = name if seed == 1 else f"{name}-seed{seed}"
            cmd = train("classifier", config, runs / tag) + ["--init-from", str(origin), "--seed", str(seed)]
            by_seed[str(seed)] = trained_and_tested(runs, tag, cmd, test)
        accuracies = [by_seed[str(seed)]["test"]["accuracy"] for seed in seeds]
        if len(accuracies) > 1:
            entry["test_mean"] = statistics.mean(accuracies)
            entry["test_sd"] = statistics.stdev(accuracies)
            print(
                f"{name}: test {entry['test_mean']:.4f} ± {entry['test_sd']:.4f} over seeds {seeds}",
                flush=True,
            )


def trained_and_tested(runs: Path, tag: str, cmd: list[str], test: Path) -> dict:
    """RUNS/TAG trained by `cmd` and evaluated on `test` (RUNS/TAG_test.json) — or, where both are already
    there, read back (and the log says so), so that seeds can be added later."""
    folder, report = runs / tag, runs / f"{tag}_test.json"
    if (folder / "best").is_dir() and report.exists():
        result = json.loads(report.read_text())["sets"][0]
        print(f"{tag}: read back (trained earlier): test {result['accuracy']:.4f}", flush=True)
        test_result = {"accuracy": result["accuracy"], "seconds": result["seconds"]}
        return {"read_back": str(folder), "best": best_of(folder), "test": test_result}
    entry: dict = {}
    run(cmd + ["--quiet"], entry, "run")
    entry = dict(entry["run"], best=best_of(folder), test=evaluate(folder, test, "sentence", report))
    print(json.dumps(entry, indent=2), flush=True)
    return entry


def sst5_soup(runs: Path, origin: Path, log: dict, data: Data, seeds: list[int], steps: int) -> None:
    """SST-5 classifiers from the IMDb classifier `origin` sharing their new head's start (`train.init_seed` 1),
    one per seed, `steps` steps each (RUNS/sst5_soup-seedN), then their weights' mean as one model
    (`nlp-rnn average --model ...`, RUNS/sst5_soup); every member and the soup scored on SST-5 dev and test."""
    entry = log.setdefault("sst5_soup", {"from": str(origin), "steps": steps})
    members = entry.setdefault("seeds", {})
    dev = data.sst5.parent / "dev.tsv"
    for seed in seeds:
        tag = f"sst5_soup-seed{seed}"
        cmd = train("classifier", "configs/sst5_transfer.yaml", runs / tag) + ["--init-from", str(origin)]
        cmd += ["--seed", str(seed), "--set", "train.init_seed=1", "--set", "train.max_minutes=0"]
        members[str(seed)] = trained_and_tested(runs, tag, cmd + ["--max-steps", str(steps)], data.sst5)
        members[str(seed)]["dev"] = evaluate(runs / tag, dev, "sentence", runs / f"{tag}_dev.json")
    soup = runs / "sst5_soup"
    cmd = [*NLP_RNN, "average", "--output", str(soup)]
    run(
        cmd + [x for seed in seeds for x in ("--model", str(runs / f"sst5_soup-seed{seed}"))],
        entry,
        "average",
    )
    entry["dev"] = evaluate(soup, dev, "sentence", runs / "sst5_soup_dev.json")
    entry["test"] = evaluate(soup, data.sst5, "sentence", runs / "sst5_soup_test.json")
    alone = [members[str(seed)]["test"]["accuracy"] for seed in seeds]
    print(
        f"sst5_soup: test {entry['test']['accuracy']:.4f} (dev {entry['dev']['accuracy']:.4f}); "
        f"the members alone {', '.join(f'{a:.4f}' for a in alone)}",
        flush=True,
    )


def default_model(
    runs: Path, tuned: Path, log: dict, ship: Path | None, data: Data, minutes: float = 0
) -> None:
    """The shipped default, a model soup: (1) IMDb's training reviews and SST-2's training phrases together
    (configs/sentiment.yaml, RUNS/default), (2) that model continued with its head on SST-2's phrases
    (configs/sst2_transfer.yaml, 3,000 steps, RUNS/default-sst), (3) their weights averaged 1/3 : 2/3
    (`nlp-rnn average --model` with the continuation named twice, RUNS/default-soup; the share chosen on SST-2
    dev and held-out reviews, docs/results.md). Parts already trained under RUNS are read back (delete a folder
    to train it again); the soup is evaluated on IMDb test and SST-2 test, as shipped (fp16) with --ship."""
    entry = log["default"] = {}
    base, cont, soup = runs / "default", runs / "default-sst", runs / "default-soup"
    if (base / "best").is_dir():
        print(f"default: {base} read back (trained earlier)", flush=True)
        entry["base"] = {"read_back": str(base)}
    else:
        table = mixed_table(runs, data)
        cmd = train("classifier", "configs/sentiment.yaml", base) + ["--init-from", str(tuned)]
        cmd += ["--train", str(table), "--quiet"]  # the table under --runs
        run(cmd + (["--max-minutes", str(minutes)] if minutes else []), entry, "base")
    entry["base"]["best"] = best_of(base)
    if (cont / "best").is_dir():
        print(f"default: {cont} read back (trained earlier)", flush=True)
        entry["continued"] = {"read_back": str(cont)}
    else:
        cmd = train("classifier", "configs/sst2_transfer.yaml", cont) + [
            "--init-from",
            str(base),
            "--init-head",
        ]
        cmd += ["--set", "train.max_minutes=0", "--max-steps", "3000", "--set", "train.validate_every=250"]
        run(cmd + ["--quiet"], entry, "continued")
    entry["continued"]["best"] = best_of(cont)
    cmd = [*NLP_RNN, "average", "--model", str(base), "--model", str(cont), "--model", str(cont)]
    run(cmd + ["--output", str(soup)], entry, "average")
    model = soup
    if ship is not None:
        sys.path.insert(0, str(ROOT))
        from nlp_rnn import bundle as bundles
        from nlp_rnn.tasks.base import load

        bundles.save(ship, load(soup), half=True)
        model = ship
        entry["shipped"] = {"path": str(ship), "megabytes": round(folder_size(ship) / 1e6, 1)}
    entry["imdb_test"] = evaluate(model, data.imdb / "test.csv", "text", runs / "default_imdb.json")
    entry["sst2_test"] = evaluate(model, data.sst2, "sentence", runs / "default_sst2.json")
    print(json.dumps(entry, indent=2), flush=True)


def mixed_table(runs: Path, data: Data) -> Path:
    """IMDb's training reviews and SST-2's training phrases as one TSV under RUNS (read without quoting: one row a
    line, tabs only between fields)."""
    import csv

    table = runs / "sentiment-train.tsv"
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
    return table


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
        cmd = train("classifier", str(path), folder) + ["--quiet"]
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
