"""Backtest: the pure one-ticker simulation, its statistics and the equal-weight roll-up.

Ray stays out of this package's import path: the per-ticker fan-out (`vpt_ray.backtest.run`)
calls these plain functions and is imported only where it is used.
"""

from vpt_ray.backtest.engine import SimSettings, TickerResult, simulate
from vpt_ray.backtest.portfolio import combine, per_ticker_table
from vpt_ray.backtest.stats import summarize, trading_stats

__all__ = [
    "SimSettings",
    "TickerResult",
    "combine",
    "per_ticker_table",
    "simulate",
    "summarize",
    "trading_stats",
]
