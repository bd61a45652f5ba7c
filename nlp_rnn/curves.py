"""Learning curves of training runs (`nlp-rnn plot`): the training loss and a validation score of one or
more runs against steps or minutes of training, read from each run's `metrics.jsonl`, the best point of
each run marked. Needs matplotlib (`pip install 'nlp-rnn[plot]'`)."""

import json
from pathlib import Path
from typing import Optional

from nlp_rnn.errors import NlpRnnError

# The validation score drawn when none is asked for: the first of these a run logs (higher is better
# for the first three).
SCORES = ("val_bleu", "val_acc", "val_r2", "val_ppl_per_word", "val_ppl", "val_loss")
HIGHER = {"val_bleu", "val_acc", "val_r2", "val_chrf"}


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise NlpRnnError(f"{run}: no metrics.jsonl (not a training folder)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise NlpRnnError(f"{path}:{number}: not a JSON line") from None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def score_key(runs: dict[str, list[dict]], metric: Optional[str]) -> str:
    logged = {k for records in runs.values() for r in records for k in r}
    if metric:
        if metric not in logged:
            raise NlpRnnError(f"--metric {metric}: no run logs it (logged: {', '.join(sorted(logged))})")
        return metric
    for key in SCORES:
        if key in logged:
            return key
    raise NlpRnnError("no validation score in these runs' metrics.jsonl")


def plot(runs: list[Path], output: Path, x: str = "steps", metric: Optional[str] = None) -> str:
    """Writes the curves of `runs` to `output` (PNG, SVG or PDF by its suffix); returns the score drawn."""
    if x not in ("steps", "minutes"):
        raise NlpRnnError(f"--x must be steps or minutes, got {x!r}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NlpRnnError("plot needs matplotlib: pip install 'nlp-rnn[plot]'") from None
    data = {}
    for run in runs:
        name = Path(run).name if Path(run).name not in ("", ".") else str(run)
        while name in data:
            name += "'"
        data[name] = read_metrics(Path(run))
    key = score_key(data, metric)
    where = (lambda r: r["step"]) if x == "steps" else (lambda r: r.get("elapsed_s", 0.0) / 60)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (name, records) in enumerate(data.items()):
        color = f"C{k % 10}"
        train = [r for r in records if "train_loss" in r]
        left.plot([where(r) for r in train], [r["train_loss"] for r in train], color=color, lw=1, label=name)
        valid = [r for r in records if key in r]
        if not valid:
            continue
        right.plot(
            [where(r) for r in valid], [r[key] for r in valid], color=color, lw=1.2, marker=".", label=name
        )
        pick = max if key in HIGHER else min
        best = pick(valid, key=lambda r: r[key])
        right.scatter([where(best)], [best[key]], color=color, s=60, zorder=3, edgecolor="black")
        right.annotate(
            f"{best[key]:.4g}", (where(best), best[key]), textcoords="offset points", xytext=(4, 6)
        )
    label = "step" if x == "steps" else "minutes of training"
    left.set(xlabel=label, ylabel="training loss (per token or example)", title="training")
    right.set(xlabel=label, ylabel=key, title=f"validation ({key}; best marked)")
    if key in ("val_ppl", "val_ppl_per_word"):
        right.set_yscale("log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return key
