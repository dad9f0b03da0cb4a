"""Classification metrics shared by CV, the search and the out-of-sample evaluation, and the
paired differences that compare two models on the same bars (the phase 5 ensemble and its best
single member).

One function, so a number called "accuracy" means the same thing in the search, the final model
and the report. Metric names used as Tune objectives are constants here.
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
