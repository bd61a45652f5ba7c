"""`nlp-rnn train TASK`: one command per task that declares a `TrainCommand`, made of the task's own
options and the options every training shares (config, `--set` over it, output folder, tokenizer, budget, seed,
resume, progress bar, device), which are declared here once."""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from nlp_rnn import options
from nlp_rnn.bundle import META
from nlp_rnn.config import load_config, with_settings
from nlp_rnn.tasks import base as tasks

KW = inspect.Parameter.KEYWORD_ONLY


def _shared(task: tasks.Task) -> list[inspect.Parameter]:
    """The options of every `train` command, after the task's own."""
    shared = [
        (
            "tokenizer",
            Optional[Path],
            typer.Option(
                None, "--tokenizer", help="Use this trained tokenizer folder instead of training one."
            ),
        ),
        (
            "max_steps",
            Optional[int],
            typer.Option(None, "--max-steps", help="Stop (validate and save) after this many steps in all."),
        ),
        (
            "max_minutes",
            Optional[float],
            typer.Option(
                None, "--max-minutes", help="Stop (validate and save) after this much training time."
            ),
        ),
        ("seed", Optional[int], typer.Option(None, "--seed", help="Random seed (default: the config's).")),
        (
            "settings",
            Optional[list[str]],
            typer.Option(
                None,
                "--set",
                help="SECTION.KEY=VALUE over the config file, e.g. --set train.lr=0.002 --set model.dropout=0.3 "
                "(repeatable; VALUE read as YAML; the named options above win over it).",
            ),
        ),
        (
            "resume",
            bool,
            typer.Option(False, "--resume", help="Continue from OUTPUT/last/ exactly where it stopped."),
        ),
        (
            "auto_resume",
            bool,
            typer.Option(
                False,
                "--auto-resume",
                help="Resume if OUTPUT/last/ exists, else start (for jobs restarted by a scheduler or torchrun).",
            ),
        ),
        ("quiet", bool, typer.Option(False, "--quiet", help="No progress bar.")),
        (
            "tensorboard",
            Optional[bool],
            typer.Option(
                None,
                "--tensorboard/--no-tensorboard",
                help="TensorBoard event files in OUTPUT/tensorboard/ (default: on when installed; train.tensorboard).",
            ),
        ),
        ("device", str, options.DEVICE),
    ]
    if not task.needs_tokenizer:
        shared = shared[1:]
    return [inspect.Parameter(name, KW, default=default, annotation=kind) for name, kind, default in shared]


def _config_and_output(spec: tasks.TrainCommand) -> list[inspect.Parameter]:
    hint = (
        f"YAML config (see {spec.example_config})"
        + ("" if spec.config_required else "; default: built-in")
        + "."
    )
    config = typer.Option(... if spec.config_required else None, "--config", help=hint)
    output = typer.Option(..., "--output", help="Training folder: best/, last/, metrics.jsonl.")
    return [
        inspect.Parameter(
            "config", KW, default=config, annotation=Path if spec.config_required else Optional[Path]
        ),
        inspect.Parameter("output", KW, default=output, annotation=Path),
    ]


def train_command(task: tasks.Task) -> Callable[..., None]:
    """The typer command `nlp-rnn train NAME` of a task."""
    spec = task.train_command
    own = list(inspect.signature(spec.options).parameters.values())
    shared = _shared(task)

    def command(**values) -> None:
        cfg_path, output = values.pop("config"), values.pop("output")
        common = {p.name: values.pop(p.name) for p in shared}
        cfg = task.config_cls() if cfg_path is None else load_config(cfg_path, task.config_cls)
        cfg = with_settings(cfg, common.pop("settings") or [])
        for section, fields in spec.options(**values).items():
            cfg = tasks.with_overrides(cfg, section, **fields)
        run(task, cfg, output, **common)

    command.__signature__ = inspect.Signature(
        [*_config_and_output(spec), *(p.replace(kind=KW) for p in own), *shared]
    )
    command.__doc__ = spec.options.__doc__
    command.__name__ = f"train_{spec.name}"
    return command


def run(
    task: tasks.Task,
    cfg,
    output: Path,
    resume: bool,
    quiet: bool,
    device: str,
    tokenizer: Optional[Path] = None,
    auto_resume: bool = False,
    **budget,
) -> None:
    """Trains with the common options and prints the one-line summary (process 0 only under torchrun)."""
    cfg = tasks.with_overrides(cfg, "train", **budget)
    resume = resume or (auto_resume and (Path(output) / "last" / META).is_file())
    summary = tasks.train(
        task.name, cfg, output, resume=resume, tokenizer_dir=tokenizer, progress_bar=not quiet, device=device
    )
    if summary.get("rank", 0) != 0:
        return
    best, key = summary["best"] or {}, summary["score_key"]
    typer.echo(
        f"stopped ({summary['stopped']}) at step {summary['step']}; best {key} {best.get(key, float('nan')):.4g} "
        f"at step {best.get('step')}; model: {output / 'best'}"
    )
