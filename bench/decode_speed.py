"""Decoding speed and BLEU on the 1,000 sentences of test_2016_flickr (de->en), greedy and beam 5.

    python bench/decode_speed.py --model checkpoints/multi30k-de-en [--repeats 3] [--batch-size 128]
    python bench/decode_speed.py --precision int8                      # int8 products (fbgemm)
    nlp-rnn export checkpoints/multi30k-de-en --format onnx --output exported/de-en
    python bench/decode_speed.py --engine onnxruntime --model exported/de-en --precision fp32

"generation" times `Translator.translate` over all sentences (tokenising, search, detokenising)
after the model is loaded; "whole command" times `nlp-rnn translate --input F --output F` as a
user runs it, start-up and model loading included. Medians over --repeats runs.
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
    parser.add_argument("--batch-size", type=int, default=0, help="0: 256 greedy, 64 beam")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--engine", default="torch", help="torch, or onnxruntime with --model an exported folder"
    )
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from nlp_rnn.deploy.onnx import load_for
    from nlp_rnn.tasks.metrics import bleu
    from nlp_rnn.tasks.translation import Translator

    src_file, ref_file = Path(args.data) / "test_2016_flickr.de", Path(args.data) / "test_2016_flickr.en"
    sources = src_file.read_text(encoding="utf-8").splitlines()
    refs = ref_file.read_text(encoding="utf-8").splitlines()
    translator = Translator(load_for(args.engine, Path(args.model), args.device), args.precision)
    results = {
        "model": args.model,
        "sentences": len(sources),
        "precision": translator.precision,
        "engine": args.engine,
    }
    for beam in (int(b) for b in args.beams.split(",")):
        opts = translator.options(beam_size=beam)
        batch_size = args.batch_size or (256 if beam == 1 else 64)
        times, texts = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            outputs = translator.translate(sources, opts, batch_size)
            times.append(time.perf_counter() - started)
            texts = [o[0].text if o else "" for o in outputs]
        whole = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
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
                        "--device",
                        args.device,
                        "--engine",
                        args.engine,
                    ],
                    check=True,
                    capture_output=True,
                )
                whole.append(time.perf_counter() - started)
        gen, cmd = statistics.median(times), statistics.median(whole)
        results[f"beam{beam}"] = {
            "batch_size": batch_size,
            "generation_sentences_per_s": round(len(sources) / gen, 1),
            "whole_command_sentences_per_s": round(len(sources) / cmd, 1),
            "generation_s_runs": [round(t, 3) for t in times],
            "whole_command_s_runs": [round(t, 3) for t in whole],
            "bleu": round(bleu(texts, refs)[0].score, 2),
        }
        print(f"beam {beam}: {results[f'beam{beam}']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
