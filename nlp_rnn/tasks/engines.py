"""The engines a model runs on: PyTorch (a bundle) or ONNX Runtime (an exported folder, `nlp-rnn export`)."""

from pathlib import Path
from typing import Optional

from nlp_rnn import bundle as bundles
from nlp_rnn import onnxrt
from nlp_rnn.config import from_dict
from nlp_rnn.errors import BundleError, NlpRnnError
from nlp_rnn.nn.ensemble import Ensemble
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tokenizer import Tokenizer


def load_exported(folder: str | Path) -> bundles.Bundle:
    """An exported folder as a bundle whose model runs on ONNX Runtime."""
    folder = Path(folder)
    path = folder / onnxrt.MANIFEST
    if not path.is_file():
        if (folder / bundles.META).is_file() or (folder / "best" / bundles.META).is_file():
            refusal = _export_refusal(bundles.resolve(folder))
            if refusal is not None:
                raise BundleError(f"{folder}: a PyTorch bundle that ONNX does not take: {refusal}")
            raise BundleError(
                f"{folder}: a PyTorch bundle; export it first (nlp-rnn export {folder} --format onnx --output DIR)"
            )
        raise BundleError(f"{folder}: not an exported model (no {onnxrt.MANIFEST})")
    manifest = bundles.read_json(path)
    if manifest.get("format") != onnxrt.FORMAT:
        raise BundleError(f"{path}: not an nlp-rnn ONNX export (format {manifest.get('format')!r})")

    try:
        task = tasks.get(manifest.get("task"))
    except NlpRnnError as err:
        raise BundleError(f"{path}: {err}") from None
    config = from_dict(task.config_cls, bundles.read_json(folder / bundles.CONFIG))
    model = task.onnx_model(folder, manifest)
    return bundles.Bundle(
        manifest["task"], config, model.eval(), Tokenizer.load(folder), dict(manifest["meta"]), folder
    )


def _export_refusal(folder: Path) -> Optional[str]:
    """Why the bundle in `folder` cannot be exported (its task's `export_refusal`), or None (also when its files
    cannot be read: loading it says what is wrong)."""
    try:
        task = tasks.get(bundles.read_meta(folder).get("task"))
        return task.export_refusal(from_dict(task.config_cls, bundles.read_json(folder / bundles.CONFIG)))
    except (NlpRnnError, OSError, ValueError):
        return None


def load_for(engine: str, path, device: str = "cpu"):
    """The bundle for `--engine torch|onnxruntime`; several paths (repeated --model) make an ensemble."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if engine == "onnxruntime":
        if device not in ("auto", "cpu"):
            raise NlpRnnError("--engine onnxruntime runs on the CPU here; leave out --device")
        if len(paths) > 1:
            raise NlpRnnError("--engine onnxruntime takes one --model; ensembles run on torch")
        return load_exported(paths[0])
    if engine != "torch":
        raise NlpRnnError(f"--engine must be torch or onnxruntime, got {engine!r}")
    if len(paths) == 1:
        return tasks.load(paths[0], device=device)
    return ensemble_of([tasks.load(p, device=device) for p in paths])


def ensemble_of(bundles_: list) -> bundles.Bundle:
    """One bundle whose model is the members' ensemble; same task, tokenizer and labels required."""
    first = bundles_[0]
    for other in bundles_[1:]:
        if other.task != first.task:
            raise NlpRnnError(
                f"ensemble: {other.path} is a {other.task} model, {first.path} a {first.task} model"
            )
        why = bundles.unlike(first, other)
        if why:
            raise NlpRnnError(f"ensemble: {other.path} and {first.path} have different {why}")
    meta = dict(first.meta, ensemble=[str(b.path) for b in bundles_])
    return bundles.Bundle(
        first.task,
        first.config,
        Ensemble([b.model for b in bundles_]).eval(),
        first.tokenizer,
        meta,
        first.path,
    )
