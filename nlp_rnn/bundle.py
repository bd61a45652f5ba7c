"""Self-contained model bundles: config, safetensors weights, sentencepiece model(s) and metadata.

Nothing pickled is ever loaded: weights are safetensors, the trainer state of `last/` bundles is
read with `torch.load(weights_only=True)`. Bundles are written to a temporary folder and renamed
into place, so a crash mid-save never leaves a half-written bundle where a good one was.
"""

import errno
import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.overrides import TorchFunctionMode

from nlp_rnn import card, devices
from nlp_rnn.config import from_dict, to_dict
from nlp_rnn.errors import BundleError, NlpRnnError
from nlp_rnn.tokenizer import Tokenizer
from nlp_rnn.version import __version__

FORMAT = "nlp-rnn-bundle"
FORMAT_VERSION = 1
META, CONFIG, WEIGHTS, TRAINER = "meta.json", "config.json", "model.safetensors", "trainer.pt"


SHORTLIST = "shortlist.safetensors"  # a translation model's vocabulary shortlist (nn/shortlist.py)
EXTRA_FILES = (SHORTLIST,)


@dataclass
class Bundle:
    task: str
    config: Any  # the task's config dataclass
    model: nn.Module
    tokenizer: Optional[Tokenizer]  # None for tasks that read no text
    meta: dict
    path: Optional[Path] = None


# What a task keeps in meta.json that gives a model's outputs their meaning: classes, conditions, a forecaster's
# scaling and inputs. Two models that differ here answer different questions, even with the same tensors.
MEANING = ("labels", "label_values", "conditions", "stats", "categories", "features", "lags")


def unlike(a: Bundle, b: Bundle) -> str:
    """What keeps two bundles from being used as one (an ensemble, a weight average): 'tasks (...)',
    'tokenizers' or the meta field that differs, as in "A and B have different ..."; '' when nothing does."""
    if a.task != b.task:
        return f"tasks ({a.task} against {b.task})"
    x, y = a.tokenizer, b.tokenizer
    if (x is None) != (y is None) or (
        x is not None and (x.src_blob, x.tgt_blob, x.normalise) != (y.src_blob, y.tgt_blob, y.normalise)
    ):
        return "tokenizers"
    for key in MEANING:
        if a.meta.get(key) != b.meta.get(key):
            return f"{key.replace('_', ' ')} ({a.meta.get(key)} against {b.meta.get(key)})"
    return ""


def resolve(path: str | Path) -> Path:
    """A bundle folder, a training output folder meaning its `best/` bundle, or `hf://ORG/NAME[@REVISION]`
    (downloaded once into the Hugging Face cache)."""
    hub = card.hub_reference(path)
    if hub is not None:
        path = card.from_hub(*hub)
    path = Path(path)
    if (path / META).is_file():
        return path
    if (path / "best" / META).is_file():
        return path / "best"
    if not path.exists():
        raise BundleError(f"{path}: model folder not found")
    raise BundleError(f"{path}: not a model bundle (no {META}) nor a training folder with best/{META}")


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tied parameter once (safetensors refuses shared storage)."""
    seen, state = set(), {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = tensor.detach()
    return state


def _state_without_aliases(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a bundle stores: the unique tensors, on the CPU wherever the model is."""
    return {name: tensor.cpu().contiguous() for name, tensor in _unique_state(model).items()}


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


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
    """Writes the bundle atomically (temporary folder + rename). `half` stores weights as fp16.

    A failed write (a full disk, say) removes the temporary folder and leaves any bundle already at
    `folder` as it was.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    try:
        _write(tmp, bundle, trainer_state, half)
    except (OSError, SafetensorError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = "the previous bundle is intact" if (folder / META).is_file() else "nothing was saved"
        if _is_disk_full(err):
            raise NlpRnnError(f"no space left on device while saving {folder}; {kept}") from None
        raise NlpRnnError(
            f"cannot save {folder} ({type(err).__name__}: {str(err).splitlines()[0][:160]}); {kept}"
        ) from None
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def _write(tmp: Path, bundle: Bundle, trainer_state: Optional[dict], half: bool) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    state = _state_without_aliases(bundle.model)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
    meta = dict(
        bundle.meta,
        format=FORMAT,
        format_version=FORMAT_VERSION,
        task=bundle.task,
        library_version=__version__,
    )
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if half:
        meta["weights_dtype"] = "float16"  # loaded back into the model's float32 parameters
    (tmp / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    config = portable(to_dict(bundle.config))
    (tmp / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    (tmp / card.CARD).write_text(card.model_card(bundle.task, config, meta), encoding="utf-8")
    if bundle.tokenizer is not None:
        bundle.tokenizer.save(tmp)
    if bundle.path is not None and Path(bundle.path).resolve() != tmp.resolve():
        for name in EXTRA_FILES:  # what a task keeps beside the weights goes along with a re-save
            if (Path(bundle.path) / name).is_file():
                shutil.copyfile(Path(bundle.path) / name, tmp / name)
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER)
    _fsync_tree(tmp)


def portable(config: dict) -> dict:
    """The config with the absolute paths of its `data` section made relative to the working directory,
    so that a bundle names its data as the user would from where they trained, never a machine's own
    folders (Hub names and relative paths stay as they are)."""

    def relative(value: Any) -> Any:
        if isinstance(value, str) and os.path.isabs(value):
            return os.path.relpath(value)
        if isinstance(value, list):
            return [relative(v) for v in value]
        return value

    data = config.get("data")
    if not isinstance(data, dict):
        return config
    return dict(config, data={key: relative(value) for key, value in data.items()})


def read_json(path: Path) -> dict:
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
    """A bundle's meta.json, checked to be an nlp-rnn bundle of a format version this library reads."""
    path = resolve(path)
    meta = read_json(path / META)
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path / META}: not an nlp-rnn bundle (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version} is newer than this nlp-rnn supports "
            f"({FORMAT_VERSION}); upgrade nlp-rnn"
        )
    return meta


def save_weights(folder: Path, model: nn.Module) -> Path:
    """The model's weights alone (a kept checkpoint: `folder/model.safetensors`), readable by `read_weights`."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_state_without_aliases(model), str(folder / WEIGHTS), metadata={"format": FORMAT})
    return folder


def read_header(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors file's JSON header, without reading the tensors."""
    try:
        with open(file, "rb") as handle:
            raw = handle.read(8)
            size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
            if not 0 < size <= min(100_000_000, file.stat().st_size - 8):
                raise BundleError(f"{file}: corrupt or truncated (bad safetensors header)")
            header = json.loads(handle.read(size))
    except FileNotFoundError:
        raise BundleError(f"{file}: missing from the bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BundleError(f"{file}: corrupt or truncated (bad safetensors header)") from None
    if not isinstance(header, dict):
        raise BundleError(f"{file}: corrupt or truncated (bad safetensors header)")
    return {
        k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
    }


def _check_weights(
    path: Path, found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]
) -> None:
    """Refuses weights that do not fit the model the config describes, naming both."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise BundleError(f"{path / WEIGHTS}: weights do not match {path / CONFIG} ({what})")
    for name, shape in found.items():
        if tuple(shape) != tuple(expected[name]):
            raise BundleError(
                f"{path / WEIGHTS}: {name} has shape {tuple(shape)}, but {path / CONFIG} describes "
                f"{tuple(expected[name])}"
            )


class ModelBuilder(Protocol):
    """What rebuilding a bundle's model needs from its task (a registered `Task` is one)."""

    config_cls: type
    needs_tokenizer: bool

    def build_model(self, cfg: Any, tokenizer: Optional[Tokenizer], meta: dict) -> nn.Module: ...


def read_weights(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The bundle's weights, checked against `model` (shapes from the header first, then every value
    finite) and cast to the model's dtypes."""
    expected = _unique_state(model)
    _check_weights(path, read_header(path / WEIGHTS), {k: tuple(v.shape) for k, v in expected.items()})
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(
            f"{path / WEIGHTS}: corrupt or truncated ({str(err).splitlines()[0][:120]})"
        ) from None
    for name, tensor in state.items():
        if not torch.isfinite(tensor.float()).all():
            raise BundleError(f"{path / WEIGHTS}: {name} holds NaN or infinite values")
    return {k: v.to(expected[k].dtype) for k, v in state.items()}


class _NoFillsOnMeta(TorchFunctionMode):
    """Skips the random fills of meta tensors, which hold no values. torch's meta `normal_` (an embedding's
    initialisation) imports its Python reference implementations at its first call in a process, sympy and
    some 800 modules with them: about 0.9 s of every command that loads a model (2-core Intel Xeon, AMX)."""

    FILLS = frozenset({"normal_", "uniform_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self.FILLS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


def load(
    path: str | Path,
    builder_of: Callable[[str], ModelBuilder],
    task: Optional[str] = None,
    device: str | torch.device = "cpu",
) -> Bundle:
    """Rebuilds exactly what was trained, on `device`; refuses corrupt, truncated, foreign or mismatched bundles.

    `builder_of(task_name)` gives the model's builder (the task registry's `get`). The config is
    checked against the tensor shapes in the weights' header on a model built on the meta device (no
    memory), so a config that asks for a huge model is refused, not allocated.
    """
    path = resolve(path)
    meta = read_meta(path)
    if task is not None and meta["task"] != task:
        raise BundleError(f"{path}: this is a {meta['task']} model, not a {task} model")
    try:
        builder = builder_of(meta.get("task"))
    except NlpRnnError as err:
        raise BundleError(f"{path / META}: {err}") from None
    try:
        config = from_dict(builder.config_cls, read_json(path / CONFIG))
    except NlpRnnError as err:
        raise BundleError(f"{path / CONFIG}: {err}") from None
    tokenizer = Tokenizer.load(path) if builder.needs_tokenizer else None
    with torch.device("meta"), _NoFillsOnMeta():
        skeleton = builder.build_model(config, tokenizer, meta)
    _check_weights(
        path, read_header(path / WEIGHTS), {k: tuple(v.shape) for k, v in _unique_state(skeleton).items()}
    )
    model = builder.build_model(config, tokenizer, meta)
    model.load_state_dict(read_weights(path, model), strict=False)
    model.to(devices.resolve(device) if isinstance(device, str) else device)
    model.eval()
    return Bundle(meta["task"], config, model, tokenizer, meta, path)


def load_weights_into(path: str | Path, model: nn.Module, task: str) -> dict:
    """Loads a saved bundle's weights into `model` (the same architecture, e.g. to resume); its meta."""
    path = resolve(path)
    meta = read_meta(path)
    if meta["task"] != task:
        raise BundleError(f"{path}: this is a {meta['task']} model, not a {task} model")
    model.load_state_dict(read_weights(path, model), strict=False)
    return meta


def load_trainer_state(path: str | Path) -> dict:
    file = Path(path) / TRAINER
    try:
        return torch.load(file, weights_only=True)
    except FileNotFoundError:
        raise BundleError(f"{file}: missing: cannot resume (only last/ bundles hold trainer state)") from None
    except Exception as err:  # torch raises several types for corrupt zip/pickle data
        raise BundleError(f"{file}: corrupt ({type(err).__name__})") from None
