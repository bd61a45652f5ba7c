"""Self-contained model bundles: config, safetensors weights, sentencepiece model(s) and metadata.

Nothing pickled is ever loaded: weights are safetensors, the trainer state of `last/` bundles is
read with `torch.load(weights_only=True)`. Bundles are written to a temporary folder and renamed
into place, so a crash mid-save never leaves a half-written bundle where a good one was.
"""

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nlp_rnn import __version__
from nlp_rnn.config import from_dict, to_dict
from nlp_rnn.errors import BundleError, NlpRnnError
from nlp_rnn.tokenizer import Tokenizer

FORMAT = "nlp-rnn-bundle"
FORMAT_VERSION = 1
META, CONFIG, WEIGHTS, TRAINER = "meta.json", "config.json", "model.safetensors", "trainer.pt"


@dataclass
class Bundle:
    task: str
    config: Any  # the task's config dataclass
    model: nn.Module
    tokenizer: Optional[Tokenizer]  # None for tasks that read no text
    meta: dict
    path: Optional[Path] = None


def resolve(path: str | Path) -> Path:
    """A bundle folder, or a training output folder meaning its `best/` bundle."""
    path = Path(path)
    if (path / META).is_file():
        return path
    if (path / "best" / META).is_file():
        return path / "best"
    if not path.exists():
        raise BundleError(f"{path}: model folder not found")
    raise BundleError(f"{path}: not a model bundle (no {META}) nor a training folder with best/{META}")


def _state_without_aliases(model: nn.Module) -> dict[str, torch.Tensor]:
    """Tied parameters appear once (safetensors refuses shared storage)."""
    seen, state = set(), {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape)
        if key not in seen:
            seen.add(key)
            state[name] = tensor.detach().contiguous()
    return state


def _fsync_tree(folder: Path) -> None:
    for item in folder.iterdir():
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())


def save(
    folder: str | Path,
    bundle: Bundle,
    trainer_state: Optional[dict] = None,
    half: bool = False,
) -> Path:
    """Writes the bundle atomically (temporary folder + rename). `half` stores weights as fp16."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    state = _state_without_aliases(bundle.model)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
    meta = dict(bundle.meta, format=FORMAT, format_version=FORMAT_VERSION, task=bundle.task, library_version=__version__)
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if half:
        meta["weights_dtype"] = "float16"  # loaded back into the model's float32 parameters
    (tmp / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    (tmp / CONFIG).write_text(json.dumps(to_dict(bundle.config), indent=2), encoding="utf-8")
    if bundle.tokenizer is not None:
        bundle.tokenizer.save(tmp)
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER)
    _fsync_tree(tmp)
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing from the bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BundleError(f"{path}: corrupt (not valid JSON)") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: corrupt (expected a JSON object)")
    return data


def read_meta(path: str | Path) -> dict:
    path = resolve(path)
    meta = _read_json(path / META)
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path / META}: not an nlp-rnn bundle (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version} is newer than this nlp-rnn supports ({FORMAT_VERSION}); upgrade nlp-rnn"
        )
    from nlp_rnn import task as tasks

    try:
        tasks.get(meta.get("task"))
    except NlpRnnError:
        raise BundleError(f"{path / META}: unknown task {meta.get('task')!r} (known: {', '.join(tasks.names())})") from None
    return meta


def load(path: str | Path, task: Optional[str] = None) -> Bundle:
    """Rebuilds exactly what was trained; refuses corrupt, truncated, foreign or mismatched bundles."""
    path = resolve(path)
    meta = read_meta(path)
    if task is not None and meta["task"] != task:
        raise BundleError(f"{path}: this is a {meta['task']} model, not a {task} model")
    from nlp_rnn import task as tasks

    task_ = tasks.get(meta["task"])
    try:
        config = from_dict(task_.config_cls, _read_json(path / CONFIG))
    except NlpRnnError as err:
        raise BundleError(f"{path / CONFIG}: {err}") from None
    tokenizer = Tokenizer.load(path) if task_.needs_tokenizer else None
    model = task_.build_model(config, tokenizer, meta)
    try:
        state = load_file(str(path / WEIGHTS))
    except FileNotFoundError:
        raise BundleError(f"{path / WEIGHTS}: missing from the bundle") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(f"{path / WEIGHTS}: corrupt or truncated ({str(err).splitlines()[0][:120]})") from None
    expected = _state_without_aliases(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise BundleError(f"{path / WEIGHTS}: weights do not match the config ({what})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise BundleError(f"{path / WEIGHTS}: {name} has shape {tuple(tensor.shape)}, config needs {tuple(expected[name].shape)}")
        if not torch.isfinite(tensor.float()).all():
            raise BundleError(f"{path / WEIGHTS}: {name} holds NaN or infinite values")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
    model.eval()
    return Bundle(meta["task"], config, model, tokenizer, meta, path)


def load_trainer_state(path: str | Path) -> dict:
    file = Path(path) / TRAINER
    try:
        return torch.load(file, weights_only=True)
    except FileNotFoundError:
        raise BundleError(f"{file}: missing: cannot resume (only last/ bundles hold trainer state)") from None
    except Exception as err:  # torch raises several types for corrupt zip/pickle data
        raise BundleError(f"{file}: corrupt ({type(err).__name__})") from None
