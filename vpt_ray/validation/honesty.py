"""The overfitting section of a run: what the search's selection did to the numbers.

Turns the search's per-trial, per-validation-day performance and the chosen model's backtest into
the statistics of `vpt_ray.validation.overfitting`: the probability of backtest overfitting over
the trials (CSCV), the deflated Sharpe ratio of the backtest given how many trials were tried and
how much their Sharpe ratios spread, the chosen configuration's stability across folds, and the
per-fold train-validation gap. The decision rules read these figures.

Every trial's per-day series is its validation days traded like the backtest, after the
backtest's costs (`backtest.proxy`), so the trials' Sharpe spread that sets the deflated Sharpe's
benchmark is measured on the same kind of series as the Sharpe it deflates (daily portfolio
returns after costs, every backtest day included).

PBO is one input of the overfitting decision, not the decision (`vpt_ray.validation.decision`):
this section also says whether the trials can be told apart at all (their Sharpe spread against the
noise of one Sharpe estimate), how the search's selected configuration ranked in the CSCV
out-of-sample halves, and how often the in-sample winners lost money there.

Trials stopped before fitting every fold (ASHA racing, or the time budget) were still tried: the
selection saw their scores and rejected them, so they count in the deflated Sharpe's number of
trials. PBO, the stability ranks and the spread of the trials' Sharpe ratios need every trial's
figures on the same days and folds, so they use the trials that fitted every fold.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vpt_ray.backtest.proxy import PROXY_NOTE
from vpt_ray.model.search_result import SearchResult
from vpt_ray.validation.overfitting import (
    config_stability,
    deflated_sharpe_ratio,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
)
from vpt_ray.validation.uncertainty import (
    accuracy_se,
    difference_se,
    sharpe_se_annual,
    sharpe_se_per_period,
)


def _partitions(n_days: int, wanted: int = 16) -> int | None:
    """Largest even number of CSCV blocks <= wanted leaving >= 4 days per block."""
    s = min(wanted, n_days // 4)
    s -= s % 2
    return s if s >= 4 else None


def daily_returns(equity: pd.Series, capital: float | None) -> np.ndarray:
    """Daily returns of an equity curve at session closes, the first session's included (its
    return is against `capital`, the equity before it); without `capital` the first is lost."""
    values = np.asarray(equity, dtype=np.float64)
    if capital is not None:
        values = np.concatenate(([float(capital)], values))
    if len(values) < 2:
        return np.empty(0)
    return values[1:] / values[:-1] - 1.0


def overfitting_section(
    result: SearchResult,
    portfolio_equity: pd.Series,
    capital: float | None = None,
    cv_overlap: float = 1.0,
) -> dict:
    """PBO (with the figures that say whether it is decisive and whether the selection costs out
    of sample), DSR, PSR, stability and the train-validation gap with its SE (JSON-ready).

    `capital`: the portfolio's equity before the first session (so the DSR sees every day);
    `cv_overlap`: independent samples per CV sample (`uncertainty.effective_samples`)."""
    daily = result.daily_perf.fillna(0.0)
    n_completed = daily.shape[1]
    n_trials = max(len(result.trials), n_completed)  # every configuration tried
    out: dict = {
        "n_trials": int(n_trials),
        "n_trials_completed": int(n_completed),
        "validation_days": int(len(daily)),
        "trial_returns": PROXY_NOTE,
    }
    if n_trials > n_completed:
        out["trials_note"] = (
            f"{n_trials - n_completed} of {n_trials} trials stopped before fitting every fold "
            "(ASHA or the time budget): they count in the deflated Sharpe's number of trials; "
            f"PBO, stability and the trials' Sharpe spread use the {n_completed} that fitted "
            "every fold"
        )
    out.update(gap_section(result.best["folds"], cv_overlap))
    # the trials' per-period Sharpe ratios on their after-cost validation days, and how far
    # apart they are compared with the noise of one of them: trials closer than that cannot be
    # told apart, so ranking them (PBO) is a coin flip
    trial_sr = (daily.mean() / daily.std(ddof=1).replace(0, np.nan)).dropna().to_numpy()
    if len(trial_sr) >= 2:
        spread = float(np.std(trial_sr, ddof=1))
        noise = sharpe_se_per_period(float(np.median(trial_sr)), len(daily))
        out["trial_sharpe_spread"] = spread
        out["trial_sharpe_se"] = noise
        out["trials_distinct"] = bool(math.isfinite(noise) and spread >= noise)
    s = _partitions(len(daily))
    if n_completed >= 2 and s is not None:
        pbo = probability_of_backtest_overfitting(daily.to_numpy(), n_partitions=s, chosen=0)
        out["pbo"] = float(pbo["pbo"])
        out["pbo_partitions"] = s
        out["pbo_degradation_slope"] = float(pbo["slope"])
        out["prob_oos_loss"] = float(pbo["prob_oos_loss"])  # the IS winners lose out of sample
        out["selected_oos_rank"] = float(pbo["chosen_oos_rank"])  # the search's own choice
        out["selected_prob_oos_loss"] = float(pbo["chosen_prob_oos_loss"])
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
    returns = daily_returns(portfolio_equity, capital)
    out["dsr_days"] = int(len(returns))
    if len(returns) >= 3 and np.std(returns) > 0:
        if len(trial_sr) >= 2:
            dsr = deflated_sharpe_ratio(returns, trial_sr, n_trials=n_trials)
        else:
            dsr = deflated_sharpe_ratio(returns, n_trials=1, sr_variance=0.0)
        out["dsr"] = float(dsr["dsr"])
        out["dsr_benchmark_sr_annual"] = float(dsr["sr0_annualized"])
        out["dsr_trials_sr_variance"] = float(dsr["sr_variance"])
        out["sharpe_annual"] = float(dsr["sr_annualized"])
        out["psr"] = float(probabilistic_sharpe_ratio(returns, 0.0))
    else:
        out.update(dsr=None, psr=None, dsr_note="the backtest has no return variation")
    out["sharpe_se"] = sharpe_se_annual(returns)
    return out


def gap_section(folds: list[dict], cv_overlap: float = 1.0) -> dict:
    """The train-validation accuracy gap (mean over folds of fit-rows accuracy minus validation
    accuracy), per fold, and its SE from the binomial SEs of both accuracies on each fold's
    effective samples."""
    per_fold = [round(f["train_accuracy"] - f["val_accuracy"], 6) for f in folds]
    ses = [
        difference_se(
            accuracy_se(f["train_accuracy"], f["train_samples"] * cv_overlap),
            accuracy_se(f["val_accuracy"], f["val_samples"] * cv_overlap),
        )
        for f in folds
    ]
    return {
        "train_val_gap_per_fold": per_fold,
        "train_val_gap": float(np.mean(per_fold)),
        "train_val_gap_se": math.sqrt(sum(s * s for s in ses)) / len(ses),
    }
