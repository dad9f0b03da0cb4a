"""Trading statistics: one pure function, so "Sharpe" means the same thing for a ticker, the
portfolio, the report, the tracker and the phase decision.

Definitions follow empyrical (checked against empyrical-reloaded in `tests/test_backtest_stats.py`)
on DAILY returns of the equity at each session's close, annualized with 252 sessions and a zero
risk-free rate; minute returns are never annualized (that over- or understates Sharpe). The one
exception is the maximum drawdown: given the bar-level equity (marked at every bar's close) it is
measured there, intraday, because a strategy that is flat every night can lose twice its
close-to-close drawdown inside a session; the close-to-close figure stays as
`max_drawdown_daily`. Every value is a plain float/int or None (never NaN/inf), so the dict goes
straight into JSON.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from vpt_ray.backtest.engine import TickerResult

TRADING_DAYS = 252
STAT_KEYS = (
    "trades",
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "max_drawdown_daily",
    "max_drawdown_duration_days",
    "win_rate",
    "profit_factor",
    "avg_trade",
    "avg_trade_pnl",
    "exposure",
    "turnover",
    "commissions",
    "days",
    "final_equity",
)


def _clean(value: float | None) -> float | None:
    """Python float, or None for a value that JSON cannot hold (NaN, +-inf)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in `mask`."""
    if not mask.any():
        return 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max())


def max_drawdown(path: np.ndarray) -> float:
    """Most negative path / running peak - 1 (0.0 when the path never falls below a peak)."""
    path = np.asarray(path, dtype=np.float64)
    if len(path) == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = path / np.maximum.accumulate(path) - 1.0
    return min(0.0, float(np.nanmin(dd)))


def trading_stats(
    daily_equity: pd.Series,
    trades: pd.DataFrame,
    exposure: float | None = None,
    turnover: float | None = None,
    *,
    initial_equity: float | None = None,
    bar_equity: pd.Series | np.ndarray | None = None,
) -> dict:
    """Statistics of one equity curve and its trades (fractions, not percent).

    daily_equity: equity at each session's close, in date order.
    trades: needs columns `pnl` (net dollars), `return` (pnl / equity at entry), `commission`.
    exposure, turnover: computed by the caller from bar-level data (see `TickerResult`); passed
        through, None when not given.
    initial_equity: equity before the first session. Without it the first session's P&L is lost
        (the curve starts at its first close), so callers that know the capital pass it.
    bar_equity: equity at every bar's close over the same period (the portfolio's union clock),
        when known: `max_drawdown` is then measured on it (intraday).

    Choices where definitions differ between libraries:
    - sharpe = mean / std(ddof=1) * sqrt(252) of daily returns; sortino = mean * 252 /
      (sqrt(mean(min(r, 0)^2)) * sqrt(252)) (empyrical's downside deviation over ALL days).
      Both are 0.0 when every daily return is exactly zero (nothing traded), None when undefined
      otherwise (fewer than 2 days, or zero dispersion / no down day with a non-zero mean).
    - cagr = (final / initial) ** (252 / days) - 1, with days = number of daily returns
      (sessions, as empyrical counts them); -1.0 after ruin (equity <= 0).
    - max_drawdown: most negative equity / running peak - 1 (initial equity included), <= 0, on
      `bar_equity` when given (intraday), else on the daily closes; max_drawdown_daily: always
      on the daily closes (close to close).
    - max_drawdown_duration_days: most consecutive SESSIONS spent below a previous equity high
      (trading days, not calendar days; 0 if never under water).
    - win_rate: share of trades with pnl > 0; profit_factor: gross profit / gross loss, None
      when there is no losing trade (it would be infinite) or no trade; avg_trade: mean trade
      return; avg_trade_pnl: mean net pnl in dollars. All None without trades.
    """
    for col in ("pnl", "return", "commission"):
        if col not in trades.columns:
            raise ValueError(f"trades: missing column {col!r} (needs pnl, return, commission)")
    equity = np.asarray(daily_equity, dtype=np.float64)
    if not np.isfinite(equity).all():
        raise ValueError("daily_equity has NaN or infinite values; align/fill it first")
    if initial_equity is not None and not (math.isfinite(initial_equity) and initial_equity > 0):
        raise ValueError(f"initial_equity = {initial_equity!r}: must be a finite number > 0")
    path = equity if initial_equity is None else np.concatenate(([initial_equity], equity))

    out: dict = dict.fromkeys(STAT_KEYS)
    out["trades"] = len(trades)
    out["exposure"] = _clean(exposure)
    out["turnover"] = _clean(turnover)
    out["commissions"] = float(trades["commission"].sum()) if len(trades) else 0.0
    out["days"] = len(equity)
    if len(path):
        out["final_equity"] = float(path[-1])
    if len(path) >= 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            rets = path[1:] / path[:-1] - 1.0
        growth = path[-1] / path[0]
        out["total_return"] = _clean(growth - 1.0)
        if growth <= 0:
            out["cagr"] = -1.0
        else:
            try:
                out["cagr"] = _clean(growth ** (TRADING_DAYS / len(rets)) - 1.0)
            except OverflowError:  # a huge return over a few days: not meaningful, not JSON
                out["cagr"] = None
        peak = np.maximum.accumulate(path)
        out["max_drawdown"] = out["max_drawdown_daily"] = _clean(max_drawdown(path))
        out["max_drawdown_duration_days"] = _longest_run(path < peak)
        if np.isfinite(rets).all():
            mean = float(rets.mean())
            if not rets.any():
                out["sharpe"] = out["sortino"] = 0.0
            elif len(rets) >= 2:
                std = float(rets.std(ddof=1))
                if std > 0:
                    out["sharpe"] = _clean(mean / std * math.sqrt(TRADING_DAYS))
                downside = math.sqrt(float(np.mean(np.minimum(rets, 0.0) ** 2)))
                if downside > 0:
                    out["sortino"] = _clean(
                        mean * TRADING_DAYS / (downside * math.sqrt(TRADING_DAYS))
                    )
    elif len(path) == 1:
        out["total_return"] = 0.0
        out["max_drawdown"] = out["max_drawdown_daily"] = 0.0
        out["max_drawdown_duration_days"] = 0
    if bar_equity is not None and len(path):
        bars = np.asarray(bar_equity, dtype=np.float64)
        if not np.isfinite(bars).all():
            raise ValueError("bar_equity has NaN or infinite values")
        first = path[:1] if initial_equity is not None else bars[:0]  # the capital is a peak
        out["max_drawdown"] = _clean(max_drawdown(np.concatenate((first, bars))))
    if len(trades):
        pnl = trades["pnl"].to_numpy(np.float64)
        out["win_rate"] = float(np.mean(pnl > 0))
        loss = float(-pnl[pnl < 0].sum())
        out["profit_factor"] = _clean(float(pnl[pnl > 0].sum()) / loss) if loss > 0 else None
        out["avg_trade"] = _clean(trades["return"].mean())
        out["avg_trade_pnl"] = _clean(pnl.mean())
    return out


def summarize(result: TickerResult) -> dict:
    """Slim, JSON-safe summary of one ticker (its `trading_stats`), for Ray tasks and reports."""
    return trading_stats(
        result.daily_equity,
        result.trades,
        exposure=result.exposure,
        turnover=result.turnover if result.capital else None,
        initial_equity=result.capital,
        bar_equity=result.equity,
    )
