"""A wheel holds every floor of the package: built from a copy of the sources, installed into a fresh
environment (without dependencies: it borrows this one's torch and friends), and run from there."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import CHECKPOINTS, ROOT


@pytest.mark.slow
def test_a_wheel_installs_every_floor_and_translates(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("nlp_rnn", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name)
    run = lambda *args, **kw: subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)  # noqa: E731
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path / "dist"),
        str(source),
    )
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("nlp_rnn-*.whl"))

    env = tmp_path / "env"
    assert run(sys.executable, "-m", "venv", "--without-pip", str(env)).returncode == 0
    python = env / "bin" / "python"
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(site) / "borrowed.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )  # this environment's dependencies
    installed = run(
        sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)
    )
    assert installed.returncode == 0, installed.stderr

    where = run(str(python), "-c", "import nlp_rnn; print(nlp_rnn.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(site), where.stdout + where.stderr  # the wheel's copy, not this checkout
    floors = run(
        str(python),
        "-c",
        "import importlib.resources as r; print(sorted(p.name for p in r.files('nlp_rnn').iterdir()"
        " if p.is_dir() and p.name != '__pycache__'))",
        cwd=tmp_path,
    )
    assert floors.stdout.strip() == str(["cli", "demos", "deploy", "nn", "tasks"]), floors.stderr
    helped = run(str(env / "bin" / "nlp-rnn"), "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "translate" in helped.stdout, helped.stderr
    translated = run(
        str(env / "bin" / "nlp-rnn"),
        "translate",
        "--model",
        str(CHECKPOINTS / "multi30k-de-en"),
        "--precision",
        "fp32",
        "Ein Hund rennt durch den Schnee.",
        cwd=tmp_path,
    )
    assert translated.returncode == 0 and translated.stdout.strip() == "A dog runs through the snow.", (
        translated.stderr
    )
