"""Decoding speed and BLEU on the 1,000 sentences of test_2016_flickr (de->en), greedy and beam 5.

    python bench/decode_speed.py --model checkpoints/multi30k-de-en [--repeats 3] [--batch-size 128]
    python bench/decode_speed.py --precision int8                      # int8 products (fbgemm)
    nlp-rnn export checkpoints/multi30k-de-en --format onnx --output exported/de-en
    python bench/decode_speed.py --engine onnxruntime --model exported/de-en --precision fp32

`--shortlist on|off|auto` decodes over the bundle's vocabulary shortlist (auto: when it has one).
Each figure comes with the multiply-adds a sentence needs (counted from the model's shapes, over the
output columns actually computed) and the fraction of the roofline: the product rate this machine
sustains in a large matrix product at this precision and thread count, divided by those multiply-adds.

"generation" times `Translator.translate` over all sentences (tokenising, search, detokenising)
after the model is loaded; "whole command" times `nlp-rnn translate --input F --output F` as a
user runs it, start-up and model loading included. Medians over --repeats runs. `--warmup N` first translates
the corpus N times untimed (per beam): the first pass is the slowest (memory the process does not hold yet; in bf16,
oneDNN compiling a kernel for every batch size that finished sentences leave), so the median of a few runs that
include it reads between a cold start and what a long-running process (the server, a large file) sees.

`--profile` also traces one batch per beam with `torch.profiler` after the timed runs and prints its operators by
host time, with the count of operators, of kernel launches (on a GPU) and host against device milliseconds: on a GPU
this model's decoding is bound by launches (docs/results.md, "On one NVIDIA H200 GPU").
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "multi30k"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "multi30k-de-en"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=0, help="untimed passes before the timed ones (per beam)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="0: the translator's (256)",
    )
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--engine", default="torch", help="torch, or onnxruntime with --model an exported folder"
    )
    parser.add_argument("--beams", default="1,5")
    parser.add_argument(
        "--shortlist", default="auto", help="auto, on, off (the bundle's vocabulary shortlist)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--no-command", action="store_true", help="time generation only (not the whole command)"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--texts",
        default=None,
        help="also write each beam's translations to TEXTS/beamN.txt (to compare runs)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also trace one batch per beam (torch.profiler) and print it"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import torch
    from common import cpu_name, fraction, product_rate

    from nlp_rnn.deploy.onnx import load_for
    from nlp_rnn.tasks.metrics import bleu
    from nlp_rnn.tasks.translation import Translator

    src_file, ref_file = Path(args.data) / "test_2016_flickr.de", Path(args.data) / "test_2016_flickr.en"
    sources = src_file.read_text(encoding="utf-8").splitlines()
    refs = ref_file.read_text(encoding="utf-8").splitlines()
    if args.threads:
        torch.set_num_threads(args.threads)
    translator = Translator(
        load_for(args.engine, Path(args.model), args.device), args.precision, args.shortlist
    )
    params = getattr(translator.model, "parameters", None)  # an ONNX Runtime session has none: CPU
    device = next(params()).device if params else torch.device("cpu")
    rate = product_rate(translator.precision, device=str(device))
    results = {
        "model": args.model,
        "cpu": cpu_name(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "threads": torch.get_num_threads(),
        "warmup_passes": args.warmup,
        "sentences": len(sources),
        "precision": translator.precision,
        "engine": args.engine,
        "shortlist": translator.shortlist is not None,
        "product_rate_gmacs": round(rate / 1e9, 1),
    }
    for beam in (int(b) for b in args.beams.split(",")):
        opts = translator.options(beam_size=beam)
        batch_size = args.batch_size or translator.batch_size(beam)
        times, texts = [], []
        for _ in range(args.warmup):
            translator.translate(sources, opts, batch_size)
        for _ in range(args.repeats):
            started = time.perf_counter()
            outputs = translator.translate(sources, opts, batch_size)
            times.append(time.perf_counter() - started)
            texts = [o[0].text if o else "" for o in outputs]
        macs = (
            None if args.engine != "torch" else decoding_macs(translator, sources, outputs, beam, batch_size)
        )
        whole = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(0 if args.no_command else args.repeats):
                started = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "nlp_rnn",
                        "translate",
                        "--model",
                        args.model,
                        "--input",
                        str(src_file),
                        "--output",
                        f"{tmp}/out.en",
                        "--beam-size",
                        str(beam),
                        "--batch-size",
                        str(batch_size),
                        "--precision",
                        args.precision,
                        "--shortlist",
                        args.shortlist,
                        "--device",
                        args.device,
                        "--engine",
                        args.engine,
                    ],
                    check=True,
                    capture_output=True,
                )
                whole.append(time.perf_counter() - started)
        gen, cmd = statistics.median(times), statistics.median(whole) if whole else None
        roofline = rate / macs if macs else None
        results[f"beam{beam}"] = {
            "batch_size": batch_size,
            "generation_sentences_per_s": round(len(sources) / gen, 1),
            "whole_command_sentences_per_s": None
            if cmd is None
            else round(len(sources) / cmd, 1),  # --no-command
            "macs_per_sentence_m": None if macs is None else round(macs / 1e6, 2),
            "roofline_sentences_per_s": None if roofline is None else round(roofline, 1),
            "roofline_fraction": None if roofline is None else fraction(len(sources) / gen / roofline),
            "whole_command_roofline_fraction": None
            if roofline is None or cmd is None
            else fraction(len(sources) / cmd / roofline),
            "generation_s_runs": [round(t, 3) for t in times],
            "whole_command_s_runs": [round(t, 3) for t in whole],
            "bleu": round(bleu(texts, refs)[0].score, 2),
        }
        if args.texts:
            Path(args.texts).mkdir(parents=True, exist_ok=True)
            (Path(args.texts) / f"beam{beam}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        if args.profile:
            results[f"beam{beam}"]["profile"] = profile_batch(
                translator, sources[:batch_size], opts, batch_size
            )
        print(f"beam {beam}: {results[f'beam{beam}']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def profile_batch(translator, sources: list[str], opts, batch_size: int) -> dict:
    """One batch traced by torch.profiler (`common.traced`)."""
    from common import traced

    run = lambda: translator.translate(sources, opts, batch_size)  # noqa: E731
    return {"sentences": len(sources), **traced(run, translator.device)}


def decoding_macs(translator, sources: list[str], outputs: list, beam: int, batch_size: int) -> float:
    """Multiply-adds per sentence that this decoding needs, counted from the model's shapes: the encoder
    and the attention keys per source piece; per decoded step and hypothesis the decoder cell, the
    attention (query, scores and context over the source), the combination and the output layer — over
    the columns actually computed (the call's shortlist union, or the whole vocabulary). Beam search
    counts every live hypothesis (beam × the best hypothesis' length: an upper bound for finished ones)."""
    from common import seq2seq_macs

    from nlp_rnn.data import ordered_batches

    model = translator.bundle.model  # the shapes (an int8 copy keeps them in packed kernels)
    macs = seq2seq_macs(model)
    src_ids = translator.encode(sources)
    shortlist = translator.shortlist
    # a shortlist's columns: one union over the whole call's sentences (`Translator.translate`)
    columns = model.decoder.vocab_size if shortlist is None else shortlist.over(src_ids).fixed.numel()
    total = 0.0
    for index in ordered_batches([len(s) for s in src_ids], batch_size):
        for i in index:
            src_len = len(src_ids[i])
            steps = (len(outputs[i][0].pieces) + 1) * beam if outputs[i] else 0
            total += src_len * macs["source"]
            total += steps * (macs["step"] + macs["per_source"] * src_len + macs["per_column"] * columns)
    return total / len(sources)


if __name__ == "__main__":
    main()
