"""Reproduce every figure in the README's results table, and print that table.

    python bench/run_all.py            # ~25 min: shipped models' scores, decoding (fp32/bf16 auto,
                                       # int8) and server speed, 3-minute training-speed runs
    python bench/run_all.py --full     # adds the 30-minute Multi30k training run and SST-2/SST-5 over 3 seeds (~2 h)

Without --full, the long-run rows are read from bench/results/ when an earlier --full run (or the
individual scripts) left them there, and are marked as such.
"""

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data"


def python(*args: str) -> None:
    print("$ python", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def evaluate(model: str, args: list[str], name: str) -> dict:
    report = RESULTS / f"{name}.json"
    python("-m", "nlp_rnn", "evaluate", "--model", model, *args, "--report", str(report))
    return json.loads(report.read_text())


def train_speed(config: str, name: str, minutes: float) -> dict:
    out = RESULTS / name
    if out.exists():
        shutil.rmtree(out)
    python(
        "bench/train_multi30k.py",
        "--config",
        config,
        "--minutes",
        str(minutes),
        "--skip-test",
        "--output",
        str(out),
    )
    return json.loads((out / "bench.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--speed-minutes", type=float, default=3.0)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    mt, sst2_model = str(ROOT / "checkpoints" / "multi30k-de-en"), str(ROOT / "checkpoints" / "sst2")
    test = [
        "--src",
        str(DATA / "multi30k" / "test_2016_flickr.de"),
        "--ref",
        str(DATA / "multi30k" / "test_2016_flickr.en"),
    ]
    rows = []

    for beam in (1, 5):
        for precision in ("fp32", "bf16"):
            r = evaluate(
                mt,
                test + ["--beam-size", str(beam), "--precision", precision],
                f"shipped_mt_beam{beam}_{precision}",
            )
            s = r["sets"][0]
            rows.append(
                (
                    f"shipped de→en, test_2016_flickr, {'greedy' if beam == 1 else 'beam 5'}, {precision}",
                    f"BLEU {s['bleu']:.2f} / chrF {s['chrf']:.2f}",
                )
            )
    signature = r["bleu_signature"]
    r = evaluate(sst2_model, ["--data", str(DATA / "sst" / "sst2" / "test.tsv")], "shipped_sst2")
    rows.append(("shipped SST-2 model, test accuracy", f"{100 * r['sets'][0]['accuracy']:.2f} %"))

    for precision in ("auto", "int8"):
        name = "decode_speed.json" if precision == "auto" else f"decode_speed_{precision}.json"
        python(
            "bench/decode_speed.py", "--model", mt, "--precision", precision, "--json", str(RESULTS / name)
        )
        dec = json.loads((RESULTS / name).read_text())
        for beam in (1, 5):
            d = dec[f"beam{beam}"]
            rows.append(
                (
                    f"decoding 1,000 test sentences, {'greedy' if beam == 1 else 'beam 5'} ({dec['precision']})",
                    f"{d['generation_sentences_per_s']:.0f} sent/s generation, "
                    f"{d['whole_command_sentences_per_s']:.0f} "
                    f"sent/s whole command, BLEU {d['bleu']:.2f}",
                )
            )
    python(
        "bench/serve_speed.py",
        "--model",
        mt,
        "--precision",
        "int8",
        "--json",
        str(RESULTS / "serve_int8.json"),
    )
    srv = json.loads((RESULTS / "serve_int8.json").read_text())
    rows.append(
        (
            "nlp-rnn serve (int8), one-sentence greedy request",
            f"p50 {srv['one_sentence_latency_ms']['p50']:.1f} ms",
        )
    )
    rows.append(
        (
            "nlp-rnn serve (int8), 32 clients × 8-sentence requests",
            f"{srv['clients_32']['sentences_per_s']:.0f} sent/s = "
            f"{100 * srv['clients_32']['of_batch_mode']:.1f} % of batch mode",
        )
    )

    for config, name, label in (
        ("configs/reference_joeynmt.yaml", "speed_reference_fp32", "reference config, fp32"),
        ("configs/multi30k_de_en.yaml", "speed_default_auto", "default config, precision auto"),
    ):
        b = train_speed(config, name, args.speed_minutes)
        rows.append(
            (
                f"training the reference architecture ({label}), {args.speed_minutes:g} min",
                f"{b['train_tokens_per_s_median']:.0f} target tokens/s (median), peak RSS {b['peak_rss_mb']:.0f} MB",
            )
        )

    if args.full:
        shutil.rmtree(RESULTS / "default_30min", ignore_errors=True)
        python(
            "bench/train_multi30k.py",
            "--config",
            "configs/multi30k_de_en.yaml",
            "--minutes",
            "30",
            "--output",
            str(RESULTS / "default_30min"),
        )
        python("bench/train_sst.py", "--seeds", "1,2,3")  # every setting, each with its config's budget
    long_note = "" if args.full else " (from bench/results, an earlier run)"
    full = RESULTS / "default_30min" / "bench.json"
    if full.is_file():
        b = json.loads(full.read_text())
        curve = ", ".join(f"{c['elapsed_s'] / 60:.0f} min: {c['val_bleu']:.1f}" for c in b["val_curve"])
        rows.append(
            (
                "30 min training, default config: test BLEU greedy / beam 5" + long_note,
                f"{b['test_bleu_beam1']:.2f} / {b['test_bleu_beam5']:.2f} (val BLEU curve {curve}); "
                f"{b['train_tokens_per_s_median']:.0f} tok/s, peak RSS {b['peak_rss_mb']:.0f} MB",
            )
        )
    sst = RESULTS / "sst.json"
    if sst.is_file():
        for name, s in json.loads(sst.read_text()).items():
            rows.append(
                (
                    f"{name} test accuracy over {len(s['runs'])} seeds{long_note}",
                    f"{s['test_accuracy_mean']:.2f} ± {s['test_accuracy_std']:.2f} % (min "
                    f"{s['test_accuracy_min']:.2f}, max {s['test_accuracy_max']:.2f})",
                )
            )

    print(f"\nMachine: {machine()}\nBLEU signature: {signature}\n")
    print("| measurement | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
