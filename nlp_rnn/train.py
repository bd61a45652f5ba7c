"""One task-agnostic training loop: budgets, validation, best/last bundles, resume, metrics.jsonl.

The task supplies the batches, a loss function and a validation function; this file knows
nothing about translation or classification. Resuming restores model, optimizer, scheduler,
RNG and data-order state, so a resumed run takes exactly the steps the uninterrupted run would.
The model trains on any device (`devices`); under torchrun, on several processes (`distributed`):
each takes its share of every batch, process 0 validates and writes, and all stay in step.
A run folder has one owner at a time (`RunLock`).
"""

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from nlp_rnn import bundle as bundles
from nlp_rnn import devices, distributed
from nlp_rnn.averaging import WeightAverage, non_monotone_trigger
from nlp_rnn.config import TrainConfig
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.precision import resolve_precision

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"
COMMAND: Optional[str] = None  # the nlp-rnn command line being run (set by the CLI), for model cards


@dataclass
class TrainingSetup:
    """What a task hands the task-agnostic `Trainer`."""

    bundle: bundles.Bundle
    batcher: Any  # .epoch(e) -> list of batch descriptions, in training order
    collate: Callable[[Any], Any]  # batch description -> model input
    loss_fn: Callable[[Any, int], tuple[torch.Tensor, int]]  # (batch, step) -> (summed loss, count)
    validate: Callable[[], dict]
    score_key: str
    higher_is_better: bool = True
    # Extra state saved in last/ so that a resumed run is exact (e.g. a language model's carried hidden state).
    state_dict: Optional[Callable[[], dict]] = None
    load_state_dict: Optional[Callable[[dict], None]] = None
    # False: no selection by score (no early stopping or plateau schedule); best/ is the latest model,
    # as when a model is refitted on its validation rows for a step count chosen before.
    select: bool = True
    lr_at: Optional[Callable[[int], float]] = None  # step -> learning rate, replacing the plateau schedule
    # batch description -> a factor on the learning rate of that step (e.g. a window's length / bptt)
    lr_scale: Optional[Callable[[Any], float]] = None
    # The model's parameters in groups from the top layer down (e.g. head, recurrent layers, embeddings), for
    # per-layer learning rates (train.layer_lr_decay) and gradual unfreezing (train.unfreeze_every).
    layer_groups: Optional[list[list[torch.nn.Parameter]]] = None


@dataclass
class Progress:
    """Where training stands; saved as part of the trainer state of `last/`."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_s: float = 0.0
    best_score: float = -math.inf
    bad_validations: int = 0
    last_validated: int = -1
    nonfinite_in_a_row: int = 0  # steps skipped for a NaN/inf loss or gradient, consecutively
    nonfinite_total: int = 0


class RunLock:
    """Exclusive ownership of a run folder while a training writes into it.

    An advisory `flock` on `FOLDER/.lock`: the kernel releases it when the owner exits or is killed,
    so a stale lock never blocks the next run; the file names the owner's pid and host for the message.
    """

    NAME = ".lock"

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / self.NAME
        self._handle = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise NlpRnnError(
                f"{self.path.parent}: a training that is still running owns this folder ({owner}); "
                f"wait for it to end or stop it, or use another --output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._handle = handle
        return self

    @property
    def held(self) -> bool:
        """Whether this process holds the lock now."""
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def check_resume(out_dir: Path, resume: bool) -> None:
    """A new run never writes over the run `out_dir` holds, and a resumed one needs it."""
    held = (out_dir / "last" / bundles.META).is_file()
    if held and not resume:
        raise NlpRnnError(f"{out_dir}: already holds a training run; use --resume, or another --output")
    if resume and not held:
        raise NlpRnnError(f"{out_dir}: nothing to resume (no last/ bundle); run without --resume")


@contextlib.contextmanager
def run_folder(out_dir: Path, acquire: bool = True) -> Iterator[RunLock]:
    """Holds `out_dir`'s `RunLock` for the block (`acquire` False: not this process, e.g. torchrun's others). A folder
    the block made and left holding only the lock (a run refused before writing anything: bad data, --init-from) is
    removed; a failure to remove it never takes the place of the block's own error, and only the process holding the
    lock removes it, before releasing it (rmdir would otherwise leave the lock of a run started meanwhile)."""
    lock = RunLock(out_dir)
    created = not out_dir.exists()
    try:
        if acquire:
            lock.acquire()
        yield lock
    finally:
        if created and lock.held:
            with contextlib.suppress(OSError):
                if [p.name for p in out_dir.iterdir()] == [RunLock.NAME]:
                    lock.path.unlink()
                    lock.release()
                    out_dir.rmdir()
        lock.release()


def fused_adam(device: torch.device) -> bool:
    """Whether torch has its fused Adam (one kernel over every parameter) for `device`: on CUDA, and on the
    CPU from torch 2.4 (10.5 against 26.5 ms a step for 21 M parameters here); else the loop over tensors."""
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return device.type == "cuda" or (device.type == "cpu" and version >= (2, 4))


class Trainer:
    """Trains `setup.bundle.model`; `setup.validate()` returns metrics including `setup.score_key`."""

    def __init__(
        self,
        cfg: TrainConfig,
        setup: TrainingSetup,
        out_dir: Path,
        progress_bar: bool = True,
        device: Optional[torch.device] = None,
    ) -> None:
        devices.widen_primitive_cache()
        self.cfg, self.setup, self.bundle = cfg, setup, setup.bundle
        self.batcher, self.collate, self.loss_fn, self.validate = (
            setup.batcher,
            setup.collate,
            setup.loss_fn,
            setup.validate,
        )
        self.score_key, self.sign = setup.score_key, 1.0 if setup.higher_is_better else -1.0
        self.out_dir = Path(out_dir)
        self.device = device or torch.device("cpu")
        self.rank, self.world = distributed.rank(), distributed.world()
        self.main = self.rank == 0
        self.progress_bar = progress_bar and self.main
        self.model = setup.bundle.model.to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if self.world > 1 and not hasattr(self.batcher, "shard"):
            raise NlpRnnError(
                f"{self.bundle.task}: this task's batches cannot be split across processes; train it in one"
            )
        self.amp = resolve_precision(cfg.precision, self.device) == "bf16"
        if cfg.precision == "auto":
            log.info(
                "precision auto: %s on %s",
                "bf16 autocast" if self.amp else "fp32 (no native bf16 here)",
                self.device,
            )
        self.scaler = devices.grad_scaler(self.device, self.amp)
        if cfg.schedule == "slanted" and not (cfg.max_steps or cfg.max_epochs or cfg.max_minutes):
            raise NlpRnnError(
                "train.schedule slanted needs a budget to spread over: train.max_steps, max_epochs or max_minutes"
            )
        params = self._param_groups()
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(
                params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused_adam(self.device)
            )
        self.average = (
            None if cfg.average == "none" else WeightAverage(self.model, cfg.average, cfg.ema_decay)
        )
        self.scores: list[float] = []  # every scheduled validation's score (the NT-ASGD trigger reads them)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
        )
        meta = self.bundle.meta
        meta["hardware"] = devices.describe(self.device)
        if COMMAND:
            meta["command"] = COMMAND
        self.state = Progress()
        self._stop_requested = False
        self._writer = None  # TensorBoard's, made on the first metrics record
        self._stage: Optional[int] = None  # gradual unfreezing: how many layer groups train now

    # ------------------------------------------------------------------ learning rates

    def _param_groups(self) -> list[dict]:
        """One optimizer group per layer group (top first, lr_mult = 1 / layer_lr_decay**k), or one for all."""
        groups = self.setup.layer_groups
        if not groups:
            return [{"params": list(self.model.parameters()), "lr_mult": 1.0}]
        grouped = {id(p) for g in groups for p in g}
        rest = [p for p in self.model.parameters() if id(p) not in grouped]
        out = [
            {
                "params": list(g),
                "lr_mult": self.cfg.layer_lr_decay**-k,
                "lr": self.cfg.lr * self.cfg.layer_lr_decay**-k,
            }
            for k, g in enumerate(groups)
        ]
        out[0]["params"] += rest
        return out

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    def _budget_fraction(self, started: float, epoch_len: int) -> float:
        cfg, st = self.cfg, self.state
        done = []
        if cfg.max_steps:
            done.append(st.step / cfg.max_steps)
        if cfg.max_epochs:
            done.append((st.epoch + st.batch_in_epoch / max(epoch_len, 1)) / cfg.max_epochs)
        if cfg.max_minutes:
            done.append(self._elapsed(started) / (60 * cfg.max_minutes))
        return min(1.0, max(done)) if done else 0.0

    def _before_step(self, started: float, epoch_len: int) -> None:
        """The slanted-triangular learning rate and gradual unfreezing for the coming step."""
        cfg = self.cfg
        if cfg.schedule == "slanted":
            f, cut = self._budget_fraction(started, epoch_len), cfg.warmup_fraction
            p = f / cut if f < cut else 1 - (f - cut) / (1 - cut)
            self._set_lr(cfg.lr * (1 + p * (cfg.slanted_ratio - 1)) / cfg.slanted_ratio)
        groups = self.setup.layer_groups
        if cfg.unfreeze_every and groups:
            stage = min(len(groups), 1 + self.state.step // cfg.unfreeze_every)
            if stage != self._stage:  # the stage follows from the step, so a resumed run takes it up again
                for k, group in enumerate(groups):
                    for p in group:
                        p.requires_grad_(k < stage)
                log.info(
                    "step %d: training the top %d of %d layer groups", self.state.step, stage, len(groups)
                )
                self._stage = stage

    # ------------------------------------------------------------------ state

    def _rank_state(self) -> dict:
        """What differs between processes: random-number states and the task's carried state."""
        state = {
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "task": devices.move(self.setup.state_dict(), torch.device("cpu"))
            if self.setup.state_dict
            else {},
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _trainer_state(self, ranks: list[dict]) -> dict:
        return {
            "progress": vars(self.state).copy(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "average": None if self.average is None else self.average.state_dict(),
            "scores": list(self.scores),
            "world_size": self.world,
            "ranks": ranks,
        }

    def _restore(self) -> None:
        last = self.out_dir / "last"  # (`run` has checked that it holds a run)
        state = bundles.load_trainer_state(last)
        saved_world = state.get("world_size", 1)
        if saved_world != self.world:
            raise NlpRnnError(
                f"{last}: saved by a run of {saved_world} process(es), resumed with {self.world}; resume with "
                f"the same number (torchrun --nproc-per-node), or start a new run from {last} with --output elsewhere"
            )
        saved = bundles.load_weights_into(last, self.model, self.bundle.task)
        if saved.get("best") is not None:
            self.bundle.meta["best"] = saved["best"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.average is not None and state.get("average"):
            self.average.load_state_dict(state["average"])
        self.scores = list(state.get("scores", []))
        mine = (
            state["ranks"][self.rank] if "ranks" in state else state
        )  # bundles of nlp-rnn 0.x kept one process's state
        torch.set_rng_state(mine["torch_rng"])
        random.setstate(mine["python_rng"])
        if "cuda_rng" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"], self.device)
        if self.setup.load_state_dict:
            self.setup.load_state_dict(devices.move(mine.get("task", {}), self.device))
        self.state = Progress(**state["progress"])
        if self.main:
            self._truncate_metrics(self.state.step)
        log.info("resumed from %s at step %d", last, self.state.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drops lines a killed run wrote after its last save, so the log matches the resumed run."""
        path = self.out_dir / METRICS
        if path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step
            ]
            path.write_text("".join(line + "\n" for line in kept))

    def _write_metrics(self, record: dict) -> None:
        if not self.main:
            return
        with open(self.out_dir / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        board = self._board()
        if board is not None:
            kind = "valid" if any(k.startswith("val_") for k in record) else "train"
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    board.add_scalar(f"{kind}/{key.removeprefix('val_')}", value, record["step"])
            board.flush()

    def _board(self):
        """TensorBoard's writer (OUTPUT/tensorboard/) when train.tensorboard and the package is installed."""
        if self._writer is None and self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info(
                    "no TensorBoard event files: pip install 'nlp-rnn[tensorboard]' (metrics.jsonl has it all)"
                )
                self._writer = False
                return None
            # a resumed run drops the events a killed run wrote after its last save, as metrics.jsonl does
            self._writer = SummaryWriter(
                str(self.out_dir / "tensorboard"), purge_step=self.state.step or None
            )
        return self._writer or None

    def _save(self, which: str) -> None:
        """Process 0 writes; for last/ every process hands it its own state first (so all must call this)."""
        ranks = distributed.gather(self._rank_state()) if which == "last" else None
        if not self.main:
            return
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NlpRnnError(
                f"step {self.state.step}: parameter {bad[0]} is not finite; {which}/ was not written "
                f"({self.out_dir / 'best'} holds the best model so far)"
            )
        self.bundle.meta["step"] = self.state.step
        bundles.save(
            self.out_dir / which, self.bundle, self._trainer_state(ranks) if which == "last" else None
        )

    # ------------------------------------------------------------------ loop

    def _elapsed(self, started: float) -> float:
        return self.state.elapsed_s + (time.monotonic() - started)

    def _budget_spent(self, started: float) -> bool:
        cfg = self.cfg
        return (cfg.max_steps > 0 and self.state.step >= cfg.max_steps) or (
            cfg.max_minutes > 0 and self._elapsed(started) >= cfg.max_minutes * 60
        )

    def _validate_and_save(self, started: float, scheduled: bool) -> bool:
        """Validates, keeps best/ and last/; returns True when early stopping says stop.

        Only scheduled validations (every `validate_every` steps) drive the learning-rate schedule
        and early stopping, so an extra one at the end of a budget does not change what a resumed
        run does next. Process 0 validates; the others receive its decisions.
        """
        metrics = self._validate_main(started, scheduled) if self.main else None
        lrs, st = [g["lr"] for g in self.optimizer.param_groups], self.state
        metrics, lrs, st.best_score, st.bad_validations = distributed.broadcast(
            (metrics, lrs, st.best_score, st.bad_validations)
        )
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        st.last_validated = st.step
        st.elapsed_s = self._elapsed(started)
        self._save("last")
        log.info("step %d: %s", st.step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return st.bad_validations >= self.cfg.patience

    def _validate_main(self, started: float, scheduled: bool) -> dict:
        with self._averaged():
            return self._validate_and_keep(started, scheduled)

    def _averaged(self):
        """Validation and best/ see the averaged weights once averaging has started."""
        return self.average.swapped() if self.average is not None else contextlib.nullcontext()

    def _validate_and_keep(self, started: float, scheduled: bool) -> dict:
        self.model.eval()
        with torch.no_grad():
            metrics = self.validate()
        self.model.train()
        score = self.sign * metrics[self.score_key]  # the scheduler and best/ always maximise
        record = {"step": self.state.step, "elapsed_s": round(self._elapsed(started), 2), **metrics}
        if self.average is not None:
            record["averaged"] = self.average.count
        self._write_metrics(record)
        select = self.setup.select  # False: no early stopping or plateau schedule, the latest model is kept
        if scheduled and select and self.setup.lr_at is None and self.cfg.schedule == "plateau":
            self.scheduler.step(score)
        if scheduled:
            self.scores.append(score)
        if self.cfg.keep_checkpoints and self.main:
            self._keep_checkpoint(record, score)
        if score > self.state.best_score or not select:
            self.state.best_score = score if select else self.state.best_score
            self.state.bad_validations = 0 if scheduled else self.state.bad_validations
            self.bundle.meta["best"] = record
            self._save("best")
        elif scheduled:
            self.state.bad_validations += 1
        return metrics

    def _keep_checkpoint(self, record: dict, score: float) -> None:
        """The validated weights (averaged, when averaging runs) in OUTPUT/checkpoints/step-N/, the last
        `train.keep_checkpoints` of them, listed with their scores in checkpoints/index.jsonl."""
        folder = self.out_dir / "checkpoints"
        name = f"step-{record['step']:08d}"
        bundles.save_weights(folder / name, self.model)
        index = folder / "index.jsonl"
        lines = [json.loads(line) for line in index.read_text().splitlines()] if index.is_file() else []
        lines = [r for r in lines if r["name"] != name] + [{"name": name, "score": score, **record}]
        for old in lines[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(folder / old["name"], ignore_errors=True)
        lines = lines[-self.cfg.keep_checkpoints :]
        index.write_text("".join(json.dumps(r) + "\n" for r in lines))

    def _on_signal(self, signum, frame) -> None:
        """SIGINT (Ctrl-C), SIGTERM (what Slurm, Kubernetes and torchrun send before a kill) and SIGUSR1
        (Slurm's advance warning): finish this step, validate, save last/ and return; a second Ctrl-C aborts."""
        if self._stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_requested = True
        name = signal.Signals(signum).name
        log.warning("%s: finishing this step and saving last/ (resume with --resume)", name)

    def run(self, resume: bool = False) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        check_resume(self.out_dir, resume)
        if resume:
            self._restore()
        distributed.barrier()  # every process has read last/ before process 0 writes it again
        distributed.broadcast_parameters(self.model)
        if self.world > 1 and not resume:
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.rank)  # each process its own dropout masks
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)
        caught = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
        previous = {sig: signal.signal(sig, self._on_signal) for sig in caught}
        try:
            reason = self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._writer:
                self._writer.close()
        distributed.barrier()  # nobody reads best/ before process 0 has written it
        return {
            "stopped": reason,
            "step": self.state.step,
            "best": self.bundle.meta.get("best"),
            "elapsed_s": self.state.elapsed_s,
        }

    def _stop(self, started: float) -> bool:
        """The budget is spent or a stop was asked for, on any process (so all stop at the same step)."""
        return distributed.any_true(self._budget_spent(started) or self._stop_requested, self.device)

    def _step(self, description) -> tuple[float, int]:
        """One update from one batch (this process's share of it); returns the batch's summed loss and count."""
        if self.world > 1:
            description = self.batcher.shard(description, self.rank, self.world)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, count = None, 0
        if self.world == 1 or len(description):
            batch = devices.move(self.collate(description), self.device)
            with devices.autocast(self.device, self.amp):
                loss_sum, count = self.loss_fn(batch, self.state.step)
        local = float(loss_sum.detach()) if loss_sum is not None else 0.0
        total_loss, total_count = distributed.sum_floats([local, count], self.device)
        if not math.isfinite(total_loss):
            return self._skip_nonfinite("loss", total_loss)
        if loss_sum is not None:
            self.scaler.scale(
                loss_sum / max(total_count, 1)
            ).backward()  # every share over the whole batch's count
        distributed.sum_gradients(self.params)
        if self.setup.lr_at is not None:
            self._set_lr(self.setup.lr_at(self.state.step))
        self.scaler.unscale_(self.optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_norm or math.inf))
        if not math.isfinite(norm) and not self.scaler.is_enabled():  # an fp16 scaler skips these by itself
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip_nonfinite("gradient norm", norm)
        self.state.nonfinite_in_a_row = 0
        if self.setup.lr_scale is not None:
            base = [group["lr"] for group in self.optimizer.param_groups]
            for group in self.optimizer.param_groups:
                group["lr"] *= self.setup.lr_scale(description)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.setup.lr_scale is not None:
            for group, lr in zip(self.optimizer.param_groups, base):
                group["lr"] = lr
        if self.average is not None and self._averaging_now():
            self.average.update()
        return total_loss, int(total_count)

    def _skip_nonfinite(self, what: str, value: float) -> tuple[float, int]:
        """A step whose loss or gradient is NaN/inf changes nothing; `nonfinite_patience` in a row stop the run."""
        st = self.state
        st.nonfinite_in_a_row += 1
        st.nonfinite_total += 1
        log.warning(
            "step %d: %s is %s; step skipped (%d in a row)", st.step + 1, what, value, st.nonfinite_in_a_row
        )
        if st.nonfinite_in_a_row >= self.cfg.nonfinite_patience:
            raise NlpRnnError(
                f"step {st.step + 1}: {st.nonfinite_in_a_row} steps in a row with a non-finite {what}; "
                f"training stopped (lower train.lr or check the data); {self.out_dir / 'best'} holds the best "
                "model so far"
            )
        return 0.0, 0

    def _averaging_now(self) -> bool:
        """After this step's update: from `average_start`, or (mean, start 0) once validation stopped improving:
        a score worse than the best before the last `average_patience` validations (NT-ASGD)."""
        if self.average.started:
            return True
        cfg = self.cfg
        if cfg.average_start > 0 or cfg.average == "ema":
            return self.state.step + 1 >= cfg.average_start
        triggered = non_monotone_trigger(self.scores, cfg.average_patience)
        if triggered:
            log.info(
                "step %d: validation stopped improving; averaging the weights from here (NT-ASGD)",
                self.state.step,
            )
        return triggered

    def _loop(self) -> str:
        cfg, st = self.cfg, self.state
        started = time.monotonic()
        self.model.train()
        bar = tqdm(
            total=cfg.max_steps or None,
            initial=st.step,
            disable=not self.progress_bar,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        window_loss, window_tokens, window_start = 0.0, 0, time.monotonic()
        try:
            while True:
                if cfg.max_epochs and st.epoch >= cfg.max_epochs:
                    self._finish(started)
                    return "max_epochs"
                batches = self.batcher.epoch(st.epoch)
                if not batches:
                    raise NlpRnnError(
                        "the training data makes no batch (too few examples for the batch settings)"
                    )
                while st.batch_in_epoch < len(batches):
                    if self._stop(started):
                        self._finish(started)
                        return (
                            "interrupted"
                            if distributed.any_true(self._stop_requested, self.device)
                            else "budget"
                        )
                    self._before_step(started, len(batches))
                    loss_sum, count = self._step(batches[st.batch_in_epoch])
                    st.batch_in_epoch += 1
                    st.step += 1
                    window_loss += loss_sum
                    window_tokens += count
                    bar.update(1)
                    if st.step % cfg.log_every == 0:
                        seconds = time.monotonic() - window_start
                        record = {
                            "step": st.step,
                            "elapsed_s": round(self._elapsed(started), 2),
                            "train_loss": window_loss / max(window_tokens, 1),
                            "target_tokens": window_tokens,
                            "tokens_per_s": round(window_tokens / max(seconds, 1e-9), 1),
                            "lr": self.optimizer.param_groups[0]["lr"],
                        }
                        if st.nonfinite_total:
                            record["nonfinite_skipped"] = st.nonfinite_total
                        self._write_metrics(record)
                        bar.set_postfix(
                            loss=f"{record['train_loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}"
                        )
                        window_loss, window_tokens, window_start = 0.0, 0, time.monotonic()
                    if st.step % cfg.validate_every == 0:
                        if self._validate_and_save(started, scheduled=True):
                            return "early_stopping"
                        started = window_start = time.monotonic()  # validation time is not training time
                        window_loss, window_tokens = 0.0, 0
                    elif cfg.save_every and st.step % cfg.save_every == 0:
                        st.elapsed_s = self._elapsed(started)
                        started = time.monotonic()
                        self._save("last")
                st.epoch += 1
                st.batch_in_epoch = 0
        finally:
            bar.close()

    def _finish(self, started: float) -> None:
        """End of budget or interruption: validate and save, so the final steps are never lost."""
        if self.state.last_validated != self.state.step:
            self._validate_and_save(started, scheduled=False)
