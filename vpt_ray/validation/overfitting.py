"""Overfitting statistics for a whole search: deflated Sharpe, PBO and configuration stability.

A search over many trials inflates the best result by selection alone. This module measures that
inflation so "overfitting detected" is a number, not an opinion:

- `probabilistic_sharpe_ratio` (PSR, Bailey & Lopez de Prado 2012): the probability that the true
  Sharpe ratio exceeds a benchmark, given the track-record length and the returns' skewness and
  kurtosis.
- `expected_max_sharpe` (the False Strategy theorem, Bailey & Lopez de Prado 2014): the Sharpe ratio
  the best of `n_trials` skill-less trials reaches by luck.
- `deflated_sharpe_ratio` (DSR, Bailey & Lopez de Prado 2014): the PSR against that luck benchmark.
- `probability_of_backtest_overfitting` (PBO via CSCV, Bailey, Borwein, Lopez de Prado & Zhu 2015):
  how often the in-sample winner ranks in the bottom half out of sample.
- `config_stability`: how consistently the chosen configuration ranks near the top across CV folds.

Units: every Sharpe ratio here is NON-annualized, per period of the returns given (the portfolio's
returns are daily, so a daily Sharpe: annualized = per-period * sqrt(252)). The trials' Sharpe
ratios passed to the DSR must be in the same per-period units as the returns. Pure numpy/scipy, no
Ray; PBO with the default 16 partitions costs C(16, 8) = 12,870 rankings of the N trials (well under
a second for N = 100 with the Sharpe metric).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

EULER_GAMMA = float(np.euler_gamma)
"""Euler-Mascheroni constant, used by the False Strategy theorem's approximation."""

Metric = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SharpeStats:
    """The four numbers PSR and DSR need about one return series.

    `sr` is the per-period (non-annualized) Sharpe ratio, `n_obs` the number of returns, `skew` the
    skewness and `kurtosis` the NON-excess (Pearson) kurtosis: 3 for normal returns.
    """

    sr: float
    n_obs: int
    skew: float = 0.0
    kurtosis: float = 3.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.sr):
            raise ValueError(f"sr must be finite, got {self.sr}")
        if self.n_obs < 2:
            raise ValueError(f"n_obs must be >= 2 returns, got {self.n_obs}")
        if not (math.isfinite(self.skew) and math.isfinite(self.kurtosis)):
            raise ValueError(f"skew and kurtosis must be finite, got {self.skew}, {self.kurtosis}")
        if self.kurtosis < 1:
            raise ValueError(
                f"kurtosis is the non-excess kurtosis (3 for normal returns) and is >= 1, got "
                f"{self.kurtosis}: pass excess kurtosis + 3"
            )

    @classmethod
    def from_returns(cls, returns: np.ndarray) -> SharpeStats:
        """Per-period Sharpe (mean / sample std), bias-corrected skewness and kurtosis (the same
        estimators as pandas' `skew()` and `kurt() + 3`)."""
        r = _check_returns(returns)
        sd = float(np.std(r, ddof=1))
        if sd == 0:
            raise ValueError("returns have zero variance: the Sharpe ratio is undefined")
        return cls(
            sr=float(np.mean(r)) / sd,
            n_obs=len(r),
            skew=float(stats.skew(r, bias=False)),
            kurtosis=float(stats.kurtosis(r, fisher=False, bias=False)),
        )


def _check_returns(returns: np.ndarray) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be a 1-D array of per-period returns, got shape {r.shape}")
    if len(r) < 3:
        raise ValueError(f"need at least 3 returns, got {len(r)}")
    if not np.isfinite(r).all():
        raise ValueError("returns contain NaN or inf")
    return r


def _as_stats(returns_or_stats: np.ndarray | SharpeStats) -> SharpeStats:
    if isinstance(returns_or_stats, SharpeStats):
        return returns_or_stats
    return SharpeStats.from_returns(returns_or_stats)


def sharpe_ratio(returns: np.ndarray) -> float:
    """Per-period (non-annualized) Sharpe ratio: mean / sample standard deviation."""
    return SharpeStats.from_returns(returns).sr


def sharpe_std_error(s: SharpeStats) -> float:
    """Standard error of the estimated Sharpe ratio under non-normal IID returns (Mertens 2002,
    as used in Bailey & Lopez de Prado 2012, eq. 4 / 2014, eq. 9)."""
    var = 1.0 - s.skew * s.sr + (s.kurtosis - 1.0) / 4.0 * s.sr**2
    if var <= 0:
        raise ValueError(
            f"Sharpe variance term 1 - skew*SR + (kurt-1)/4*SR^2 = {var:.4g} is not positive "
            f"(SR={s.sr:.4g}, skew={s.skew:.4g}, kurt={s.kurtosis:.4g}): inconsistent moments"
        )
    return math.sqrt(var / (s.n_obs - 1))


def probabilistic_sharpe_ratio(
    returns: np.ndarray | SharpeStats, sr_benchmark: float = 0.0
) -> float:
    """PSR: probability that the true per-period Sharpe exceeds `sr_benchmark` (per period).

    PSR = Phi((SR - SR*) * sqrt(T - 1) / sqrt(1 - skew*SR + (kurt - 1)/4 * SR^2)).
    `returns` is a 1-D array of per-period returns or a `SharpeStats`.
    """
    s = _as_stats(returns)
    return float(stats.norm.cdf((s.sr - sr_benchmark) / sharpe_std_error(s)))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum Sharpe of `n_trials` independent skill-less trials (the False Strategy
    theorem, Bailey & Lopez de Prado 2014, eq. 6), in the units of `sr_variance`'s Sharpe ratios:

    E[max SR] ~ sqrt(V) * ((1 - gamma) * Z^-1(1 - 1/N) + gamma * Z^-1(1 - 1/(N e))).

    One trial involves no selection, so its benchmark is 0.
    """
    if int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials}")
    if not (math.isfinite(sr_variance) and sr_variance >= 0):
        raise ValueError(f"sr_variance must be finite and >= 0, got {sr_variance}")
    n = int(n_trials)
    if n == 1:
        return 0.0
    z = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + EULER_GAMMA * stats.norm.ppf(
        1 - 1 / (n * math.e)
    )
    return float(math.sqrt(sr_variance) * z)


def deflated_sharpe_ratio(
    returns: np.ndarray | SharpeStats,
    trial_sharpes: np.ndarray | None = None,
    *,
    n_trials: int | None = None,
    sr_variance: float | None = None,
    periods_per_year: int = 252,
) -> dict:
    """DSR of the chosen strategy given the trials of the search that produced it.

    `returns`: the chosen strategy's per-period returns (or its `SharpeStats`). `trial_sharpes`:
    the per-period Sharpe ratio of every trial tried (same units as `returns`). Explicit `n_trials`
    (e.g. an effective number of independent trials) and `sr_variance` override what
    `trial_sharpes` gives; the variance of the trials' Sharpes uses ddof=1.

    Returns a dict: `dsr` = PSR(SR0), the probability that the true Sharpe beats the best of
    `n_trials` lucky ones; `sr` and `sr0` (the deflated benchmark, expected max Sharpe), both per
    period; `sr_annualized` and `sr0_annualized` (times sqrt(periods_per_year), for reports only);
    `psr` = PSR against 0; `n_trials`, `sr_variance`, `n_obs`, `skew`, `kurtosis`.
    """
    s = _as_stats(returns)
    if trial_sharpes is not None:
        t = np.asarray(trial_sharpes, dtype=np.float64).ravel()
        if len(t) == 0 or not np.isfinite(t).all():
            raise ValueError("trial_sharpes must be a non-empty array of finite Sharpe ratios")
        if n_trials is None:
            n_trials = len(t)
        if sr_variance is None:
            if len(t) < 2:
                raise ValueError("need >= 2 trial_sharpes to estimate their variance")
            sr_variance = float(np.var(t, ddof=1))
    if n_trials is None or sr_variance is None:
        raise ValueError(
            "give trial_sharpes, or both n_trials and sr_variance (variance of the trials' "
            "per-period Sharpe ratios)"
        )
    if periods_per_year < 1:
        raise ValueError(f"periods_per_year must be >= 1, got {periods_per_year}")
    sr0 = expected_max_sharpe(n_trials, sr_variance)
    ann = math.sqrt(periods_per_year)
    return {
        "dsr": probabilistic_sharpe_ratio(s, sr0),
        "sr": s.sr,
        "sr0": sr0,
        "sr_annualized": s.sr * ann,
        "sr0_annualized": sr0 * ann,
        "psr": probabilistic_sharpe_ratio(s, 0.0),
        "n_trials": int(n_trials),
        "sr_variance": float(sr_variance),
        "n_obs": s.n_obs,
        "skew": s.skew,
        "kurtosis": s.kurtosis,
    }


# ---------------------------------------------------------------- PBO (CSCV)


def _centered_sums(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-partition sums and sums of squares of each column, centred on the column mean so the
    variance of any union of partitions is computed without cancellation."""
    center = blocks.reshape(-1, blocks.shape[-1]).mean(axis=0)
    x = blocks - center
    return center, x.sum(axis=1), (x * x).sum(axis=1), np.full(blocks.shape[0], blocks.shape[1])


def _fast_metric(name: str, center, s1, s2, n) -> np.ndarray:
    mean_x = s1 / n[:, None]
    if name == "mean":
        return mean_x + center
    var = (s2 - s1 * mean_x) / (n[:, None] - 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    mean = mean_x + center
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), 0.0)


def probability_of_backtest_overfitting(
    perf: np.ndarray,
    n_partitions: int = 16,
    metric: str | Metric = "sharpe",
    threshold: float = 0.0,
    chosen: int | None = None,
) -> dict:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

    `perf` is a (T periods, N trials) matrix of per-period performance (e.g. daily returns of each
    trial's strategy, on the same dates). Its rows are cut into `n_partitions` (even) contiguous
    blocks (the oldest T mod S rows are dropped); for each of the C(S, S/2) ways to pick half the
    blocks as in-sample (IS) and the rest as out-of-sample (OOS), the trial n* with the best IS
    `metric` is found and its OOS relative rank w = rank/(N+1) turned into a logit
    lambda = ln(w / (1 - w)). PBO is the fraction of splits with lambda <= 0: how often the IS
    winner is at or below the OOS median.

    `metric`: "sharpe" (per-period mean / sample std; 0 for a constant series), "mean", or a
    callable mapping a (rows, N) matrix to N scores (higher is better).

    Returns a dict. Scalars (plain floats/ints, ready for metrics.json): `pbo`; performance
    degradation `slope`, `intercept`, `r2` of the OOS-on-IS regression of the IS winner's metric;
    `prob_oos_loss` (share of splits where the winner's OOS metric < `threshold`); `mean_is`,
    `mean_oos` (the winner's average metric IS and OOS); `n_splits`, `n_partitions`,
    `n_rows_used`, `n_rows_dropped`, `n_trials`. Arrays, one entry per split (for plots and
    summaries): `logits`, `is_perf`, `oos_perf`.

    With `chosen` (a column: the configuration a search actually selected, on its own criterion),
    also that configuration's record in the OOS halves: `chosen_oos_rank`, its mean relative rank
    w (0..1, 1 = best; 0.5 = no better than the median trial), `chosen_below_median` (share of
    splits with w <= 0.5) and `chosen_prob_oos_loss` (share of splits with its OOS metric <
    `threshold`).
    """
    m = np.asarray(perf, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"perf must be a (T periods, N trials) matrix, got shape {m.shape}")
    t_rows, n_trials = m.shape
    if n_trials < 2:
        raise ValueError(f"PBO needs >= 2 trials (columns), got {n_trials}")
    if not np.isfinite(m).all():
        raise ValueError("perf contains NaN or inf")
    if n_partitions < 2 or n_partitions % 2:
        raise ValueError(f"n_partitions must be an even integer >= 2, got {n_partitions}")
    if t_rows // n_partitions < 2:
        raise ValueError(
            f"{t_rows} periods are too few for {n_partitions} partitions (need >= 2 rows each): "
            "lower n_partitions"
        )
    if isinstance(metric, str) and metric not in ("sharpe", "mean"):
        raise ValueError(f"metric must be 'sharpe', 'mean' or a callable, got {metric!r}")

    dropped = t_rows % n_partitions
    m = m[dropped:]
    size = len(m) // n_partitions
    blocks = m.reshape(n_partitions, size, n_trials)
    combos = np.array(list(itertools.combinations(range(n_partitions), n_partitions // 2)))
    in_is = np.zeros((len(combos), n_partitions), dtype=bool)
    in_is[np.arange(len(combos))[:, None], combos] = True

    if isinstance(metric, str):
        center, s1, s2, cnt = _centered_sums(blocks)
        sel = in_is.astype(np.float64)
        is_s1, is_s2, is_n = sel @ s1, sel @ s2, sel @ cnt
        r_is = _fast_metric(metric, center, is_s1, is_s2, is_n)
        r_oos = _fast_metric(metric, center, s1.sum(0) - is_s1, s2.sum(0) - is_s2, cnt.sum() - is_n)
    else:
        r_is = np.empty((len(combos), n_trials))
        r_oos = np.empty((len(combos), n_trials))
        for c, mask in enumerate(in_is):
            r_is[c] = metric(blocks[mask].reshape(-1, n_trials))
            r_oos[c] = metric(blocks[~mask].reshape(-1, n_trials))
        if not (np.isfinite(r_is).all() and np.isfinite(r_oos).all()):
            raise ValueError("metric returned NaN or inf for some split")

    rows = np.arange(len(combos))
    n_star = np.argmax(r_is, axis=1)
    oos_ranks = stats.rankdata(r_oos, axis=1)
    oos_rank = oos_ranks[rows, n_star]
    w = oos_rank / (n_trials + 1)
    logits = np.log(w / (1 - w))
    is_perf, oos_perf = r_is[rows, n_star], r_oos[rows, n_star]
    if np.ptp(is_perf) > 0:
        fit = stats.linregress(is_perf, oos_perf)
        slope, intercept, r2 = float(fit.slope), float(fit.intercept), float(fit.rvalue**2)
    else:
        slope = intercept = r2 = float("nan")
    extra = {}
    if chosen is not None:
        if not 0 <= chosen < n_trials:
            raise ValueError(f"chosen must be a trial column in [0, {n_trials}), got {chosen}")
        w_chosen = oos_ranks[:, chosen] / (n_trials + 1)
        extra = {
            "chosen": int(chosen),
            "chosen_oos_rank": float(w_chosen.mean()),
            "chosen_below_median": float(np.mean(w_chosen <= 0.5)),
            "chosen_prob_oos_loss": float(np.mean(r_oos[:, chosen] < threshold)),
        }
    return {
        **extra,
        "pbo": float(np.mean(logits <= 0)),
        "logits": logits,
        "is_perf": is_perf,
        "oos_perf": oos_perf,
        "slope": slope,
        "intercept": intercept,
        "r2": r2,
        "prob_oos_loss": float(np.mean(oos_perf < threshold)),
        "mean_is": float(is_perf.mean()),
        "mean_oos": float(oos_perf.mean()),
        "n_splits": len(combos),
        "n_partitions": n_partitions,
        "n_rows_used": len(m),
        "n_rows_dropped": dropped,
        "n_trials": n_trials,
    }


# ---------------------------------------------------------------- stability across folds


def config_stability(
    fold_scores: np.ndarray,
    chosen: int | None = None,
    *,
    higher_is_better: bool = True,
    top_fraction: float = 0.25,
) -> dict:
    """How stable the chosen configuration's standing is across CV folds.

    `fold_scores` is (n_folds, n_trials): each trial's validation score on each fold. `chosen` is
    the selected trial's column (default: best mean score). Definitions:

    - `ranks`: list, per fold, of the chosen trial's rank, 1 = best (ties share the average rank);
    - `top_hit_rate`: share of folds where that rank is within the top ceil(top_fraction * N);
    - `kendall_tau`: mean Kendall tau-b between the trial rankings of every pair of folds
      (1 = every fold orders the trials the same way, ~0 = fold rankings unrelated, i.e. the
      search is picking noise); NaN with a single fold;
    - `rank_mean`, `rank_worst`, `n_top` (the top-group size), `chosen`, `n_folds`, `n_trials`.
    """
    s = np.asarray(fold_scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 2:
        raise ValueError(f"fold_scores must be (n_folds >= 1, n_trials >= 2), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("fold_scores contain NaN or inf")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    n_folds, n_trials = s.shape
    better = s if higher_is_better else -s
    if chosen is None:
        chosen = int(np.argmax(better.mean(axis=0)))
    if not 0 <= chosen < n_trials:
        raise ValueError(f"chosen must be a trial column in [0, {n_trials}), got {chosen}")
    ranks = stats.rankdata(-better, axis=1)[:, chosen]
    n_top = max(1, math.ceil(top_fraction * n_trials))
    taus = [
        stats.kendalltau(better[a], better[b]).statistic
        for a, b in itertools.combinations(range(n_folds), 2)
    ]
    taus = [t for t in taus if np.isfinite(t)]
    return {
        "chosen": chosen,
        "ranks": [float(r) for r in ranks],
        "rank_mean": float(ranks.mean()),
        "rank_worst": float(ranks.max()),
        "n_top": n_top,
        "top_hit_rate": float(np.mean(ranks <= n_top)),
        "kendall_tau": float(np.mean(taus)) if taus else float("nan"),
        "n_folds": n_folds,
        "n_trials": n_trials,
    }
