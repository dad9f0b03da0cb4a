"""Backtest: the pure one-ticker simulation (`engine`), its statistics (`stats`, `tearsheet`),
each ticker's planned round trips (`plans`) and the portfolio that sizes them from one pool of
capital on one clock (`portfolio`, measured in `portfolio_stats`; the old equal sleeves in
`sleeves`). `proxy` applies the backtest's trading rules to the search's CV samples. What the
report reads next to them: where the PnL went (`attribution`: before and after costs, by side, by
ticker), the book's gross and net exposure (`exposure`) and the daily returns' risk against the
benchmark (`risk`).

Ray stays out of this package's import path: the per-ticker fan-out (`vpt_ray.backtest.run`)
calls these plain functions and is imported only where it is used.
"""

from vpt_ray.backtest.engine import SimSettings, TickerResult, simulate
from vpt_ray.backtest.plans import TradePlan, plan_trades
from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
from vpt_ray.backtest.sleeves import combine, per_ticker_table
from vpt_ray.backtest.stats import summarize, trading_stats

__all__ = [
    "PortfolioSettings",
    "SimSettings",
    "TickerResult",
    "TradePlan",
    "combine",
    "per_ticker_table",
    "plan_trades",
    "simulate",
    "simulate_portfolio",
    "summarize",
    "trading_stats",
]
