"""One task-agnostic training loop: budgets, validation, best/last bundles, resume, metrics.jsonl.

The task supplies the batches, a loss function and a validation function; this file knows
nothing about translation or classification. Resuming restores model, optimizer, scheduler,
RNG and data-order state, so a resumed run takes exactly the steps the uninterrupted run would.
"""

import json
import logging
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from nlp_rnn import bundle as bundles
from nlp_rnn.config import TrainConfig
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.task import TrainingSetup

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"


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


class Trainer:
    """Trains `setup.bundle.model`; `setup.validate()` returns metrics including `setup.score_key`."""

    def __init__(self, cfg: TrainConfig, setup: TrainingSetup, out_dir: Path, progress_bar: bool = True) -> None:
        self.cfg, self.setup, self.bundle = cfg, setup, setup.bundle
        self.batcher, self.collate, self.loss_fn, self.validate = setup.batcher, setup.collate, setup.loss_fn, setup.validate
        self.score_key, self.sign = setup.score_key, 1.0 if setup.higher_is_better else -1.0
        self.out_dir, self.progress_bar = Path(out_dir), progress_bar
        self.model = setup.bundle.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
        )
        self.state = Progress()
        self._stop_requested = False

    # ------------------------------------------------------------------ state

    def _trainer_state(self) -> dict:
        return {
            "progress": vars(self.state).copy(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "task": self.setup.state_dict() if self.setup.state_dict else {},
        }

    def _restore(self) -> None:
        last = self.out_dir / "last"
        if not (last / bundles.META).is_file():
            raise NlpRnnError(f"{self.out_dir}: nothing to resume (no last/ bundle); run without --resume")
        saved = bundles.load(last, task=self.bundle.task)
        self.model.load_state_dict(saved.model.state_dict())
        if saved.meta.get("best") is not None:
            self.bundle.meta["best"] = saved.meta["best"]
        state = bundles.load_trainer_state(last)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        if self.setup.load_state_dict:
            self.setup.load_state_dict(state.get("task", {}))
        self.state = Progress(**state["progress"])
        self._truncate_metrics(self.state.step)
        log.info("resumed from %s at step %d", last, self.state.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drops lines a killed run wrote after its last save, so the log matches the resumed run."""
        path = self.out_dir / METRICS
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in kept))

    def _write_metrics(self, record: dict) -> None:
        with open(self.out_dir / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _save(self, which: str) -> None:
        self.bundle.meta["step"] = self.state.step
        trainer_state = self._trainer_state() if which == "last" else None
        bundles.save(self.out_dir / which, self.bundle, trainer_state)

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
        run does next.
        """
        self.model.eval()
        with torch.no_grad():
            metrics = self.validate()
        self.model.train()
        score = self.sign * metrics[self.score_key]  # the scheduler and best/ always maximise
        record = {"step": self.state.step, "elapsed_s": round(self._elapsed(started), 2), **metrics}
        self._write_metrics(record)
        self.state.last_validated = self.state.step
        select = self.setup.select  # False: no early stopping or plateau schedule, the latest model is kept
        if scheduled and select and self.setup.lr_at is None:
            self.scheduler.step(score)
        if score > self.state.best_score or not select:
            self.state.best_score = score if select else self.state.best_score
            self.state.bad_validations = 0 if scheduled else self.state.bad_validations
            self.bundle.meta["best"] = record
            self._save("best")
        elif scheduled:
            self.state.bad_validations += 1
        self.state.elapsed_s = self._elapsed(started)
        self._save("last")
        log.info("step %d: %s", self.state.step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return self.state.bad_validations >= self.cfg.patience

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        log.warning("interrupted: finishing this step and saving last/ (Ctrl-C again to abort)")

    def run(self, resume: bool = False) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._restore()
        elif (self.out_dir / "last" / bundles.META).exists():
            raise NlpRnnError(f"{self.out_dir}: already holds a training run; use --resume, or another --output")
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)
        previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            reason = self._loop()
        finally:
            signal.signal(signal.SIGINT, previous_handler)
        return {"stopped": reason, "step": self.state.step, "best": self.bundle.meta.get("best"), "elapsed_s": self.state.elapsed_s}

    def _loop(self) -> str:
        cfg, st = self.cfg, self.state
        started = time.monotonic()
        self.model.train()
        bar = tqdm(total=cfg.max_steps or None, initial=st.step, disable=not self.progress_bar, unit="step", dynamic_ncols=True, mininterval=1.0)
        window_loss, window_tokens, window_start = 0.0, 0, time.monotonic()
        amp = cfg.precision == "bf16"
        try:
            while True:
                if cfg.max_epochs and st.epoch >= cfg.max_epochs:
                    self._finish(started)
                    return "max_epochs"
                batches = self.batcher.epoch(st.epoch)
                if not batches:
                    raise NlpRnnError("the training data makes no batch (too few examples for the batch settings)")
                while st.batch_in_epoch < len(batches):
                    if self._budget_spent(started) or self._stop_requested:
                        self._finish(started)
                        return "interrupted" if self._stop_requested else "budget"
                    batch = self.collate(batches[st.batch_in_epoch])
                    st.batch_in_epoch += 1
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                        loss_sum, count = self.loss_fn(batch, st.step)
                    loss = loss_sum / count
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.setup.lr_at is not None:
                        for group in self.optimizer.param_groups:
                            group["lr"] = self.setup.lr_at(st.step)
                    if cfg.clip_norm > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
                    self.optimizer.step()
                    st.step += 1
                    window_loss += float(loss_sum.detach())
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
                        self._write_metrics(record)
                        bar.set_postfix(loss=f"{record['train_loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
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
