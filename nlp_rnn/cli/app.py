"""The `nlp-rnn` command (typer); the only place that configures logging and prints.

The app is built from the task registry: each task's `train NAME` command and prediction commands
(`translate`, `classify`, ...), then the shared commands and the demos. Every user error leaves as
one line `error: ...` on stderr with exit status 2; so does running out of memory (CPU or GPU), with what to lower.
"""

import logging
import os
import shlex
import sys
from typing import Optional

import typer

from nlp_rnn import devices
from nlp_rnn import train as train_loop
from nlp_rnn.cli import commands
from nlp_rnn.cli.train import train_command
from nlp_rnn.demos import adding
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks import base as tasks

log = logging.getLogger("nlp_rnn")


def build_app() -> typer.Typer:
    """The command tree for the tasks registered now (a task registered later appears in the next build)."""
    app = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        help="Recurrent networks for translation, classification, language modelling and forecasting.",
    )
    train_app = typer.Typer(no_args_is_help=True, help="Train a model: one command per task.")
    tokenizer_app = typer.Typer(no_args_is_help=True, help="Train a sentencepiece tokenizer on its own.")
    demo_app = typer.Typer(
        no_args_is_help=True, help="Small experiments that show how recurrent networks behave."
    )
    for task in tasks.all_tasks():
        for command in task.commands():
            app.command()(command)
        if task.train_command is not None:
            train_app.command(task.train_command.name)(train_command(task))
    for command in (
        commands.evaluate,
        commands.export,
        commands.serve,
        commands.info,
        commands.plot,
        commands.push,
        commands.average,
    ):
        app.command()(command)
    tokenizer_app.command("train")(commands.tokenizer_train)
    demo_app.command("adding")(adding.command)
    app.add_typer(train_app, name="train")
    app.add_typer(tokenizer_app, name="tokenizer")
    app.add_typer(demo_app, name="demo")
    return app


def main(argv: Optional[list[str]] = None) -> int:
    rank = int(
        os.environ.get("RANK", "0")
    )  # under torchrun only process 0 reports progress; errors name their process
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(message)s" if rank == 0 else f"[process {rank}] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("datasets").setLevel(logging.WARNING)
    train_loop.COMMAND = shlex.join(["nlp-rnn", *(sys.argv[1:] if argv is None else argv)])  # for model cards
    try:
        build_app()(args=argv, standalone_mode=False, prog_name="nlp-rnn")
    except NlpRnnError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except (KeyboardInterrupt, BrokenPipeError) as err:
        return 130 if isinstance(err, KeyboardInterrupt) else 0
    except Exception as err:
        return _exit_status(err)
    return 0


def _exit_status(err: Exception) -> int:
    said = devices.out_of_memory(err)
    if said is not None:
        typer.echo(
            f"error: out of memory ({said}): use smaller batches (--batch-size of translate, classify, evaluate; "
            "train.batch_tokens in a training config) or a smaller model; a training run continues from its last "
            "checkpoint with --resume",
            err=True,
        )
        return 2
    # typer may vendor its own click, so its exceptions are recognised by class name.
    kinds = {cls.__name__ for cls in type(err).__mro__}
    if "ClickException" in kinds:  # usage errors: click's own one-line message
        err.show()
        return err.exit_code
    if "Exit" in kinds:
        return err.exit_code
    if "Abort" in kinds:
        typer.echo("interrupted", err=True)
        return 130
    if os.environ.get("NLP_RNN_DEBUG"):  # a bug of ours: still one line for users
        raise err
    typer.echo(
        f"error: internal error ({type(err).__name__}: {err}); rerun with NLP_RNN_DEBUG=1 and report it",
        err=True,
    )
    return 1


def entry() -> None:
    sys.exit(main())


app = build_app()
