"""Train on ../shared/data/multi30k (de->en) for a time budget and report speed, memory and BLEU.

    python bench/train_multi30k.py --config configs/multi30k_de_en.yaml --minutes 30
    python bench/train_multi30k.py --config configs/reference_joeynmt.yaml --minutes 3   # speed only
    # with torchrun:
    python bench/train_multi30k.py --config configs/reference_joeynmt.yaml --minutes 3 --skip-test --processes 2
    python bench/train_multi30k.py --minutes 10 --device cuda                                # on a GPU

Reports: training target tokens/s (median over the logged windows, first two skipped as warm-up) and its
fraction of the roofline (the product rate this machine sustains at the run's precision, per process, over
three times a target token's forward multiply-adds: forward, and the backward's two products),
peak RSS of the training process, the validation BLEU curve against wall time, and test BLEU/chrF
on test_2016_flickr, greedy and beam 5 (sacrebleu, detokenised, default signature).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import logged_rates

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "multi30k"


def run(cmd: list[str], env: dict | None = None) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "multi30k_de_en.yaml"))
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument(
        "--output", default=None, help="training folder (default: bench/results/<config name>)"
    )
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--skip-test", action="store_true", help="speed only: no test-set decoding")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="train with torchrun on this many processes (GPUs, or CPU processes with --device cpu)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per process (0: torch's default)"
    )
    args = parser.parse_args()
    out = Path(args.output or ROOT / "bench" / "results" / Path(args.config).stem)
    if out.exists():
        sys.exit(f"{out} exists: remove it or pick another --output")
    data = Path(args.data)
    launcher = [sys.executable, "-m", "nlp_rnn"]
    if args.processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(args.processes),
            "-m",
            "nlp_rnn",
        ]
    cmd = [
        *launcher,
        "train",
        "translation",
        "--config",
        args.config,
        "--output",
        str(out),
        "--quiet",
        "--device",
        args.device,
        "--train-src",
        str(data / "train.de"),
        "--train-tgt",
        str(data / "train.en"),
        "--valid-src",
        str(data / "val.de"),
        "--valid-tgt",
        str(data / "val.en"),
        "--max-minutes",
        str(args.minutes),
    ]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    env = None
    if args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    started = time.monotonic()
    run(cmd, env)
    wall = time.monotonic() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speed = logged_rates(lines)
    curve = [(r["elapsed_s"], r["step"], r["val_bleu"]) for r in lines if "val_bleu" in r]
    result = {
        "config": args.config,
        "device": args.device,
        "processes": args.processes,
        "train_wall_s": round(wall, 1),
        "train_tokens_per_s_median": statistics.median(speed) if speed else None,
        "train_tokens_per_s_windows": len(speed),
        "peak_rss_mb": round(peak_rss_mb, 1),
        **roofline(
            out, data, statistics.median(speed) if speed else None, args.processes, args.device, args.threads
        ),
        "val_curve": [{"elapsed_s": e, "step": s, "val_bleu": round(b, 2)} for e, s, b in curve],
    }
    if not args.skip_test:
        for beam in (1, 5):
            report = out / f"test_beam{beam}.json"
            run(
                [
                    sys.executable,
                    "-m",
                    "nlp_rnn",
                    "evaluate",
                    "--model",
                    str(out),
                    "--device",
                    args.device,
                    "--src",
                    str(data / "test_2016_flickr.de"),
                    "--ref",
                    str(data / "test_2016_flickr.en"),
                    "--beam-size",
                    str(beam),
                    "--report",
                    str(report),
                ]
            )
            test = json.loads(report.read_text())
            result[f"test_bleu_beam{beam}"] = test["sets"][0]["bleu"]
            result[f"test_chrf_beam{beam}"] = test["sets"][0]["chrf"]
            result["bleu_signature"] = test["bleu_signature"]
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def roofline(
    out: Path, data: Path, speed: float | None, processes: int, device_name: str, threads: int = 0
) -> dict:
    """The training speed's roofline from the trained model's shapes and the training text's source pieces
    per target piece: forward multiply-adds per target token (the encoder per source piece, the decoder per
    step, the attention per step and source piece, the whole output layer) times 3."""
    sys.path.insert(0, str(ROOT))
    import torch
    from common import fraction, product_rate, seq2seq_macs

    from nlp_rnn import devices
    from nlp_rnn.precision import resolve_precision
    from nlp_rnn.tasks.base import load

    device = devices.resolve(device_name)
    bundle = load(out)
    src = bundle.tokenizer.encode_src((data / "train.de").read_text(encoding="utf-8").splitlines()[:5000])
    tgt = bundle.tokenizer.encode_tgt((data / "train.en").read_text(encoding="utf-8").splitlines()[:5000])
    src_len = sum(len(s) + 1 for s in src) / len(src)  # with the EOS each side carries
    tgt_len = sum(len(t) + 1 for t in tgt) / len(tgt)
    macs = seq2seq_macs(bundle.model)
    forward = src_len / tgt_len * macs["source"] + macs["step"] + macs["per_source"] * src_len
    forward += macs["per_column"] * bundle.model.decoder.vocab_size
    precision = resolve_precision(bundle.config.train.precision, device)
    if device.type == "cpu":  # the threads each process trained with (torchrun: its share of the cores)
        torch.set_num_threads(threads or max(1, torch.get_num_threads() // processes))
    rate = product_rate(precision, device=str(device)) * processes
    limit = rate / (3 * forward)
    return {
        "precision": precision,
        "product_rate_gmacs": round(rate / 1e9, 1),
        "training_macs_per_target_token_m": round(3 * forward / 1e6, 2),
        "roofline_tokens_per_s": round(limit),
        "roofline_fraction": None if speed is None else fraction(speed / limit),
    }


if __name__ == "__main__":
    main()
