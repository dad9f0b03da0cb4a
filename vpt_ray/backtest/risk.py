"""The risk a quant reads next to the Sharpe, from the daily returns: their distribution (skew,
kurtosis, value at risk, expected shortfall), the strategy against its benchmark (beta, alpha,
tracking error, information ratio) and a table per calendar year; plus the note a CAGR needs when
the window is shorter than a year.

Definitions (daily returns of the equity at each session's close, the first against the starting
capital, as in `tearsheet.daily_returns`; zero risk-free rate; 252 sessions a year):

- skew, kurtosis: the moment estimates pyfolio prints (`scipy.stats.skew`, `kurtosis` with
  Fisher's definition: a normal distribution has 0 excess kurtosis); biased, like pyfolio's.
- VaR 95%: the 5th percentile of the daily returns (historical, `np.percentile`, as empyrical's
  `value_at_risk`); CVaR 95% (expected shortfall): the mean of the worst int((n - 1) * 0.05) + 1
  days (empyrical's `conditional_value_at_risk`). Both are returns (negative = a loss).
- beta: cov(r, b) / var(b); alpha: (1 + mean(r - beta b)) ** 252 - 1 (empyrical's annualized
  alpha); tracking error: std(r - b, ddof=1) x sqrt(252); information ratio: mean(r - b) /
  std(r - b, ddof=1) x sqrt(252) (empyrical's `excess_sharpe`, annualized); correlation: Pearson.
- yearly: per calendar year, the return (compounded), Sharpe, close-to-close max drawdown (from
  the year's opening equity) and the benchmark's return over the same sessions.

Checked in `tests/test_risk.py` against empyrical-reloaded and the moment formulas. Every value is
a float or None (never NaN), so the dicts go straight into JSON.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from vpt_ray.backtest.stats import TRADING_DAYS, max_drawdown
from vpt_ray.backtest.tearsheet import daily_returns

VAR_CUTOFF = 0.05  # the 95% level


def _num(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def return_distribution(returns: pd.Series | np.ndarray, cutoff: float = VAR_CUTOFF) -> dict:
    """Sessions, mean, std, best and worst day, share of up days, skew, excess kurtosis, VaR and
    CVaR at `cutoff` of daily returns (module docstring); None where undefined."""
    if not 0 < cutoff < 1:
        raise ValueError(f"return_distribution: cutoff = {cutoff!r}: must be in (0, 1)")
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    out: dict = {"sessions": len(r), "cutoff": cutoff}
    keys = ("mean", "std", "best", "worst", "up_share", "skew", "kurtosis", "var", "cvar")
    out.update(dict.fromkeys(keys))
    if not len(r):
        return out
    k = int((len(r) - 1) * cutoff)
    out.update(
        mean=_num(r.mean()),
        best=_num(r.max()),
        worst=_num(r.min()),
        up_share=_num(np.mean(r > 0)),
        var=_num(np.percentile(r, 100 * cutoff)),
        cvar=_num(np.mean(np.partition(r, k)[: k + 1])),
    )
    if len(r) >= 2:
        out["std"] = _num(r.std(ddof=1))
    if len(r) >= 3 and r.std() > 0:
        out["skew"] = _num(sps.skew(r))
        out["kurtosis"] = _num(sps.kurtosis(r, fisher=True))
    return out


def relative_stats(returns: pd.Series, benchmark_returns: pd.Series) -> dict:
    """Beta, annualized alpha, correlation, tracking error and information ratio of the strategy
    against the benchmark (module docstring), on the sessions both have; None where undefined."""
    both = pd.concat([returns, benchmark_returns], axis=1, join="inner").dropna()
    r, b = both.iloc[:, 0].to_numpy(np.float64), both.iloc[:, 1].to_numpy(np.float64)
    out: dict = dict.fromkeys(
        ("beta", "alpha", "correlation", "tracking_error", "information_ratio")
    )
    out["sessions"] = len(r)
    if len(r) < 2:
        return out
    var_b = float(np.mean((b - b.mean()) ** 2))
    if var_b > 0:
        beta = float(np.mean((r - r.mean()) * (b - b.mean()))) / var_b
        out["beta"] = _num(beta)
        out["alpha"] = _num((1.0 + float(np.mean(r - beta * b))) ** TRADING_DAYS - 1.0)
        if r.std() > 0:
            out["correlation"] = _num(np.corrcoef(r, b)[0, 1])
    active = r - b
    te = float(active.std(ddof=1))
    if te > 0:
        out["tracking_error"] = _num(te * math.sqrt(TRADING_DAYS))
        out["information_ratio"] = _num(active.mean() / te * math.sqrt(TRADING_DAYS))
    return out


YEARLY_COLUMNS = ("year", "sessions", "return", "sharpe", "max_drawdown", "benchmark", "excess")


def yearly_table(
    equity: pd.Series, capital: float, benchmark: pd.Series | None = None
) -> pd.DataFrame:
    """One row per calendar year of the daily equity (`YEARLY_COLUMNS`): sessions, compounded
    return, Sharpe (None under 2 sessions), close-to-close max drawdown from the year's opening
    equity, the benchmark's return over the same sessions and the excess (strategy - benchmark)."""
    if not len(equity):
        return pd.DataFrame(columns=list(YEARLY_COLUMNS))
    r = daily_returns(equity, capital)
    rb = None
    if benchmark is not None and len(benchmark):
        rb = daily_returns(benchmark.reindex(equity.index).ffill().fillna(capital), capital)
    rows = []
    opening = capital
    for year, ry in r.groupby(r.index.year):
        eq = equity.loc[ry.index].to_numpy(np.float64)
        std = float(ry.std(ddof=1)) if len(ry) >= 2 else 0.0
        ret = float(np.prod(1.0 + ry.to_numpy()) - 1.0)
        bench = float(np.prod(1.0 + rb.loc[ry.index].to_numpy()) - 1.0) if rb is not None else None
        rows.append(
            {
                "year": int(year),
                "sessions": len(ry),
                "return": _num(ret),
                "sharpe": _num(ry.mean() / std * math.sqrt(TRADING_DAYS)) if std > 0 else None,
                "max_drawdown": _num(max_drawdown(np.concatenate(([opening], eq)))),
                "benchmark": bench,
                "excess": None if bench is None else _num(ret - bench),
            }
        )
        opening = float(eq[-1])
    return pd.DataFrame(rows, columns=list(YEARLY_COLUMNS))


def cagr_note(sessions: int | None) -> str | None:
    """Why a CAGR from fewer than a year of sessions is an extrapolation (None from a year on)."""
    if sessions is None or sessions >= TRADING_DAYS:
        return None
    return (
        f"annualized from {sessions} sessions ({sessions / TRADING_DAYS:.0%} of a year): the "
        "window's return compounded to a year, an extrapolation, not a forecast"
    )
