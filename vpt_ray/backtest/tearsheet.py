"""What a quant reads next to the equity curve: a benchmark, rolling Sharpe, the worst drawdowns
and turnover, as plain functions of daily series and the trades table.

- Benchmark: equal-weight buy-and-hold of the same tickers over the same window: each ticker
  gets capital / N at its first bar's open and is held to the end, marked at each session's
  close; no costs (so it is a slightly generous yardstick). Excess return = strategy total
  return - benchmark total return over the window.
- Rolling Sharpe: mean / std (ddof=1) of the last `window` daily returns x sqrt(252), the same
  definition as `stats.trading_stats` (and empyrical's `roll_sharpe_ratio`).
- Worst drawdowns: maximal under-water periods of the daily equity (starting capital counted as
  the first peak), deepest first: depth, the peak they start from, the trough, and the first
  session back at the peak (None while still under water).
- Turnover per session: traded value (entries and exits, at their fill prices) / the previous
  session's equity.

Why not quantstats: its tearsheet would bring yfinance, lxml and seaborn into the run time and
render its own HTML; these four figures are a few lines each, checked in
`tests/test_tearsheet.py` against empyrical (rolling Sharpe) and brute force (drawdowns).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vpt_ray.backtest.stats import TRADING_DAYS

DRAWDOWN_COLUMNS = ("depth", "peak", "trough", "recovery", "sessions", "recovery_sessions")


def daily_closes(bars: pd.DataFrame, session: np.ndarray) -> pd.Series:
    """The last close of each session (index: naive session date, like `daily_equity`)."""
    if not len(bars):
        return pd.Series([], index=pd.DatetimeIndex([], name="session"), name="close")
    last = np.flatnonzero(np.append(session[1:] != session[:-1], True))
    days = pd.DatetimeIndex(session[last].astype("datetime64[D]"), name="session")
    return pd.Series(bars["close"].to_numpy(np.float64)[last], index=days, name="close")


def buy_and_hold(closes: pd.DataFrame, first_open: pd.Series, capital: float) -> pd.Series:
    """Equal-weight buy-and-hold equity by session: capital / N in each ticker at its first
    open, marked at each close (a ticker's last close carries over days it has no bar)."""
    if closes.empty:
        return pd.Series([], index=pd.DatetimeIndex([], name="session"), name="benchmark")
    if not (math.isfinite(capital) and capital > 0):
        raise ValueError(f"buy_and_hold: capital = {capital!r}: must be a finite number > 0")
    missing = set(closes.columns) - set(first_open.index)
    if missing:
        raise ValueError(f"buy_and_hold: no first open for {sorted(missing)}")
    opens = first_open.reindex(closes.columns).astype(float)
    if not (np.isfinite(opens).all() and (opens > 0).all()):
        raise ValueError(f"buy_and_hold: first opens must be positive prices: {opens.to_dict()}")
    shares = capital / len(closes.columns) / opens
    marked = closes.sort_index().ffill().fillna(opens)  # before its first bar: still at cost
    return (marked * shares).sum(axis=1).rename("benchmark").rename_axis("session")


def daily_returns(equity: pd.Series, capital: float) -> pd.Series:
    """Session returns of an equity curve, the first one against the starting capital."""
    prev = equity.shift(1)
    if len(prev):
        prev.iloc[0] = capital
    return (equity / prev - 1.0).rename("return")


def rolling_sharpe(equity: pd.Series, capital: float, window: int = 63) -> pd.Series:
    """Annualized Sharpe of the last `window` session returns (NaN until `window` returns)."""
    if window < 2:
        raise ValueError(f"rolling_sharpe: window = {window}: must be >= 2 sessions")
    r = daily_returns(equity, capital)
    roll = r.rolling(window, min_periods=window)
    std = roll.std(ddof=1)
    return (roll.mean() / std.where(std > 0) * math.sqrt(TRADING_DAYS)).rename("rolling_sharpe")


def worst_drawdowns(equity: pd.Series, capital: float, n: int = 5) -> pd.DataFrame:
    """The `n` deepest under-water periods (see the module docstring), deepest first.

    `peak` is the last session at the high-water mark before the fall (None when the fall
    starts from the starting capital, before the first session); `sessions` counts sessions from
    the peak to the trough, `recovery_sessions` from the trough back to the peak's level.
    """
    values = equity.to_numpy(np.float64)
    dates = list(equity.index)
    path = np.concatenate(([capital], values))
    peak = np.maximum.accumulate(path)
    under = path < peak
    rows = []
    i = 1
    while i < len(path):
        if not under[i]:
            i += 1
            continue
        start = i - 1  # the high-water session (0 = the starting capital)
        j = i
        while j < len(path) and under[j]:
            j += 1
        seg = path[i:j] / peak[i:j] - 1.0
        k = i + int(np.argmin(seg))
        rows.append(
            {
                "depth": float(seg.min()),
                "peak": dates[start - 1] if start >= 1 else None,
                "trough": dates[k - 1],
                "recovery": dates[j - 1] if j < len(path) else None,
                "sessions": k - start,
                "recovery_sessions": (j - k) if j < len(path) else None,
            }
        )
        i = j
    rows.sort(key=lambda r: r["depth"])
    return pd.DataFrame(rows[:n], columns=list(DRAWDOWN_COLUMNS))


def daily_turnover(trades: pd.DataFrame, equity: pd.Series, capital: float) -> pd.Series:
    """Traded value per session (entries on their session, exits on theirs) / the previous
    session's equity (the starting capital for the first)."""
    idx = equity.index
    if trades.empty or not len(idx):
        return pd.Series(0.0, index=idx, name="turnover")
    from vpt_ray.backtest.engine import SESSION_TZ

    def by_session(time_col: str, price_col: str) -> pd.Series:
        day = pd.to_datetime(trades[time_col]).dt.tz_convert(SESSION_TZ).dt.tz_localize(None)
        value = trades["shares"].abs() * trades[price_col]
        return value.groupby(day.dt.normalize().to_numpy()).sum()

    traded = by_session("entry_time", "entry_price").add(
        by_session("exit_time", "exit_price"), fill_value=0.0
    )
    prev = equity.shift(1)
    prev.iloc[0] = capital
    return (traded.reindex(idx, fill_value=0.0) / prev).rename("turnover")


def benchmark_section(equity: pd.Series, benchmark: pd.Series, capital: float, stats: dict) -> dict:
    """metrics.json's `benchmark`: the buy-and-hold's statistics and the strategy's excess."""
    from vpt_ray.backtest.stats import trading_stats

    if benchmark.empty:
        return {"method": "equal-weight buy-and-hold", "total_return": None}
    empty = pd.DataFrame({"pnl": [], "return": [], "commission": []})
    b = trading_stats(benchmark, empty, initial_equity=capital)
    strat, bench = stats.get("total_return"), b["total_return"]
    return {
        "method": "equal-weight buy-and-hold of the backtest's tickers, first open to last "
        "close, no costs",
        "total_return": bench,
        "cagr": b["cagr"],
        "sharpe": b["sharpe"],
        "max_drawdown": b["max_drawdown"],
        "excess_return": None if strat is None or bench is None else strat - bench,
    }
