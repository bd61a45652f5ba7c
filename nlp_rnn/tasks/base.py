"""What a task is, the registry that maps a bundle's task name to it, and the set-up every task shares.

A task (translation, classification, language model, ...) is one module holding one `Task` subclass:
its config class, how it builds its model, reads its data and validates (`prepare`), how it wraps
a loaded bundle for raw text (`wrap`), evaluates test sets (`evaluate`, `report`) and describes
itself (`describe`, `components`). `bundle`, `info` and the CLI dispatch through `get(name)` and
hold no per-task branches. A new task is one module that calls `register(MyTask())`; the built-in
ones are imported on first use.
"""

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from nlp_rnn import bundle as bundles
from nlp_rnn import card, devices, distributed
from nlp_rnn.errors import BundleError, NlpRnnError
from nlp_rnn.tokenizer import Tokenizer
from nlp_rnn.train import Trainer, TrainingSetup, run_folder  # TrainingSetup: part of the task contract

log = logging.getLogger(__name__)

BUILTIN = {
    "translation": "nlp_rnn.tasks.translation",
    "classification": "nlp_rnn.tasks.classification",
    "language_model": "nlp_rnn.tasks.language_model",
    "forecasting": "nlp_rnn.tasks.forecasting",
}
_REGISTRY: dict[str, "Task"] = {}

# Parameters per component for `info`, by name prefix, first match wins.
DEFAULT_COMPONENTS = (
    ("embeddings", ("src_embed.", "decoder.embed.", "embed.")),
    ("attention", ("decoder.attention.", "attention.")),
    ("output layer", ("decoder.output.", "output.")),
    ("encoder", ("encoder.",)),
    ("decoder", ("decoder.",)),
)


@dataclass(frozen=True)
class EvalRequest:
    """Everything `nlp-rnn evaluate` was given; each task reads the fields that apply to it."""

    src: Sequence[Path] = ()
    ref: Sequence[Path] = ()
    data: Sequence[Path] = ()
    dataset: Optional[str] = None
    splits: Sequence[str] = ()
    src_lang: Optional[str] = None
    tgt_lang: Optional[str] = None
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    beam_size: Optional[int] = None
    length_penalty: Optional[float] = None
    batch_size: int = 0
    precision: str = "auto"
    hyps: Optional[Path] = None
    plot: Optional[Path] = None  # a picture of the results, where the task draws one
    # A neural cache over the test text (language models): 0 = none.
    cache_size: int = 0
    cache_theta: float = 0.3
    cache_lambda: float = 0.1
    # Dynamic evaluation (language models): an SGD step of this rate after each scored segment; 0 = none.
    dynamic_lr: float = 0.0
    dynamic_decay: float = 0.0
    dynamic_window: int = 20


def fp32_only(request: "EvalRequest", what: str) -> None:
    """`evaluate --precision` for tasks whose evaluation runs in fp32 only: anything but auto/fp32 is refused in one
    line, not ignored."""
    if request.precision not in ("auto", "fp32"):
        raise NlpRnnError(
            f"--precision {request.precision}: {what} are evaluated in fp32 only (--precision fp32 or auto)"
        )


@dataclass(frozen=True)
class Endpoint:
    """An HTTP endpoint a task offers to `nlp-rnn serve`: POST /PATH with {"texts": [...], "model": NAME, ...}.

    `fields` are the request's own fields beyond `texts` and `model` (name -> (type, pydantic Field)).
    `run(interface, texts, request)` runs on the server's worker thread and returns one result per
    text; `answer(results, request)` is the response body (the server adds "model"). With a
    `batch_key`, requests with equal keys that arrive while the model is busy run together;
    without, one request at a time (e.g. seeded sampling). `check(interface, request)` refuses a
    request before it waits (raise `InvalidRequest`). With `stream(interface, text, request, on_text)`,
    POST /PATH/stream answers one text as server-sent events while it is produced (`on_text` receives
    each new piece of text; the return value is the final result, given to `answer`).
    """

    path: str
    summary: str
    fields: dict
    run: Callable[[Any, list, Any], list]
    answer: Callable[[list, Any], dict]
    check: Optional[Callable[[Any, Any], None]] = None
    batch_key: Optional[Callable[[Any], tuple]] = None
    stream: Optional[Callable[[Any, str, Any, Callable[[str], None]], Any]] = None


@dataclass(frozen=True)
class TrainCommand:
    """`nlp-rnn train NAME`: the task's own options (a function typer reads, returning config overrides per
    section, e.g. {"data": {"train": ...}}); the CLI adds --config, --output and the shared training options."""

    name: str
    options: Callable[..., dict]
    config_required: bool = True
    example_config: str = ""


class Task:
    """One kind of problem. Subclasses set the class attributes and implement the methods.

    Besides training and the Python interface, a task declares what it offers the delivery channels,
    which find it through the registry: `train_command` and `commands` (the CLI), `endpoint`
    (the HTTP server), `export_onnx` / `onnx_model` (ONNX) and its model's `int8_` (int8).
    """

    name: str = ""
    config_cls: type = object
    needs_tokenizer: bool = True
    default_bundle: Optional[str] = None  # folder under checkpoints/ used when --model is omitted
    plural: str = ""  # how messages name its models, e.g. "classifiers" (default: "NAME models")
    reads_cache: bool = False  # its evaluation takes a neural cache or dynamic evaluation (EvalRequest)
    components: tuple = DEFAULT_COMPONENTS
    train_command: Optional[TrainCommand] = None

    def commands(self) -> list[Callable]:
        """Top-level CLI commands (typer-annotated functions; the command's name is the function's)."""
        return []

    def endpoint(self, limits: Any) -> Optional[Endpoint]:
        """The HTTP endpoint, or None when the task is not served. `limits`: the server's `Limits`."""
        return None

    def serving(self, bundle: bundles.Bundle, precision: str) -> Any:
        """The interface the server runs requests on."""
        return self.wrap(bundle, precision=precision)

    def models_name(self) -> str:
        return self.plural or f"{self.name} models"

    def export_refusal(self, cfg: Any) -> Optional[str]:
        """Why a model of this config cannot be exported to ONNX, in one line; None when it can."""
        return None

    def export_onnx(self, model: nn.Module, folder: Path) -> dict:
        """Writes the model's ONNX graphs into `folder`; {graph name: {file, inputs, outputs}}."""
        raise NlpRnnError(f"ONNX export does not cover {self.name} models")

    def onnx_model(self, folder: Path, manifest: dict) -> nn.Module:
        """A model that runs the exported graphs of `folder` on ONNX Runtime, with the PyTorch model's protocol."""
        raise NlpRnnError(f"{folder}: {self.name} models have no ONNX Runtime engine")

    def build_model(self, cfg: Any, tokenizer: Optional[Tokenizer], meta: dict) -> nn.Module:
        raise NotImplementedError

    def prepare(self, cfg: Any, out_dir: Path, tokenizer: "TokenizerChoice") -> TrainingSetup:
        """Reads the data, gets the tokenizer from `tokenizer`, builds the model and everything `Trainer` needs."""
        raise NotImplementedError

    def fit(
        self,
        cfg: Any,
        out_dir: Path,
        tokenizer: "TokenizerChoice",
        resume: bool,
        progress_bar: bool,
        device: torch.device,
    ) -> dict:
        """Trains: `prepare`, then the shared `Trainer`. A task may train in several phases (e.g. a refit)."""
        setup = self.prepare(cfg, out_dir, tokenizer)
        return dict(
            Trainer(cfg.train, setup, out_dir, progress_bar, device).run(resume), score_key=setup.score_key
        )

    def wrap(self, bundle: bundles.Bundle, precision: str = "fp32") -> Any:
        """The raw-text interface of a loaded bundle (`nlp_rnn.load` returns this)."""
        raise NotImplementedError

    def evaluate(self, bundle: bundles.Bundle, request: EvalRequest) -> dict:
        """Scores every test set in `request`; a JSON-ready report."""
        raise NotImplementedError

    def report(self, result: dict) -> list[str]:
        """The lines `nlp-rnn evaluate` prints for `result`."""
        raise NotImplementedError

    def describe(self, bundle: bundles.Bundle) -> dict:
        """Task-specific lines of `nlp-rnn info` (e.g. languages, labels), as {label: value}."""
        return {}


def check_request(task: Task, request: EvalRequest) -> None:
    """Refuses evaluation options the task does not read, and cache settings out of range, in one line."""
    readers = ", ".join(t.models_name() for t in all_tasks() if t.reads_cache) or "none"
    if request.cache_size and not task.reads_cache:
        raise NlpRnnError(f"--cache-size: {task.models_name()} have no neural cache (it is for: {readers})")
    if request.cache_size < 0:
        raise NlpRnnError(f"--cache-size must be at least 0, got {request.cache_size}")
    if request.cache_size and request.cache_theta <= 0:
        raise NlpRnnError(f"--cache-theta must be positive, got {request.cache_theta}")
    if request.cache_size and not 0 <= request.cache_lambda <= 1:
        raise NlpRnnError(f"--cache-lambda must be in [0, 1], got {request.cache_lambda}")
    if request.dynamic_lr and not task.reads_cache:
        raise NlpRnnError(
            f"--dynamic-lr: {task.models_name()} have no dynamic evaluation (it is for: {readers})"
        )
    if request.dynamic_lr < 0 or not 0 <= request.dynamic_decay < 1 or request.dynamic_window < 1:
        raise NlpRnnError(
            "--dynamic-lr must be at least 0, --dynamic-decay in [0, 1) and --dynamic-window at least 1, got "
            f"{request.dynamic_lr}, {request.dynamic_decay}, {request.dynamic_window}"
        )
    if request.dynamic_lr and request.cache_size:
        raise NlpRnnError("--dynamic-lr and --cache-size: give one of them (each is measured on its own)")


def register(task: Task) -> Task:
    if not task.name:
        raise ValueError("a task needs a name")
    _REGISTRY[task.name] = task
    return task


def get(name: str) -> Task:
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])  # the module registers itself
    if name not in _REGISTRY:
        for plugin in _plugins():
            if plugin.name == name:
                plugin.load()  # the module registers itself
    if name not in _REGISTRY:
        raise NlpRnnError(f"unknown task {name!r} (known: {', '.join(names())})")
    return _REGISTRY[name]


def names() -> list[str]:
    """The built-in tasks first (translation, classification, language model, forecasting), then the others by name."""
    others = (set(_REGISTRY) | {ep.name for ep in _plugins()}) - set(BUILTIN)
    return list(BUILTIN) + sorted(others)


def _plugins() -> list:
    """Tasks of other installed packages: entry points in the group `nlp_rnn.tasks` (NAME = module)."""
    from importlib.metadata import entry_points

    return list(entry_points(group="nlp_rnn.tasks"))


def all_tasks() -> list[Task]:
    """Every task: the built-in ones, the installed plug-ins and those registered at run time, by name."""
    return [get(name) for name in names()]


def of(bundle: bundles.Bundle) -> Task:
    return get(bundle.task)


def load(path: str | Path, task: Optional[str] = None, device: str | torch.device = "cpu") -> bundles.Bundle:
    """A bundle (or a training folder's best/) with its model rebuilt by its task, on `device`."""
    return bundles.load(path, get, task, device)


def load_start(where: str) -> bundles.Bundle:
    """The bundle `--init-from` names (a bundle, a training folder or hf://ORG/NAME), or one line why not."""
    if not Path(where).exists() and card.hub_reference(where) is None:
        raise NlpRnnError(f"--init-from {where}: no such folder")
    try:
        return load(where)
    except BundleError as err:
        raise NlpRnnError(f"--init-from {where}: {err}") from None


# ----------------------------------------------------------------------------- shared set-up


@dataclass(frozen=True)
class TokenizerChoice:
    """Where a run's tokenizer comes from: last/ when resuming, a given folder, or trained on the data."""

    out_dir: Path
    resume: bool = False
    folder: Optional[Path] = None

    def get(self, cfg, *texts: Sequence[str]) -> Tokenizer:
        last = self.out_dir / "last"
        if self.resume and (last / bundles.META).is_file():
            return Tokenizer.load(last)
        if self.folder is not None:
            return Tokenizer.load(self.folder)
        tokenizer = None
        if distributed.is_main():  # in multi-process training, process 0 trains it and hands it to the others
            if cfg.model_type == "wordlist":
                log.info("building a word list (the %d most frequent words at most)", cfg.vocab_size - 5)
            else:
                size = "one piece per character" if cfg.model_type == "char" else f"{cfg.vocab_size} pieces"
                exact = ", byte-exact" if cfg.byte_exact else ""
                log.info("training a %s sentencepiece model (%s%s)", cfg.model_type, size, exact)
            tokenizer = Tokenizer.train(cfg, *texts)
        blobs = distributed.broadcast(
            None if tokenizer is None else (tokenizer.src_blob, tokenizer.tgt_blob, tokenizer.normalise)
        )
        return tokenizer or Tokenizer(blobs[0], blobs[1], normalise=blobs[2])


def new_bundle(task: Task, cfg: Any, tokenizer: Optional[Tokenizer], meta: dict) -> bundles.Bundle:
    """Seeds torch, then builds the model, so that the same seed gives the same initial weights. With
    `train.init_seed` the weights come from that seed and torch is seeded again with `train.seed` after
    them (dropout and what else draws from torch's generator follow `train.seed`)."""
    seed, init_seed = cfg.train.seed, cfg.train.init_seed
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = task.build_model(cfg, tokenizer, meta)
    if init_seed is not None and init_seed != seed:  # init_seed equal to seed: the same run as without it
        torch.manual_seed(seed)
    meta = dict(meta, parameters=sum(p.numel() for p in model.parameters()))
    log.info("model: %s parameters", f"{meta['parameters']:,}")
    return bundles.Bundle(task.name, cfg, model, tokenizer, meta)


def train(
    task_name: str,
    cfg: Any,
    out_dir: str | Path,
    resume: bool = False,
    tokenizer_dir: Optional[str | Path] = None,
    progress_bar: bool = True,
    device: str = "auto",
    lock: bool = True,
) -> dict:
    """Trains any registered task (`Task.fit`: its data and model, then the shared `Trainer`).

    On `device` (auto: CUDA when present); under torchrun, in every process of the group. The
    run folder is locked for the whole run, so a second training cannot write into it (`lock` False: the
    caller holds its lock already, as distillation does from the making of its corpus on).
    """
    out_dir = Path(out_dir)
    task = get(task_name)
    where = devices.resolve(device)
    distributed.init(where)
    try:
        with run_folder(out_dir, acquire=lock and distributed.is_main()):
            choice = TokenizerChoice(out_dir, resume, Path(tokenizer_dir) if tokenizer_dir else None)
            result = dict(
                task.fit(cfg, out_dir, choice, resume, progress_bar, where), rank=distributed.rank()
            )
            # Process 0 may still work after training (the translation shortlist): the others wait for it, so
            # that no process closes the group under one still using it (gloo aborts a process left so).
            distributed.barrier()
            return result
    finally:
        distributed.finish()


def with_overrides(cfg: Any, section: str, **values) -> Any:
    """`cfg` with the given (not None) fields of one section replaced, e.g. CLI options over the config file."""
    given = {k: v for k, v in values.items() if v is not None}
    return replace(cfg, **{section: replace(getattr(cfg, section), **given)}) if given else cfg


def hub_or_table(data, split: str) -> dict:
    """The train or valid split of a table file or a Hub dataset, as keyword arguments of a source."""
    table = data.train if split == "train" else data.valid
    if table:
        return {"table": table}
    if data.dataset:
        return {
            "dataset": data.dataset,
            "dataset_config": data.dataset_config,
            "split": data.train_split if split == "train" else data.valid_split,
        }
    return {}
