"""One step of a language model's in-place generation kernel (`nn.cell_kernel.CellKernel.step`), timed in
process, with torch's tanh against tanh computed through sigmoid (2 sigmoid(2x) - 1), per batch size.

    python bench/kernel_step.py [--model checkpoints/shakespeare-char] [--precisions fp32,int8]
                                [--batches 1,2,4,8,16,32] [--steps 300] [--rounds 7] [--threads 2]

The two forms alternate, `--rounds` times each, in one process (the same buffers, weights and inputs), so
the comparison does not depend on how fast this machine runs between processes; prints the median
microseconds per step of each and their ratio. `CellKernel.TANH_VIA_SIGMOID_MIN` is where generation
switches from one form to the other.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from time import perf_counter

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "shakespeare-char"))
    parser.add_argument("--precisions", default="fp32,int8", help="fp32 and/or int8 (the kernel's two kinds)")
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch
    from common import cpu_name

    from nlp_rnn.nn.cell_kernel import CellKernel
    from nlp_rnn.tasks.base import load

    torch.set_num_threads(args.threads)
    model = load(args.model).model.eval()
    layers, hidden = model.rnn.num_layers, model.rnn.hidden_size
    print(f"{cpu_name()}; {args.threads} threads; {args.model}", flush=True)
    threshold = CellKernel.TANH_VIA_SIGMOID_MIN
    with torch.no_grad():
        for precision in args.precisions.split(","):
            kernel = model.cell_kernel(int8=precision == "int8")
            if kernel is None:
                sys.exit(f"{args.model}: this model has no in-place kernel")
            for batch in (int(b) for b in args.batches.split(",")):
                times: dict[bool, list[float]] = {False: [], True: []}
                prev = torch.randint(0, kernel.table.size(0), (batch,))
                for _ in range(args.rounds):
                    for via in (False, True):
                        CellKernel.TANH_VIA_SIGMOID_MIN = 0 if via else 10**12
                        kernel.buffers(batch)
                        h, c = torch.zeros(layers, batch, hidden), torch.zeros(layers, batch, hidden)
                        for _ in range(20):
                            kernel.step(prev, h, c)
                        started = perf_counter()
                        for _ in range(args.steps):
                            kernel.step(prev, h, c)
                        times[via].append((perf_counter() - started) / args.steps * 1e6)
                tanh, sigmoid = statistics.median(times[False]), statistics.median(times[True])
                row = {
                    "precision": precision,
                    "batch": batch,
                    "tanh_us": round(tanh, 1),
                    "via_sigmoid_us": round(sigmoid, 1),
                    "speedup": round(tanh / sigmoid, 3),
                    "generation_uses": "via sigmoid" if batch * hidden >= threshold else "tanh",
                }
                print(json.dumps(row), flush=True)
    CellKernel.TANH_VIA_SIGMOID_MIN = threshold


if __name__ == "__main__":
    main()
