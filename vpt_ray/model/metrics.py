"""Classification metrics shared by CV, the search and the out-of-sample evaluation, and the
paired differences that compare two models on the same bars (the phase 5 ensemble and its best
single member).

One function, so a number called "accuracy" means the same thing in the search, the final model
and the report. Metric names used as Tune objectives are constants here. `versus_naive` scores
the same predictions against the naive predictor (always the training set's majority direction):
on trending data "accuracy > 0.5" is not skill, accuracy above the majority's is.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

VAL_LOG_LOSS = "val_log_loss"


def classification(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """accuracy (threshold 0.5), AUC and log loss of probabilities `p` for labels `y`."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    if len(y) == 0:
        raise ValueError("classification metrics need at least one sample")
    both = 0 < y.sum() < len(y)
    return {
        "accuracy": float(np.mean((p > 0.5) == (y > 0.5))),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "samples": int(len(y)),
        "base_rate": float(y.mean()),
    }


def log_loss_se(y: np.ndarray, p: np.ndarray, n_eff: float) -> float:
    """SE of a mean log loss: the per-sample losses' spread over `n_eff` effective samples (the
    noise of one score, against which two configurations' difference is judged)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    if len(y) < 2 or not n_eff > 1:
        return float("nan")
    losses = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    return float(losses.std(ddof=1) / np.sqrt(n_eff))


def paired_accuracy_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, n_eff: float
) -> tuple[float, float]:
    """Accuracy of `p_a` minus that of `p_b` on the same labels, and its SE: the per-sample
    difference of the two hit indicators (paired: what both get right or wrong cancels),
    counted as `n_eff` independent samples (overlapping labels: `validation.uncertainty`)."""
    y = np.asarray(y) > 0.5
    d = ((np.asarray(p_a) > 0.5) == y).astype(float) - ((np.asarray(p_b) > 0.5) == y)
    if len(d) < 2 or not n_eff > 1:
        return float(d.mean()) if len(d) else float("nan"), float("nan")
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(n_eff))


def sharpe_difference(
    r_a: np.ndarray, r_b: np.ndarray, periods_per_year: int = 252
) -> tuple[float, float]:
    """Annualized Sharpe of returns `r_a` minus that of `r_b` (the same periods) and its SE by
    Memmel's (2003) correction of the Jobson-Korkie test, which counts the two series'
    correlation: var = (2 - 2 rho + (SR_a^2 + SR_b^2 - 2 SR_a SR_b rho^2) / 2) / T per period."""
    a, b = np.asarray(r_a, dtype=float), np.asarray(r_b, dtype=float)
    if len(a) != len(b) or len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan"), float("nan")
    sa, sb = a.mean() / a.std(ddof=1), b.mean() / b.std(ddof=1)
    rho = float(np.corrcoef(a, b)[0, 1])
    var = (2 - 2 * rho + 0.5 * (sa**2 + sb**2 - 2 * sa * sb * rho**2)) / len(a)
    k = np.sqrt(periods_per_year)
    return float((sa - sb) * k), float(np.sqrt(max(var, 0.0)) * k)


def majority_direction(y_train: np.ndarray) -> int:
    """The naive predictor's constant call: 1 (up) when at least half the training labels are
    up, else 0 (down). A tie goes to up (the label is 1 when the forward return is > 0)."""
    y = np.asarray(y_train, dtype=np.float64)
    y = y[~np.isnan(y)]
    if len(y) == 0:
        raise ValueError("majority_direction: no training labels")
    return int(np.mean(y > 0.5) >= 0.5)


def versus_naive(y: np.ndarray, pred: np.ndarray, majority: int) -> dict[str, float]:
    """Point figures of predictions against the naive predictor (always `majority`) on the same
    labels, with what their standard errors need (the SEs themselves depend on how the samples
    overlap: `vpt_ray.validation.baseline` adds them).

    `pred` is P(up) or a 0/1 call (up when > 0.5, as `classification`). skill = accuracy -
    naive accuracy = the mean of d = [model right] - [naive right] (paired, per sample),
    `skill_sd` its per-sample standard deviation (ddof=1); balanced accuracy = the mean of the
    recall of up and of down labels (NaN when a class is absent)."""
    if majority not in (0, 1):
        raise ValueError(f"versus_naive: majority = {majority!r}: must be 0 (down) or 1 (up)")
    up = np.asarray(y, dtype=np.float64) > 0.5
    call = np.asarray(pred, dtype=np.float64) > 0.5
    if len(up) == 0 or len(up) != len(call):
        raise ValueError(f"versus_naive: {len(up)} labels and {len(call)} predictions")
    right = call == up
    d = right.astype(np.float64) - (up == bool(majority))
    n_up, n_down = int(up.sum()), int((~up).sum())
    recall_up = float(right[up].mean()) if n_up else float("nan")
    recall_down = float(right[~up].mean()) if n_down else float("nan")
    return {
        "naive_direction": "up" if majority else "down",
        "naive_accuracy": float(np.mean(up == bool(majority))),
        "skill": float(d.mean()),
        "skill_sd": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
        "recall_up": recall_up,
        "recall_down": recall_down,
        "balanced_accuracy": 0.5 * (recall_up + recall_down),
        "n_up": n_up,
        "n_down": n_down,
    }
