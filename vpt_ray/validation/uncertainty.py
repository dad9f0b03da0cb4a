"""Standard errors of the figures the decision compares, so a rule fires on a difference larger
than noise, not on any difference.

- Accuracy: binomial, sqrt(p (1 - p) / n_eff). Labels overlap: the label at bar t spans bars
  t+1 .. t+h, so samples closer than `labels.horizon` bars share most of their label window and
  are not independent. `effective_samples` counts one independent sample per `horizon` bars of a
  ticker (n * min(1, stride / horizon)): the CV samples are every `labels.stride`-th bar, the
  out-of-sample predictions every bar. Tickers are treated as independent (exact on the synthetic
  market, optimistic on real markets, where tickers co-move).
- Sharpe ratio: Mertens (2002) / Lo (2002) under non-normal IID returns,
  sqrt((1 - skew SR + (kurt - 1) / 4 SR^2) / (T - 1)) per period, times sqrt(252) for the
  annualized daily Sharpe (`overfitting.sharpe_std_error`).
- A difference of two independent estimates: sqrt(se_a^2 + se_b^2).
- A mean of per-sample values (log loss): sd / sqrt(n_eff).

Pure numpy; every function returns a plain float (NaN when undefined).
"""

from __future__ import annotations

import math

import numpy as np

from vpt_ray.validation.overfitting import SharpeStats, sharpe_std_error

TRADING_DAYS = 252


def effective_samples(n: int, stride: int, horizon: int) -> float:
    """Independent samples among `n` taken every `stride` bars with `horizon`-bar labels."""
    if n < 0 or stride < 1 or horizon < 1:
        raise ValueError(f"effective_samples: n={n}, stride={stride}, horizon={horizon}")
    return float(n) * min(1.0, stride / horizon)


def accuracy_se(accuracy: float, n_eff: float) -> float:
    """Binomial standard error of an accuracy measured on `n_eff` independent samples."""
    if not (n_eff > 0 and 0.0 <= accuracy <= 1.0):
        return float("nan")
    return math.sqrt(accuracy * (1.0 - accuracy) / n_eff)


def mean_accuracy_se(accuracies: list[float], n_effs: list[float]) -> float:
    """SE of the mean of per-fold accuracies (folds' samples independent of each other)."""
    if not accuracies:
        return float("nan")
    var = sum(accuracy_se(a, n) ** 2 for a, n in zip(accuracies, n_effs, strict=True))
    return math.sqrt(var) / len(accuracies)


def difference_se(*ses: float | None) -> float:
    """SE of a sum or difference of independent estimates with these SEs (NaN if any is
    missing)."""
    vals = [float("nan") if s is None else float(s) for s in ses]
    return math.sqrt(sum(s * s for s in vals)) if all(math.isfinite(s) for s in vals) else math.nan


def mean_se(values: np.ndarray, n_eff: float) -> float:
    """SE of the mean of per-sample `values` counted as `n_eff` independent samples."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2 or not n_eff > 1:
        return float("nan")
    return float(np.std(v, ddof=1) / math.sqrt(n_eff))


def sharpe_se_annual(daily_returns: np.ndarray) -> float:
    """SE of the annualized Sharpe ratio of daily returns (Mertens 2002; NaN if undefined)."""
    r = np.asarray(daily_returns, dtype=np.float64)
    if len(r) < 3 or not np.isfinite(r).all() or np.std(r) == 0:
        return float("nan")
    try:
        return sharpe_std_error(SharpeStats.from_returns(r)) * math.sqrt(TRADING_DAYS)
    except ValueError:
        return float("nan")


def sharpe_se_per_period(sr: float, n_obs: int) -> float:
    """SE of one per-period Sharpe estimate over `n_obs` periods under normal returns (Lo 2002):
    sqrt((1 + SR^2 / 2) / (T - 1)). Used as the noise floor two trials' Sharpe ratios must
    clear to be told apart."""
    if n_obs < 2 or not math.isfinite(sr):
        return float("nan")
    return math.sqrt((1.0 + 0.5 * sr * sr) / (n_obs - 1))
