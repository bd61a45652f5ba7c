"""ONNX plumbing every exported model shares: writing a module as an ONNX graph, opening a graph in
ONNX Runtime, tensors to NumPy. Which graphs a model has is its own business (`nn/exported.py`)."""

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from nlp_rnn.errors import BundleError, NlpRnnError

FORMAT = "nlp-rnn-onnx"
MANIFEST = "manifest.json"
OPSET = 18


def export_graph(
    module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict
) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise NlpRnnError('ONNX export needs onnx and onnxscript: pip install -e ".[onnx]"') from None
    batch, length = (
        torch.export.Dim("batch", min=1, max=100_000),
        torch.export.Dim("length", min=1, max=100_000),
    )
    axes = {"B": batch, "S": length}
    shapes = tuple(
        {axis: axes[name] for axis, name in dynamic.get(i, {}).items()} or None for i in range(len(inputs))
    )
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
        for name in ("onnx_ir", "onnxscript"):  # the exporter's passes log every step at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=shapes,
            opset_version=OPSET,
            verbose=False,
            external_data=False,
        )
    program.save(str(path), external_data=False)


def session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise NlpRnnError('--engine onnxruntime needs onnxruntime: pip install -e ".[onnx]"') from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for missing or corrupt graphs
        raise BundleError(f"{path}: not a loadable ONNX graph ({str(err).splitlines()[0][:160]})") from None


def to_numpy(t: torch.Tensor):
    return t.detach().cpu().contiguous().numpy()
