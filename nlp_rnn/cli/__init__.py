"""The `nlp-rnn` command: the typer app and its entry point."""

from nlp_rnn.cli.app import app, entry, main

__all__ = ["app", "entry", "main"]
