"""The equal-sleeve roll-up (the old scheme): capital / N per ticker, each simulated on its own,
never rebalanced. Not the pipeline's portfolio (`vpt_ray.backtest.portfolio`): the baseline
bench/bench_portfolio.py compares it with, and the bridge to vectorbt's per-column portfolios in
the engine's cross-check.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vpt_ray.backtest.engine import (
    TickerResult,
)
from vpt_ray.backtest.stats import STAT_KEYS, summarize, trading_stats

if TYPE_CHECKING:  # pragma: no cover
    pass

# The plan's cash budget: large enough that only the volume cap ever limits a planned entry.


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
    """Equal, never-rebalanced sleeves (capital / N per ticker, each simulated on its own):
    (daily equity, `trading_stats` of it). Not the pipeline's portfolio (`simulate_portfolio`)."""
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
    """One row of `summarize` per ticker (index: ticker), for the sleeve roll-up."""
    rows = {t: summarize(r) for t, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(STAT_KEYS)).rename_axis(
        "ticker"
    )
