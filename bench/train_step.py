"""The training step alone, timed in process: target tokens/s of steps --skip..--steps of a translation config
on Multi30k de->en, in several rounds, with the roofline fraction of bench/train_multi30k.py.

    python bench/train_step.py [--config configs/multi30k_de_en.yaml] [--steps 50] [--skip 10] [--rounds 3]
                               [--precision auto|fp32|bf16] [--threads N] [--output bench/results/train_step.json]
                               [--device cpu|cuda] [--profile]

Only `Trainer._step` is timed (collate, forward, backward, clipping, the optimizer): no validation, no
logging, no data loading beyond the step's own collate. This is the measure for an A/B of a change to the step:
run it from each checkout (e.g. `git worktree add ../before HEAD~1`), alternating, and compare the medians;
`bench/train_multi30k.py` times whole runs, whose few logged windows do not resolve a 10 % change here.
Every round trains from the same seed, so the rounds time the same batches; the tokenizer is trained once.
`--profile` traces the first round's step --skip + 1 with torch.profiler (that step is left out of the timing) and
prints its operators by host time, with the count of operators and kernel launches and host against device
milliseconds (in the JSON too).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_name, fraction, traced  # noqa: E402
from train_multi30k import DATA, roofline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--config", default=str(root / "configs" / "multi30k_de_en.yaml"))
    parser.add_argument("--steps", type=int, default=50, help="steps a round trains")
    parser.add_argument("--skip", type=int, default=10, help="first steps left out (warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="", help="auto, fp32, bf16 (default: the config's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--output", default=str(root / "bench" / "results" / "train_step.json"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--profile", action="store_true", help="trace one step (torch.profiler) and print it")
    args = parser.parse_args()
    if not 0 <= args.skip < args.steps:
        sys.exit(f"--skip must be below --steps, got {args.skip} and {args.steps}")

    import torch

    from nlp_rnn import train as training
    from nlp_rnn.config import load_config
    from nlp_rnn.tasks import base as tasks

    if args.threads:
        torch.set_num_threads(args.threads)
    task = tasks.get("translation")
    data = Path(args.data)
    cfg = load_config(args.config, task.config_cls)
    cfg = tasks.with_overrides(
        cfg,
        "data",
        train_src=str(data / "train.de"),
        train_tgt=str(data / "train.en"),
        valid_src=str(data / "val.de"),
        valid_tgt=str(data / "val.en"),
    )
    train = {"max_steps": args.steps, "validate_every": 10**9, "log_every": 10**9, "max_minutes": 0}
    if args.precision:
        train["precision"] = args.precision
    cfg = tasks.with_overrides(cfg, "train", **train)

    timings: list[tuple[float, int]] = []
    step = training.Trainer._step

    profiled: dict = {}

    def timed(self, description):
        if args.profile and not profiled and len(timings) == args.skip:  # traced, so left out of the timing
            box: list = []
            profiled.update(traced(lambda: box.append(step(self, description)), self.device))
            return box[0]
        sync = torch.cuda.synchronize if self.device.type == "cuda" else lambda *a: None
        sync(self.device)
        started = time.perf_counter()
        result = step(self, description)
        sync(self.device)
        timings.append((time.perf_counter() - started, result[1]))
        return result

    training.Trainer._step = timed
    rates, first = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            timings.clear()
            out = Path(scratch) / f"round{r}"
            tasks.train("translation", cfg, out, tokenizer_dir=first, progress_bar=False, device=args.device)
            first = first or out / "last"  # the run's bundle, its tokenizer included
            kept = timings[args.skip :]
            rate = sum(n for _, n in kept) / sum(t for t, _ in kept)
            rates.append(rate)
            print(f"round {r + 1}: {rate:,.0f} target tokens/s over steps {args.skip + 1}-{len(timings)}")
        median = statistics.median(rates)
        result = {
            "cpu": cpu_name(),
            "config": args.config,
            "threads": torch.get_num_threads(),
            "steps": f"{args.skip + 1}-{args.steps}",
            "rounds_tokens_per_s": [round(x) for x in rates],
            "median_tokens_per_s": round(median),
            **roofline(first, data, median, 1, args.device, args.threads),
        }
        result["rounds_roofline_fraction"] = [fraction(x / result["roofline_tokens_per_s"]) for x in rates]
        shares = " / ".join(str(share) for share in result["rounds_roofline_fraction"])
        print(
            f"rounds' fractions of the roofline ({result['roofline_tokens_per_s']:,} target tokens/s): {shares}"
        )
        if profiled:
            result["profile"] = profiled
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
