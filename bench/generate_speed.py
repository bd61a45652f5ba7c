"""Generation speed of a language model (default: the shipped character model): one sample and 32 samples
together, the in-place kernel (`nn.cell_kernel`) against the step-by-step sampler, per precision.

    python bench/generate_speed.py [--model checkpoints/shakespeare-char] [--precisions fp32,bf16,int8]
                                   [--tokens 500] [--threads 0] [--repeats 3]

Prints characters/s (medians of --repeats runs, after one warm-up), the multiply-adds per token counted
from the model's shapes, and the fraction of the roofline: the product rate this machine sustains in a
large matrix product at that precision and thread count (`common.product_rate`) divided by those
multiply-adds. One sequence's step is a matrix-vector product and bound by memory, not by that rate.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "shakespeare-char"))
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch
    from common import cpu_name, fraction, product_rate

    from nlp_rnn.tasks.base import load
    from nlp_rnn.tasks.language_model import Generator

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"model": args.model, "cpu": cpu_name(), "threads": torch.get_num_threads(), "runs": []}
    for precision in args.precisions.split(","):
        generator = Generator(load(args.model), precision)
        rate = product_rate(generator.precision)
        model = generator.bundle.model
        macs = sum(p.numel() for n, p in model.rnn.named_parameters() if "weight" in n)
        macs += model.output.weight.numel()
        for fast in (False, True):
            generator.fast = fast
            for samples in (1, 32):
                generator.generate(["ROMEO:"], num_samples=samples, max_tokens=20, seed=0)
                speeds = []
                for repeat in range(args.repeats):
                    started = time.perf_counter()
                    out = generator.generate(
                        ["ROMEO:"], num_samples=samples, max_tokens=args.tokens, seed=repeat
                    )
                    seconds = time.perf_counter() - started
                    speeds.append(sum(len(s.tokens) for s in out[0]) / seconds)
                speed = statistics.median(speeds)
                row = {
                    "precision": generator.precision,
                    "sampler": "in-place kernel" if fast and generator.kernel() else "step by step",
                    "samples": samples,
                    "tokens_per_s": round(speed, 1),
                    "macs_per_token_m": round(macs / 1e6, 2),
                    "product_rate_gmacs": round(rate / 1e9, 1),
                    "roofline_fraction": fraction(speed * macs / rate),
                }
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
