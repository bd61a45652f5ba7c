"""`nlp-rnn plot`: learning curves of several runs from their metrics.jsonl, one line for bad folders."""

import json
from pathlib import Path

from nlp_rnn.cli import main


def write_run(folder: Path, scale: float) -> None:
    folder.mkdir(parents=True)
    lines = []
    for step in range(10, 110, 10):
        lines.append({"step": step, "elapsed_s": step * 0.6, "train_loss": scale * 3 / step**0.3})
        if step % 30 == 0:
            lines.append(
                {
                    "step": step,
                    "elapsed_s": step * 0.6,
                    "val_loss": 1.0,
                    "val_acc": 0.5 + step / (400 * scale),
                }
            )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_plot_draws_two_runs_against_steps_and_minutes(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "a", 1.0)
    write_run(tmp_path / "b", 2.0)
    for x in ("steps", "minutes"):
        out = tmp_path / f"curves-{x}.png"
        assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(out), "--x", x]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "val_acc of 2 run(s)" in capsys.readouterr().out


def test_plot_refuses_what_it_cannot_draw_in_one_line(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "a", 1.0)
    assert main(["plot", str(tmp_path / "missing"), "--output", str(tmp_path / "x.png")]) == 2
    assert (
        main(["plot", str(tmp_path / "a"), "--output", str(tmp_path / "x.png"), "--metric", "val_bleu"]) == 2
    )
    (tmp_path / "a" / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2}\nnot json\n')
    assert main(["plot", str(tmp_path / "a"), "--output", str(tmp_path / "x.png")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert (
        len(errors) == 3
        and "no metrics.jsonl" in errors[0]
        and "--metric val_bleu: no run logs it" in errors[1]
    )
    assert "metrics.jsonl:2: not a JSON line" in errors[2]
