"""`nlp-rnn export --format onnx`: a model's graphs (as its task writes them), tokenizer, config and
manifest in one folder, which `--engine onnxruntime` loads (`tasks.engines.load_exported`)."""

import json
import os
import shutil
from pathlib import Path

from torch import nn

from nlp_rnn import bundle as bundles
from nlp_rnn import onnxrt
from nlp_rnn.config import to_dict
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.exported import MaskedEncoder  # noqa: F401  (the export's encoder, for tests and users)
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.engines import load_exported, load_for  # noqa: F401  (the other half of the format)


def export(bundle: bundles.Bundle, folder: str | Path) -> Path:
    """Writes the ONNX graphs, tokenizer, config and manifest of a translation model or classifier to `folder`."""
    folder = Path(folder)
    task = tasks.of(bundle)
    if not exports(task):
        covered = " and ".join(t.models_name() for t in tasks.all_tasks() if exports(t))
        raise NlpRnnError(f"{bundle.path}: ONNX export covers {covered}, not {bundle.task} models")
    model = bundle.model.float().cpu().eval()
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_export(bundle, task, model, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing behind
        raise
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def exports(task: tasks.Task) -> bool:
    """Whether the task writes ONNX graphs (overrides `Task.export_onnx`)."""
    return type(task).export_onnx is not tasks.Task.export_onnx


def _write_export(bundle: bundles.Bundle, task: tasks.Task, model: nn.Module, tmp: Path) -> None:
    """The graphs (traced on a small padded batch), tokenizer, config and manifest, into `tmp`."""
    graphs = task.export_onnx(model, tmp)
    bundle.tokenizer.save(tmp)
    (tmp / bundles.CONFIG).write_text(
        json.dumps(bundles.portable(to_dict(bundle.config)), indent=2), encoding="utf-8"
    )
    source = None if bundle.path is None else os.path.relpath(bundle.path)  # never a machine's absolute path
    manifest = {
        "format": onnxrt.FORMAT,
        "format_version": 1,
        "task": bundle.task,
        "opset": onnxrt.OPSET,
        "graphs": graphs,
        "cell": getattr(model.cfg, "cell", None),
        "meta": bundle.meta,
        "source": source,
    }
    (tmp / onnxrt.MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
