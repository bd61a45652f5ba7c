"""What every task's test-set evaluation shares: hypothesis files, the model's summary, plain-text tables.

The scoring itself belongs to each task (`Task.evaluate`); `nlp-rnn evaluate` dispatches to it.
"""

from pathlib import Path

from nlp_rnn.bundle import Bundle


def hyps_file(base: Path, name: str, several: bool) -> Path:
    """`base` for one test set; NAME.SET.EXT for several."""
    return base if not several else base.with_name(f"{base.stem}.{name}{base.suffix}")


def model_info(bundle: Bundle) -> dict:
    meta = bundle.meta
    keys = ("task", "src_lang", "tgt_lang", "labels", "parameters", "step", "library_version")
    return {"path": str(bundle.path), **{k: meta[k] for k in keys if k in meta}}


def table(headers: list[str], rows: list[list]) -> list[str]:
    """A left-aligned first column and right-aligned numbers (floats with two decimals)."""
    cells = [headers] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
