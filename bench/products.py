"""One matrix product at decoding shapes in each form the CPU offers, timed side by side in one process:
fp32, bf16, int8 as `--precision int8` runs it (fbgemm's `quantized::linear_dynamic`: weights per output row,
the activations of a whole batch sharing one scale) and int8 with one activation scale per row (`torch._int_mm`
and a rescale), with each form's largest error against fp32 and whether a row's result depends on its batch.

    python bench/products.py [--shapes 1x512x1536,64x1024x512,256x512x1536,256x512x4000,320x512x4000]
                             [--rounds 7] [--calls 50] [--threads 0] [--json bench/results/products.json]

A shape RxKxN is R rows (sentences x beam) times a (K -> N) layer: the shipped de->en model's decoder cell
(512 -> 3 x 512), combination (1,024 -> 512) and output layer over a shortlist union (512 -> ~4,000). The
forms alternate, `--rounds` times, and the median microseconds per call are printed. The question it answers:
what a batch-independent int8 (per-row scales: a sentence translated alone equals it inside any batch, as in
fp32) would cost against the int8 that ships.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="1x512x1536,64x1024x512,256x512x1536,256x512x4000,320x512x4000")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50, help="calls timed per round and form")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "products.json"))
    args = parser.parse_args()

    import torch
    from common import cpu_name

    from nlp_rnn.precision import cpu_kind

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {"cpu": cpu_name(), "kind": cpu_kind(), "threads": torch.get_num_threads(), "shapes": []}
    for shape in args.shapes.split(","):
        forms = measure(*(int(v) for v in shape.split("x")), args.rounds, args.calls)
        results["shapes"].append({"shape": shape, "forms": forms})
        print(shape, json.dumps(forms), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def measure(rows: int, k: int, n: int, rounds: int, calls: int) -> dict:
    """Each form of a (rows, k) x (k -> n) product: median µs a call, largest error against fp32, and (int8)
    whether the first row computed alone equals it computed inside the batch."""
    import torch

    from nlp_rnn.nn.int8 import Int8Linear, product

    x, w = torch.randn(rows, k), torch.randn(n, k) / k**0.5
    exact = x @ w.t()
    packed = Int8Linear(w, None).packed
    scale_w = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    w_int8 = (w / scale_w[:, None]).round().clamp(-127, 127).to(torch.int8).t().contiguous()
    x16, w16 = x.bfloat16(), w.bfloat16()

    def per_row(x: torch.Tensor) -> torch.Tensor:
        scale_x = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
        x_int8 = (x / scale_x).round_().clamp_(-127, 127).to(torch.int8)
        return torch._int_mm(x_int8, w_int8).float().mul_(scale_x).mul_(scale_w)

    forms = {
        "fp32": lambda x: x @ w.t(),
        "bf16": lambda x: (x @ w16.t()).float(),  # given x in bf16 (a bf16 model's activations are)
        "int8 (fbgemm, one scale a batch)": lambda x: product(x, packed),
        "int8 (_int_mm, one scale a row)": per_row,
    }
    inputs = {"bf16": x16}
    times: dict[str, list[float]] = {name: [] for name in forms}
    for name, form in forms.items():  # warm-up
        for _ in range(3):
            form(inputs.get(name, x))
    for _ in range(rounds):
        for name, form in forms.items():
            given = inputs.get(name, x)
            started = time.perf_counter()
            for _ in range(calls):
                form(given)
            times[name].append((time.perf_counter() - started) / calls * 1e6)
    out = {}
    for name, form in forms.items():
        given = inputs.get(name, x)
        out[name] = {
            "us": round(statistics.median(times[name]), 1),
            "max_error": round((form(given).float() - exact).abs().max().item(), 4),
        }
        if name.startswith("int8"):
            out[name]["row_alone_equals_in_batch"] = bool(torch.equal(form(x[:1])[0], form(x)[0]))
    return out


if __name__ == "__main__":
    main()
