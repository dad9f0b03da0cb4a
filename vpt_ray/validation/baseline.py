"""The baselines a result is measured against, with standard errors: the naive predictor for
accuracy, buy-and-hold for the return.

Why it exists: on trending data "accuracy > 0.52" is not skill. Real GOOG's 2012 labels went up
68.6% of the time, so always predicting "up" (the training set's majority direction) scored more
than a model that passed the seed's accuracy rule. Every accuracy the project reports is
therefore paired with the naive predictor's on the same labels and with the model's skill over
it (accuracy - naive accuracy), each with a standard error that knows the labels overlap
(`uncertainty.effective_samples`: one independent sample per `labels.horizon` bars of a ticker).

- `naive_figures(y, pred, majority, overlap)`: OOS (or any one sample set): accuracy, naive
  accuracy, skill and balanced accuracy with SEs. Skill is a paired difference: its SE is the
  per-sample SD of d = [model right] - [naive right] over sqrt(n_eff), much smaller than the two
  accuracies' SEs combined, since both are scored on the same labels.
- `cv_naive_figures(folds, overlap)`: the same over purged CV folds (each fold's naive predictor
  is its own fit rows' majority; means over folds, SEs with folds independent, as the CV
  accuracy's).
- `excess_over_benchmark(equity, benchmark, capital)`: the strategy's return over equal-weight
  buy-and-hold with the SE of the sum of daily return differences.

Pure numpy; issue 27's learning curve calls `naive_figures` on each training fraction.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vpt_ray.model.metrics import versus_naive
from vpt_ray.validation.uncertainty import accuracy_se, mean_se

FIGURES = ("accuracy", "naive_accuracy", "skill", "balanced_accuracy")


def _nan() -> float:
    return float("nan")


def _balanced_se(f: dict, overlap: float) -> float:
    """SE of the mean of the two recalls, each binomial on its class's effective samples."""
    ru, rd = f["recall_up"], f["recall_down"]
    if not (f["n_up"] and f["n_down"]):
        return _nan()
    se_up = accuracy_se(ru, f["n_up"] * overlap)
    se_down = accuracy_se(rd, f["n_down"] * overlap)
    return 0.5 * math.sqrt(se_up**2 + se_down**2)


def naive_figures(y_true: np.ndarray, pred: np.ndarray, majority: int, overlap: float) -> dict:
    """Accuracy, the naive predictor's accuracy, skill and balanced accuracy of `pred` (P(up) or
    0/1 calls) on `y_true`, each with its SE (`*_se`).

    `majority`: the naive predictor's call, the training labels' majority
    (`metrics.majority_direction`); `overlap`: independent samples per sample
    (`uncertainty.effective_samples(1, stride, horizon)`: 1/horizon for every-bar OOS
    predictions). `effective_samples` = len(y_true) * overlap."""
    if not 0 < overlap <= 1:
        raise ValueError(f"naive_figures: overlap = {overlap!r}: must lie in (0, 1]")
    f = versus_naive(y_true, pred, majority)
    up = np.asarray(y_true, dtype=np.float64) > 0.5
    right = (np.asarray(pred, dtype=np.float64) > 0.5) == up
    n_eff = len(up) * overlap
    acc = float(right.mean())
    d = right.astype(np.float64) - (up == bool(majority))  # paired: the same labels
    return {
        "accuracy": acc,
        "accuracy_se": accuracy_se(acc, n_eff),
        "naive_direction": f["naive_direction"],
        "naive_accuracy": f["naive_accuracy"],
        "naive_accuracy_se": accuracy_se(f["naive_accuracy"], n_eff),
        "skill": f["skill"],
        "skill_se": mean_se(d, n_eff),
        "balanced_accuracy": f["balanced_accuracy"],
        "balanced_accuracy_se": _balanced_se(f, overlap),
        "up_rate": f["n_up"] / (f["n_up"] + f["n_down"]),
        "samples": int(f["n_up"] + f["n_down"]),
        "effective_samples": n_eff,
    }


def cv_naive_figures(folds: list[dict], overlap: float) -> dict:
    """The naive baseline over CV folds: means over the folds of each fold's naive accuracy,
    skill and balanced accuracy (the fold records of `model.folds.iter_folds`, keys `val_*`),
    SEs as for the CV accuracy (per fold on its effective samples, folds independent:
    sqrt(sum se_k^2) / K). Empty when the records predate the naive figures (an older search)."""
    keys = ("val_naive_accuracy", "val_skill", "val_skill_sd", "val_balanced_accuracy")
    if not folds or any(k not in f for f in folds for k in keys):
        return {}
    k = len(folds)
    naive_var = skill_var = bal_var = 0.0
    for f in folds:
        n_eff = f["val_samples"] * overlap
        naive_var += accuracy_se(f["val_naive_accuracy"], n_eff) ** 2
        sd = f["val_skill_sd"]
        skill_var += (sd * sd / n_eff) if n_eff > 0 and sd == sd else math.nan
        bal = {
            "recall_up": f.get("val_recall_up"),
            "recall_down": f.get("val_recall_down"),
            "n_up": f.get("val_n_up", 0),
            "n_down": f.get("val_n_down", 0),
        }
        bal_var += _balanced_se(bal, overlap) ** 2
    mean = {key: float(np.mean([f[f"val_{key}"] for f in folds])) for key in FIGURES[1:]}
    return {
        "naive_accuracy": mean["naive_accuracy"],
        "naive_accuracy_se": math.sqrt(naive_var) / k,
        "naive_directions": [f.get("val_naive_direction") for f in folds],
        "skill": mean["skill"],
        "skill_se": math.sqrt(skill_var) / k,
        "balanced_accuracy": mean["balanced_accuracy"],
        "balanced_accuracy_se": math.sqrt(bal_var) / k,
    }


def excess_over_benchmark(equity: pd.Series, benchmark: pd.Series, capital: float) -> dict:
    """The strategy's total return minus buy-and-hold's over the same sessions, and the SE of the
    sum of the daily return differences (days independent): is the strategy better than holding
    its tickers beyond noise? Both series: equity at each session's close (index: session),
    starting from `capital`."""
    if equity.empty or benchmark.empty:
        return {"excess_return": None, "excess_return_se": None, "days": 0}
    both = pd.concat({"s": equity, "b": benchmark}, axis=1, sort=True).ffill().dropna()
    prev = both.shift(1)
    prev.iloc[0] = capital
    diff = ((both / prev - 1.0)["s"] - (both / prev - 1.0)["b"]).to_numpy()
    excess = float(both["s"].iloc[-1] / capital - both["b"].iloc[-1] / capital)
    se = float(np.std(diff, ddof=1) * math.sqrt(len(diff))) if len(diff) > 2 else _nan()
    return {"excess_return": excess, "excess_return_se": se, "days": len(diff)}
