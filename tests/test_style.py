"""The code keeps its format and its lint: ruff (pinned in the `test` extra), configured in pyproject.toml."""

import shutil
import subprocess
import sys

from helpers import ROOT

PATHS = ["nlp_rnn", "tests", "bench"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    command = [
        shutil.which("ruff") or sys.executable,
        *([] if shutil.which("ruff") else ["-m", "ruff"]),
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_code_is_formatted() -> None:
    done = ruff("format", "--check", *PATHS)
    assert done.returncode == 0, "run `ruff format` on:\n" + done.stdout + done.stderr


def test_the_code_passes_the_linter() -> None:
    done = ruff("check", "--output-format", "concise", *PATHS)
    assert done.returncode == 0, done.stdout + done.stderr
