"""Forecasting numeric series: known processes recovered, no look-ahead, refits, the NYSE series end to end."""

import csv
import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import NYSE

from nlp_rnn.cli import main
from nlp_rnn.config import TrainConfig
from nlp_rnn.nn.forecaster import ForecastModelConfig
from nlp_rnn.tasks.base import load, train
from nlp_rnn.tasks.forecasting import (
    ForecastConfig,
    ForecastDataConfig,
    Predictor,
    fit_linear,
    lagged_design,
    read_series,
    statistics,
)


def simulate_ar(
    path: Path, n: int, coefs: list[float], seed: int, noise: float = 1.0, test_from: int = 0
) -> torch.Tensor:
    """A CSV of y_t = sum_k coefs[k] * y_{t-1-k} + e_t with a `train` column (the last 30 % test) and a weekday."""
    rng = random.Random(seed)
    y = [0.0] * len(coefs)
    for _ in range(n + 200):
        y.append(sum(c * y[-1 - k] for k, c in enumerate(coefs)) + rng.gauss(0, noise))
    y = y[-n:]
    cut = test_from or int(n * 0.7)
    days = ["mon", "tues", "wed", "thur", "fri"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["date", "day", "y", "train"])
        for i, value in enumerate(y):
            writer.writerow([f"2000-01-{i:05d}", days[i % 5], f"{value:.6f}", "TRUE" if i < cut else "FALSE"])
    return torch.tensor(y, dtype=torch.float64)


def ar_config(path: Path, lags: int, **train) -> ForecastConfig:
    return ForecastConfig(
        data=ForecastDataConfig(data=str(path), target="y", lags=lags, split_column="train"),
        model=ForecastModelConfig(cell="gru", hidden_size=8),
        train=TrainConfig(**{"lr": 0.01, "validate_every": 40, "log_every": 40, "max_steps": 400, **train}),
    )


def test_ar_baseline_recovers_the_coefficients_of_a_simulated_ar2(tmp_path: Path) -> None:
    simulate_ar(tmp_path / "ar2.csv", 4000, [0.6, -0.3], seed=1)
    series = read_series(ForecastDataConfig(target="y", split_column="train"), str(tmp_path / "ar2.csv"))
    design = lagged_design(series, ["y"], 2, None)
    period = series.train[2:]
    coefs = fit_linear(design[period], series.numbers["y"][2:][period])
    assert coefs[1:].tolist() == pytest.approx([0.6, -0.3], abs=0.05) and abs(float(coefs[0])) < 0.1


def test_forecaster_reaches_the_r2_of_the_true_coefficients(tmp_path: Path, capsys) -> None:
    y = simulate_ar(tmp_path / "ar.csv", 3000, [0.5, 0.2], seed=2)
    summary = train("forecasting", ar_config(tmp_path / "ar.csv", 3), tmp_path / "run", progress_bar=False)
    assert summary["best"]["val_r2"] > 0.3
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "run"),
                "--data",
                str(tmp_path / "ar.csv"),
                "--report",
                str(tmp_path / "r.json"),
                "--plot",
                str(tmp_path / "plot.png"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "r.json").read_text())["sets"][0]
    test = torch.arange(2100, 3000)
    truth = 0.5 * y[test - 1] + 0.2 * y[test - 2]
    best_possible = 1 - float(((y[test] - truth) ** 2).sum() / ((y[test] - y[test].mean()) ** 2).sum())
    assert result["rows"] == 900 and abs(result["models"]["nlp-rnn gru"]["r2"] - best_possible) < 0.02
    assert (
        abs(result["models"]["AR(3)"]["r2"] - best_possible) < 0.02
        and result["models"]["yesterday"]["r2"] < best_possible
    )
    assert (tmp_path / "plot.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "AR(3) + " not in out and "yesterday" in out and "R²" in out


def test_statistics_use_the_training_period_and_forecasts_never_look_ahead(tmp_path: Path) -> None:
    simulate_ar(tmp_path / "ar.csv", 600, [0.7], seed=3)
    cfg = ar_config(tmp_path / "ar.csv", 4, max_steps=30)
    train("forecasting", cfg, tmp_path / "run", progress_bar=False)
    data = ForecastDataConfig(target="y", split_column="train")
    before = statistics(read_series(data, str(tmp_path / "ar.csv")), ["y"])
    rows = (tmp_path / "ar.csv").read_text().splitlines()
    changed = rows[:500] + [
        line.replace(line.split(",")[2], "99.0") for line in rows[500:]
    ]  # test-period rows only
    (tmp_path / "changed.csv").write_text("\n".join(changed) + "\n")
    assert statistics(read_series(data, str(tmp_path / "changed.csv")), ["y"]) == before

    predictor = Predictor(load(tmp_path / "run"))
    original, _ = predictor.predict(predictor.read(str(tmp_path / "ar.csv")))
    altered, _ = predictor.predict(predictor.read(str(tmp_path / "changed.csv")))
    # Rows from index 499 on changed: the forecast of row 499 (from rows 495..498) must not, that of row 500 must.
    assert (
        torch.equal(original[:500].nan_to_num(), altered[:500].nan_to_num()) and original[500] != altered[500]
    )
    assert original[:4].isnan().all() and not original[4:].isnan().any()

    reloaded = Predictor(load(tmp_path / "run" / "best"))  # the bundle round-trips its predictions
    again, _ = reloaded.predict(reloaded.read(str(tmp_path / "ar.csv")))
    assert torch.equal(again.nan_to_num(), original.nan_to_num())


def test_refit_trains_on_the_whole_training_period_as_long_as_early_stopping_chose(tmp_path: Path) -> None:
    simulate_ar(
        tmp_path / "ar.csv", 1000, [0.6], seed=4
    )  # 700 training rows, 4 lags: 556 fit + 140 validation rows
    cfg = ar_config(
        tmp_path / "ar.csv", 4, max_steps=120, validate_every=10, log_every=10, lr_patience=0, lr_factor=0.5
    )
    cfg = replace(cfg, data=replace(cfg.data, refit=True, batch_size=64))
    summary = train("forecasting", cfg, tmp_path / "run", progress_bar=False)
    plan = json.loads((tmp_path / "run" / "selection" / "refit.json").read_text())
    chosen = plan["best"]["step"]  # phase 1 epochs have ceil(556/64) = 9 steps, phase 2 ceil(696/64) = 11
    meta = load(tmp_path / "run").meta
    assert (
        meta["refit"]["steps"] == round(chosen * 11 / 9) == summary["step"]
        and meta["data"]["training_rows"] == 696
    )
    assert meta["refit"]["selection"]["val_mse"] == pytest.approx(
        summary_best_val(tmp_path / "run" / "selection")
    )
    phase1 = {r["step"]: r["lr"] for r in read_metrics(tmp_path / "run" / "selection") if "lr" in r}
    phase2 = {r["step"]: r["lr"] for r in read_metrics(tmp_path / "run") if "lr" in r}
    assert len(set(phase1.values())) > 1, (
        "the plateau schedule should have lowered the learning rate in phase 1"
    )
    # Step k of phase 2 used the rate of the same point of phase 1's epochs.
    for step, lr in phase2.items():
        assert lr == next(rate for k, rate in sorted(phase1.items()) if k >= (step - 1) * 9 / 11 + 1)
    # The refit keeps its last model as best/; resuming after phase 1 repeats nothing of it and gives the same model.
    assert load(tmp_path / "run" / "best").meta["step"] == summary["step"]
    predictor = Predictor(load(tmp_path / "run"))
    before, _ = predictor.predict(predictor.read(str(tmp_path / "ar.csv")))
    (
        shutil.rmtree(tmp_path / "run" / "last"),
        shutil.rmtree(tmp_path / "run" / "best"),
        (tmp_path / "run" / "metrics.jsonl").unlink(),
    )
    again = train("forecasting", cfg, tmp_path / "run", resume=True, progress_bar=False)
    assert (
        again["step"] == summary["step"]
        and json.loads((tmp_path / "run" / "selection" / "refit.json").read_text()) == plan
    )
    predictor = Predictor(load(tmp_path / "run"))
    after, _ = predictor.predict(predictor.read(str(tmp_path / "ar.csv")))
    assert torch.equal(before.nan_to_num(), after.nan_to_num())


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def summary_best_val(run: Path) -> float:
    return min(r["val_mse"] for r in read_metrics(run) if "val_mse" in r)


def test_cli_end_to_end_on_nyse(tmp_path: Path, capsys) -> None:
    args = [
        "train",
        "forecaster",
        "--output",
        str(tmp_path / "run"),
        "--data",
        str(NYSE),
        "--target",
        "log_volume",
        "--features",
        "DJ_return,log_volume,log_volatility",
        "--lags",
        "5",
        "--categorical",
        "day_of_week",
        "--split-column",
        "train",
        "--max-steps",
        "150",
        "--quiet",
    ]
    assert main(args) == 0
    assert (
        main(
            [
                "forecast",
                "--model",
                str(tmp_path / "run"),
                "--data",
                str(NYSE),
                "--output",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows[0] == ["row", "log_volume", "forecast"] and len(rows) == 6051 + 2
    assert (
        all(r[2] == "" for r in rows[1:6])
        and rows[6][2] != ""
        and rows[-1][0] == "next"
        and rows[-1][2] != ""
    )
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "run"),
                "--data",
                str(NYSE),
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "r.json").read_text())["sets"][0]
    assert result["rows"] == 1770
    assert result["models"]["AR(5)"]["r2"] == pytest.approx(
        0.4129, abs=5e-4
    )  # ISLP's figures, reproduced exactly
    assert result["models"]["AR(5) + day_of_week"]["r2"] == pytest.approx(0.4596, abs=5e-4)
    assert result["models"]["nlp-rnn gru"]["r2"] > 0.3
    assert main(["info", str(tmp_path / "run")]) == 0
    assert "day_of_week (5 values)" in capsys.readouterr().out


def test_bad_forecasting_input_is_one_line_naming_the_culprit(tmp_path: Path, capsys, caplog) -> None:
    simulate_ar(tmp_path / "ok.csv", 300, [0.5], seed=4)
    lines = (tmp_path / "ok.csv").read_text().splitlines()

    def variant(name: str, edit) -> str:
        rows = list(lines)
        edit(rows)
        (tmp_path / name).write_text("\n".join(rows) + "\n")
        return str(tmp_path / name)

    def error(data: str, *extra: str) -> str:
        code = main(
            [
                "train",
                "forecaster",
                "--output",
                str(tmp_path / f"run-{len(extra)}-{Path(data).stem}"),
                "--data",
                data,
                "--target",
                "y",
                "--split-column",
                "train",
                "--max-steps",
                "2",
                "--quiet",
                *extra,
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return err

    assert "missing column 'volume' (header has: date, day, y, train)" in error(
        str(tmp_path / "ok.csv"), "--features", "volume"
    )
    text = variant("text.csv", lambda r: r.__setitem__(7, r[7].replace(r[7].split(",")[2], "abc")))
    assert "text.csv:8: column 'y' holds 'abc', not a number" in error(text)
    assert "empty.csv:5: empty value in column 'y'" in error(
        variant("empty.csv", lambda r: r.__setitem__(4, "2000-01-00003,thur,,TRUE"))
    )
    assert "NaN and infinite values are refused" in error(
        variant("nan.csv", lambda r: r.__setitem__(9, r[9].replace(r[9].split(",")[2], "nan")))
    )
    assert "but a window needs 5 earlier rows" in error(
        variant("short.csv", lambda r: r.__delitem__(slice(5, None))), "--lags", "5"
    )
    flipped = variant(
        "flipped.csv",
        lambda r: r.__setitem__(
            slice(1, None),
            [x.replace("TRUE", "X").replace("FALSE", "TRUE").replace("X", "FALSE") for x in r[1:]],
        ),
    )
    assert "has no training rows before it" in error(flipped)
    # A weekday never seen in training maps to the 'unknown' slot (a warning, not an error).
    simulate_ar(tmp_path / "week.csv", 300, [0.5], seed=5)
    assert (
        main(
            [
                "train",
                "forecaster",
                "--output",
                str(tmp_path / "wk"),
                "--data",
                str(tmp_path / "week.csv"),
                "--target",
                "y",
                "--categorical",
                "day",
                "--split-column",
                "train",
                "--max-steps",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    week = (tmp_path / "week.csv").read_text().replace(",fri,", ",sat,")
    (tmp_path / "week2.csv").write_text(week)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "wk"), "--data", str(tmp_path / "week2.csv")]) == 0
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if "unknown" in r.getMessage()] == [
        "60 categorical values never seen in training map to the 'unknown' slot (all-zero one-hot)"
    ]
    for command in (["translate", "x"], ["classify", "x"], ["generate", "x"]):
        assert main([command[0], "--model", str(tmp_path / "wk"), command[1]]) == 2
        assert "this is a forecasting model" in capsys.readouterr().err
