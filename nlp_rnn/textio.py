"""Input lines and output files of the prediction commands: one helper each, shared by every task."""

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Optional

from nlp_rnn.errors import NlpRnnError


def read_input_lines(path: Optional[Path]) -> Iterator[str]:
    """Lines of a file or of standard input, streamed; invalid UTF-8 is an error naming the line."""
    name = str(path) if path else "stdin"
    if path is not None and not path.is_file():
        raise NlpRnnError(f"{path}: file not found")
    handle = open(path, "rb") if path else sys.stdin.buffer
    try:
        for number, raw in enumerate(handle, 1):
            try:
                yield raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise NlpRnnError(f"{name}:{number}: not valid UTF-8") from None
    finally:
        if path:
            handle.close()


def texts_or_input(texts: Optional[Sequence[str]], path: Optional[Path]) -> Iterator[str]:
    """The texts given as arguments, else the lines of `path` or of standard input."""
    return iter(texts) if texts else read_input_lines(path)


def count_lines(path: Optional[Path]) -> Optional[int]:
    if path is None or not path.is_file():
        return None
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


@contextlib.contextmanager
def output_file(path: Optional[Path], newline: Optional[str] = None) -> Iterator[IO[str]]:
    """The file at `path` (UTF-8), or standard output when `path` is None; closed afterwards."""
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline=newline) as handle:
        yield handle


def check_format(fmt: str, allowed: Sequence[str] = ("text", "jsonl")) -> str:
    if fmt not in allowed:
        raise NlpRnnError(f"--format must be {' or '.join(allowed)}, got {fmt!r}")
    return fmt


def check_at_least(minimum: int, **values: Optional[int]) -> None:
    """Refuses any given option below `minimum`; names are the options' (`n_best` -> --n-best)."""
    for name, value in values.items():
        if value is not None and value < minimum:
            raise NlpRnnError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def progress(total: Optional[int], shown: bool, unit: str = "line") -> Iterator:
    """A progress bar on standard error when `shown` (e.g. when the results go to a file), else a silent one."""
    if not shown:
        yield _NoBar()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, file=sys.stderr, mininterval=1.0)
    try:
        yield bar
    finally:
        bar.close()
