"""The forecasting task: builds the model, trains (with an optional refit), evaluates beside baselines, plots."""

import bisect
import json
import logging
import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import devices, distributed
from nlp_rnn.bundle import Bundle
from nlp_rnn.data import split_by_weight
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.forecaster import Forecaster
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.evaluation import model_info, table
from nlp_rnn.tasks.forecasting.baselines import baselines, fit_linear, r2, scores
from nlp_rnn.tasks.forecasting.cli import forecast, train_options
from nlp_rnn.tasks.forecasting.config import NAME, ForecastConfig
from nlp_rnn.tasks.forecasting.data import (
    Series,
    category_values,
    check_periods,
    make_windows,
    read_series,
    statistics,
)
from nlp_rnn.tasks.forecasting.interface import Predictor

log = logging.getLogger(__name__)


SELECTION, SELECTED = "selection", "refit.json"  # phase 1 of a refit, and what it chose


class RefitSchedule:
    """Phase 2 of a refit: phase 1's best step count and learning rates, scaled from its epochs to the longer ones."""

    def __init__(self, plan: dict, phase1_epoch_steps: int, epoch_steps: int) -> None:
        self.scale = epoch_steps / phase1_epoch_steps
        self.steps = max(1, round(plan["best"]["step"] * self.scale))
        pairs = sorted(tuple(pair) for pair in plan["lrs"])  # (phase-1 step k, the lr its steps up to k used)
        self.steps_logged, self.lrs = [k for k, _ in pairs], [lr for _, lr in pairs]

    def lr_at(self, step: int) -> float:
        """The learning rate of (0-based) `step`: that of the same point of phase 1's epochs."""
        i = bisect.bisect_left(
            self.steps_logged, step / self.scale + 1
        )  # the first record at or after that step
        return self.lrs[min(i, len(self.lrs) - 1)]


class ForecastTask(tasks.Task):
    name = NAME
    config_cls = ForecastConfig
    needs_tokenizer = False
    components = (("recurrent layers", ("rnn.",)), ("head", ("head.",)))
    train_command = tasks.TrainCommand(
        "forecaster", train_options, config_required=False, example_config="configs/nyse.yaml"
    )

    def commands(self) -> list:
        return [forecast]

    def build_model(self, cfg: ForecastConfig, tokenizer, meta: dict) -> Forecaster:
        categories = sum(len(v) for v in meta["categories"].values())
        return Forecaster(cfg.model, len(cfg.data.inputs), cfg.data.lags, categories)

    def fit(
        self,
        cfg: ForecastConfig,
        out_dir: Path,
        tokenizer: tasks.TokenizerChoice,
        resume: bool,
        progress_bar: bool,
        device: torch.device,
    ) -> dict:
        if not cfg.data.refit:
            return super().fit(cfg, out_dir, tokenizer, resume, progress_bar, device)
        from nlp_rnn.train import METRICS, Trainer, check_resume

        selection = out_dir / SELECTION
        if not (selection / SELECTED).is_file():
            if not resume:  # (a resumed phase 1 resumes the selection run, not this folder's)
                check_resume(out_dir, resume)
            log.info(
                "refit, phase 1 of 2: choosing the number of epochs on the validation rows (in %s)", selection
            )
            setup = self.prepare(cfg, selection, tokenizer)
            summary = Trainer(cfg.train, setup, selection, progress_bar, device).run(
                resume and (selection / "last").is_dir()
            )
            if not summary["best"]:
                raise NlpRnnError(f"{selection}: the selection run validated no model to refit")
            lrs = [
                (r["step"], r["lr"])
                for r in map(json.loads, (selection / METRICS).read_text().splitlines())
                if "lr" in r
            ]
            plan = {"best": summary["best"], "lrs": lrs or [(summary["best"]["step"], cfg.train.lr)]}
            if distributed.is_main():
                (selection / SELECTED).write_text(json.dumps(plan))
            distributed.barrier()
        plan = json.loads((selection / SELECTED).read_text())
        log.info(
            "refit, phase 2 of 2: the whole training period, as long as the best model of phase 1 trained"
        )
        setup = self.prepare(cfg, out_dir, tokenizer, refit=plan)
        summary = Trainer(
            replace(cfg.train, max_steps=setup.bundle.meta["refit"]["steps"], max_epochs=0, max_minutes=0),
            setup,
            out_dir,
            progress_bar,
            device,
        ).run(resume and (out_dir / "last").is_dir())
        return dict(summary, score_key=setup.score_key)

    def prepare(
        self,
        cfg: ForecastConfig,
        out_dir: Path,
        tokenizer: tasks.TokenizerChoice,
        refit: Optional[dict] = None,
    ) -> tasks.TrainingSetup:
        """The training set-up; with `refit` (phase 1's best record and learning rates), the whole training period."""
        d = cfg.data
        series = read_series(d, d.data)
        if series.rows <= d.lags:
            raise NlpRnnError(
                f"{series.name}: {series.rows} rows, but a window needs {d.lags} earlier rows and a row to predict"
            )
        if series.train is None:
            raise NlpRnnError(
                "no split rule: give --split-column COLUMN, or --date-column COLUMN and --test-from DATE"
            )
        check_periods(series)
        stats = statistics(series, list(dict.fromkeys([d.target, *d.inputs])))
        known = category_values(series, d.categorical)
        win = make_windows(series, d.inputs, d.target, d.lags, stats, known)
        period = series.train[d.lags :]  # (N-L,)
        train_idx = period.nonzero().squeeze(1)
        if train_idx.numel() < 10:
            raise NlpRnnError(
                f"{series.name}: only {train_idx.numel()} training rows with {d.lags} earlier rows; need at least 10"
            )
        cut = int(train_idx.numel() * (1 - d.valid_fraction))
        fit, valid = train_idx[:cut], train_idx[cut:]
        if fit.numel() < 1 or valid.numel() < 2:
            raise NlpRnnError(
                f"{series.name}: data.valid_fraction {d.valid_fraction} leaves {fit.numel()} training and "
                f"{valid.numel()} validation rows; need at least 1 and 2"
            )
        schedule = None
        if refit is not None:
            schedule = RefitSchedule(
                refit, math.ceil(fit.numel() / d.batch_size), math.ceil(train_idx.numel() / d.batch_size)
            )
            fit, valid = train_idx, train_idx[:0]
        meta = {
            "target": d.target,
            "features": list(d.inputs),
            "categorical": list(d.categorical),
            "categories": known,
            "lags": d.lags,
            "stats": stats,
            "split": {"column": d.split_column, "date_column": d.date_column, "test_from": d.test_from},
            "data": {
                "train": series.name,
                "training_rows": int(fit.numel()),
                "validation_rows": int(valid.numel()),
                "test_rows": int((~period).sum()),
            },
        }
        if schedule is not None:
            meta["refit"] = {"selection": refit["best"], "steps": schedule.steps}
            log.info(
                "refit: %d steps on %d rows (phase 1's best: step %d of %d-row epochs, val_mse %.4g)",
                schedule.steps,
                fit.numel(),
                refit["best"]["step"],
                cut,
                refit["best"]["val_mse"],
            )
        bundle = tasks.new_bundle(self, cfg, None, meta)
        model: Forecaster = bundle.model
        if cfg.model.linear_skip and cfg.model.start_linear:
            design = torch.cat(
                [win.onehot[fit], win.windows[fit].flatten(1), torch.ones(fit.numel(), 1)], dim=1
            ).double()
            coefs = fit_linear(design, win.target[fit].double()).float()
            categories = win.onehot.size(1)
            model.start_from_linear(coefs[categories:-1], coefs[:categories], float(coefs[-1]))
        seed, size = cfg.train.seed, d.batch_size

        class Batcher:
            def epoch(self, epoch: int) -> list[list[int]]:
                order = fit.tolist()
                random.Random(seed * 100_003 + epoch).shuffle(order)
                return [order[i : i + size] for i in range(0, len(order), size)]

            def shard(self, index: list[int], rank: int, world: int) -> list[int]:
                return split_by_weight(index, [1] * len(index), rank, world)

        def collate(index: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            rows = torch.tensor(index, device="cpu")
            return win.windows[rows], win.onehot[rows], win.target[rows]

        def loss_fn(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], step: int):
            windows, onehot, target = batch
            predicted = model(windows, onehot)
            return ((predicted - target) ** 2).sum(), target.numel()

        def validate() -> dict:
            rows, name = (valid, "val") if schedule is None else (fit, "train")  # a refit has no unseen rows
            predicted = model(*devices.move((win.windows[rows], win.onehot[rows]), devices.of(model))).cpu()
            y = win.target[rows]
            return {f"{name}_mse": float(((predicted - y) ** 2).mean()), f"{name}_r2": r2(y, predicted)}

        return tasks.TrainingSetup(
            bundle=bundle,
            batcher=Batcher(),
            collate=collate,
            loss_fn=loss_fn,
            validate=validate,
            score_key="val_mse" if schedule is None else "train_mse",
            higher_is_better=False,
            select=schedule is None,
            lr_at=schedule and schedule.lr_at,
        )

    def wrap(self, bundle: Bundle) -> Predictor:
        return Predictor(bundle)

    def evaluate(self, bundle: Bundle, request: tasks.EvalRequest) -> dict:
        tasks.fp32_only(request, "forecasters")
        predictor = Predictor(bundle)
        d, lags = predictor.cfg.data, predictor.cfg.data.lags
        sets = [predictor.read(str(p), split=True) for p in request.data]
        if request.dataset:
            sets.append(predictor.read(dataset=request.dataset, split=True))
        if not sets:
            raise NlpRnnError(
                "no test set: give --data FILE or --dataset NAME (the whole series; the bundle's split rule "
                "picks the test period)"
            )
        results = []
        for series in sets:
            if series.train is None:
                raise NlpRnnError(f"{series.name}: the bundle has no split rule to find the test period")
            check_periods(series)
            started = time.perf_counter()
            predicted, _ = predictor.predict(series)
            seconds = time.perf_counter() - started
            period = series.train[lags:]
            test = (~period).nonzero().squeeze(1)
            if test.numel() == 0:
                raise NlpRnnError(f"{series.name}: no test-period rows with {lags} earlier rows")
            y = series.numbers[d.target][lags:][test]
            model_pred = predicted[lags:][test]
            fit = period.nonzero().squeeze(1)
            rows = {"nlp-rnn " + predictor.cfg.model.cell: scores(y, model_pred)}
            for name, pred in baselines(
                series, d.inputs, d.target, lags, predictor.meta["categories"], fit, test
            ).items():
                rows[name] = scores(y, pred)
            results.append(
                {"name": series.name, "rows": int(test.numel()), "models": rows, "seconds": round(seconds, 3)}
            )
            if request.plot is not None:
                plot_forecast(series, test + lags, y, model_pred, d.target, request.plot)
        return {
            "task": self.name,
            "model": model_info(bundle),
            "target": d.target,
            "lags": lags,
            "sets": results,
        }

    def report(self, result: dict) -> list[str]:
        lines = []
        for s in result["sets"]:
            lines.append(
                f"{s['name']}: {s['rows']} test rows, target {result['target']}, {result['lags']} lags"
            )
            lines += table(
                ["model", "R²", "MSE", "MAE"],
                [
                    [name, f"{m['r2']:.4f}", f"{m['mse']:.5f}", f"{m['mae']:.5f}"]
                    for name, m in s["models"].items()
                ],
            )
        return lines

    def describe(self, bundle: Bundle) -> dict:
        m = bundle.meta
        return {
            "target": m["target"],
            "features": m["features"],
            "lags": m["lags"],
            "categorical": [f"{c} ({len(v)} values)" for c, v in m["categories"].items()] or None,
        }


def plot_forecast(
    series: Series, rows: torch.Tensor, actual: torch.Tensor, predicted: torch.Tensor, target: str, path: Path
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NlpRnnError("--plot needs matplotlib: pip install 'nlp-rnn[plot]'") from None
    fig, ax = plt.subplots(figsize=(10, 4))
    x = rows.tolist()
    ax.plot(x, actual.tolist(), linewidth=0.8, label="actual", color="#444444")
    ax.plot(x, predicted.tolist(), linewidth=0.8, label="forecast", color="#d62728", alpha=0.85)
    if series.dates:
        ticks = x[:: max(1, len(x) // 8)]
        ax.set_xticks(ticks, [series.dates[i] for i in ticks], rotation=20)
    ax.set_ylabel(target)
    ax.set_title(f"{Path(series.name).name}: test period, R² {r2(actual, predicted):.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


TASK = tasks.register(ForecastTask())
