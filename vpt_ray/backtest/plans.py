"""The per-ticker half of the portfolio (a Ray task per ticker, `plan_trades`): predictions ->
signals -> the round trips the one-ticker engine's rules make of them, sized later by the pool
(`vpt_ray.backtest.portfolio`, whose docstring explains the split). The engine runs unchanged
with an unlimited cash budget (`PLAN_CAPITAL`), so only the volume cap limits a planned entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vpt_ray.backtest.engine import (
    EXIT_SESSION,
    SimSettings,
    simulate,
)

if TYPE_CHECKING:  # pragma: no cover
    pass

# The plan's cash budget: large enough that only the volume cap ever limits a planned entry.

# The plan's cash budget: large enough that only the volume cap ever limits a planned entry.
PLAN_CAPITAL = 1e15


VOL_MIN_BARS = 30  # trailing returns needed before a ticker's volatility counts in the sizing


@dataclass
class TradePlan:
    """One ticker's planned round trips and bar marks, before any sizing (see module docstring).

    timestamp: every bar's start, int64 ns UTC; close: every bar's close (the marks).
    entry_bar, exit_bar: bar indices of each round trip (fill at the entry bar's open; the exit
        fills at the exit bar's open, or at its close when `exit_at_close`).
    entry_price, exit_price: fill prices (slippage and spread included); entry_ref, exit_ref: the
        open/close they are based on (for the cost accounting). max_shares: the volume cap.
    """

    timestamp: np.ndarray
    close: np.ndarray
    entry_bar: np.ndarray
    exit_bar: np.ndarray
    side: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    entry_ref: np.ndarray
    exit_ref: np.ndarray
    exit_at_close: np.ndarray
    exit_reason: np.ndarray
    max_shares: np.ndarray
    vol: np.ndarray | None = None  # trailing volatility at each entry's signal bar (sizing)

    @property
    def n_trades(self) -> int:
        return len(self.entry_bar)

    @property
    def n_bars(self) -> int:
        return len(self.timestamp)


def trailing_vol(close: np.ndarray, lookback: int) -> np.ndarray:
    """Std of the 1-bar log returns over the last `lookback` returns ending at each bar (NaN
    until VOL_MIN_BARS are known): what a trader knows at that bar's close."""
    r = pd.Series(np.diff(np.log(close), prepend=np.nan))
    return r.rolling(lookback, min_periods=VOL_MIN_BARS).std().to_numpy()


def plan_trades(
    bars: pd.DataFrame, proba: np.ndarray, settings: SimSettings, vol_lookback: int = 390
) -> TradePlan:
    """The round trips the engine's rules make of `proba` on `bars`, sized by nothing but the
    volume cap (pure; `settings.capital` and `position_fraction` play no part), with each
    entry's trailing volatility (`vol_lookback` bars up to the signal bar) for the sizing."""
    unlimited = settings.replace(capital=PLAN_CAPITAL, position_fraction=1.0)
    res = simulate(bars, proba, unlimited)
    t = res.trades
    entry = t["entry_bar"].to_numpy(np.int64)
    exit_ = t["exit_bar"].to_numpy(np.int64)
    reason = t["exit_reason"].cat.codes.to_numpy().astype(np.int8) + 1
    at_close = reason >= EXIT_SESSION
    open_ = bars["open"].to_numpy(np.float64)
    close = bars["close"].to_numpy(np.float64)
    volume = bars["volume"].to_numpy(np.float64)
    cap = np.floor(settings.max_volume_fraction * volume[np.maximum(entry - 1, 0)])
    return TradePlan(
        timestamp=pd.DatetimeIndex(bars["timestamp"]).as_unit("ns").asi8.astype(np.int64),
        close=close,
        entry_bar=entry,
        exit_bar=exit_,
        side=t["side"].to_numpy(np.int8),
        entry_price=t["entry_price"].to_numpy(np.float64),
        exit_price=t["exit_price"].to_numpy(np.float64),
        entry_ref=open_[entry],
        exit_ref=np.where(at_close, close[exit_], open_[exit_]),
        exit_at_close=at_close,
        exit_reason=reason,
        max_shares=cap,
        vol=trailing_vol(close, vol_lookback)[np.maximum(entry - 1, 0)],
    )
