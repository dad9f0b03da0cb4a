"""Equal-weight portfolio roll-up of per-ticker backtests.

Each ticker trades its own sleeve of capital / N (no cash moves between sleeves), so the portfolio
equity on a day is the sum of the sleeves' equity at that day's close. Why a roll-up rather than a
joint simulation: sleeves are independent, so the per-ticker simulations can run anywhere (one
Ray task each) and only their daily equity curves and trades come back.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vpt_ray.backtest.engine import TickerResult
from vpt_ray.backtest.stats import STAT_KEYS, summarize, trading_stats


def _sleeve_capital(ticker: str, result: TickerResult, expected: float) -> float:
    """The ticker's starting capital, checked against the equal-weight share."""
    if result.capital is None:
        return expected
    if not math.isclose(result.capital, expected, rel_tol=1e-9):
        raise ValueError(
            f"combine: {ticker} was simulated with capital {result.capital}, but equal weight of "
            f"the portfolio's capital gives {expected}; simulate each ticker with capital / N"
        )
    return float(result.capital)


def daily_equity_frame(results: dict[str, TickerResult], capital: float) -> pd.DataFrame:
    """Sleeve equity by session (rows) and ticker (columns) on the union of sessions.

    A ticker with no bar on a session keeps its previous close's equity (it is flat or holds
    an unchanged mark); before its first session it holds its starting capital.
    """
    if not results:
        raise ValueError("combine: no ticker results to roll up")
    if not (math.isfinite(capital) and capital > 0):
        raise ValueError(f"combine: capital = {capital!r}: must be a finite number > 0")
    share = capital / len(results)
    cols = {t: r.daily_equity for t, r in results.items()}
    frame = pd.concat(cols, axis=1, sort=True) if cols else pd.DataFrame()
    frame = frame.ffill()
    for t, r in results.items():
        frame[t] = frame[t].fillna(_sleeve_capital(t, r, share))
    frame.index.name = "session"
    return frame


def combine(results: dict[str, TickerResult], capital: float) -> tuple[pd.Series, dict]:
    """Equal-weight portfolio: (daily equity, `trading_stats` of it).

    Every ticker must have been simulated with capital / len(results). Trades of all tickers
    feed win rate, profit factor, average trade and commissions; turnover is all tickers' traded
    value / capital; exposure is the tickers' mean exposure (the average share of the capital's
    sleeves in the market).
    """
    frame = daily_equity_frame(results, capital)
    equity = frame.sum(axis=1).rename("equity")
    trades = [r.trades for r in results.values() if len(r.trades)]
    all_trades = (
        pd.concat([t[["pnl", "return", "commission"]] for t in trades], ignore_index=True)
        if trades
        else pd.DataFrame({"pnl": [], "return": [], "commission": []})
    )
    exposure = float(np.mean([r.exposure for r in results.values()]))
    turnover = sum(r.traded_value for r in results.values()) / capital
    stats = trading_stats(
        equity, all_trades, exposure=exposure, turnover=turnover, initial_equity=capital
    )
    stats["tickers"] = len(results)
    return equity, stats


def per_ticker_table(results: dict[str, TickerResult]) -> pd.DataFrame:
    """One row of `summarize` per ticker (index: ticker), for reports."""
    rows = {t: summarize(r) for t, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(STAT_KEYS)).rename_axis(
        "ticker"
    )
