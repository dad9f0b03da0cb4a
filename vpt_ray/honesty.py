"""The overfitting section of a run: what the search's selection did to the numbers.

Turns the search's per-trial, per-validation-day performance and the chosen model's backtest into
the statistics of `vpt_ray.overfitting`: the probability of backtest overfitting over the trials
(CSCV), the deflated Sharpe ratio of the backtest given how many trials were tried and how much
their Sharpe ratios spread, the chosen configuration's stability across folds, and the per-fold
train-validation gap. The decision rules read these figures.

Trials stopped before fitting every fold (ASHA racing, or the time budget) were still tried: the
selection saw their scores and rejected them, so they count in the deflated Sharpe's number of
trials. PBO, the stability ranks and the spread of the trials' Sharpe ratios need every trial's
figures on the same days and folds, so they use the trials that fitted every fold.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vpt_ray.overfitting import (
    config_stability,
    deflated_sharpe_ratio,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
)
from vpt_ray.search import SearchResult


def _partitions(n_days: int, wanted: int = 16) -> int | None:
    """Largest even number of CSCV blocks <= wanted leaving >= 4 days per block."""
    s = min(wanted, n_days // 4)
    s -= s % 2
    return s if s >= 4 else None


def overfitting_section(result: SearchResult, portfolio_equity: pd.Series) -> dict:
    """PBO, DSR, PSR, stability and train-validation gaps (JSON-ready)."""
    daily = result.daily_perf.fillna(0.0)
    n_completed = daily.shape[1]
    n_trials = max(len(result.trials), n_completed)  # every configuration tried
    out: dict = {
        "n_trials": int(n_trials),
        "n_trials_completed": int(n_completed),
        "validation_days": int(len(daily)),
    }
    if n_trials > n_completed:
        out["trials_note"] = (
            f"{n_trials - n_completed} of {n_trials} trials stopped before fitting every fold "
            "(ASHA or the time budget): they count in the deflated Sharpe's number of trials; "
            f"PBO, stability and the trials' Sharpe spread use the {n_completed} that fitted "
            "every fold"
        )
    folds = result.best["folds"]
    out["train_val_gap_per_fold"] = [
        round(f["train_accuracy"] - f["val_accuracy"], 6) for f in folds
    ]
    out["train_val_gap"] = float(np.mean(out["train_val_gap_per_fold"]))
    s = _partitions(len(daily))
    if n_completed >= 2 and s is not None:
        pbo = probability_of_backtest_overfitting(daily.to_numpy(), n_partitions=s)
        out["pbo"] = float(pbo["pbo"])
        out["pbo_partitions"] = s
        out["pbo_degradation_slope"] = float(pbo["slope"])
    else:
        out["pbo"] = None
        out["pbo_note"] = "needs >= 2 completed trials and >= 16 validation days"
    if n_completed >= 2 and result.fold_scores.shape[0] >= 1:
        stab = config_stability(result.fold_scores, chosen=0, higher_is_better=False)
        out["stability"] = {
            "ranks": [float(r) for r in stab["ranks"]],
            "top_hit_rate": float(stab["top_hit_rate"]),
            "kendall_tau": None if math.isnan(stab["kendall_tau"]) else float(stab["kendall_tau"]),
        }
    returns = portfolio_equity.pct_change().dropna().to_numpy()
    trial_sr = daily.mean() / daily.std(ddof=1).replace(0, np.nan)
    trial_sr = trial_sr.dropna().to_numpy()
    if len(returns) >= 3 and np.std(returns) > 0:
        if len(trial_sr) >= 2:
            dsr = deflated_sharpe_ratio(returns, trial_sr, n_trials=n_trials)
        else:
            dsr = deflated_sharpe_ratio(returns, n_trials=1, sr_variance=0.0)
        out["dsr"] = float(dsr["dsr"])
        out["dsr_benchmark_sr_annual"] = float(dsr["sr0_annualized"])
        out["sharpe_annual"] = float(dsr["sr_annualized"])
        out["psr"] = float(probabilistic_sharpe_ratio(returns, 0.0))
    else:
        out.update(dsr=None, psr=None, dsr_note="the backtest has no return variation")
    return out
