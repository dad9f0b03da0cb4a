"""The backtest's trading rules on CV samples: what a search trial's validation days would have
earned after the backtest's costs, for the overfitting statistics.

Why: the deflated Sharpe ratio deflates the backtest's Sharpe (daily portfolio returns after
costs) by the spread of the trials' Sharpe ratios, and PBO ranks the trials by their validation
Sharpe. Both are only meaningful if every trial's series is the same kind of series as the
backtest's: signals from the same thresholds, one position at a time per ticker held for the
holding period, round-trip costs per trade, equal-weight sleeves summed into a daily portfolio
return. A pre-cost average of every sample's direction return is a different series (no costs,
no thresholds, no position limit) and understates the deflation benchmark.

It is a proxy, stated as such in metrics.json: a trial's validation samples are every
`labels.stride`-th bar, so a trade can open only on a sample bar; its gross return is the
label's forward return (close to close over `labels.horizon` bars, standing in for the
backtest's open-to-open fills over `hold_bars`); the cost of a round trip is the backtest's
slippage on both fills plus its commission per share (with its minimum) at the ticker's median
training-period close, on the sleeve's notional; `half_spread`, `exit_on_reversal` and the
volume cap are not modelled. Pure numpy/numba, no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from vpt_ray.core.config import Config


@dataclass(frozen=True)
class TradeProxy:
    """What a trial needs to trade its validation samples like the backtest: each sample row's
    ticker code (indexed like the sample file), each ticker's round-trip cost as a fraction of
    notional, the signal thresholds and the holding period in bars."""

    ticker: np.ndarray  # int16 per sample-file row
    cost: np.ndarray  # float64 per ticker code: round-trip cost / notional
    long_threshold: float
    short_threshold: float
    allow_short: bool
    hold_bars: int
    weight: float  # position_fraction / number of tickers: one trade's share of the portfolio

    def daily_returns(
        self, rows: np.ndarray, p: np.ndarray, pos: np.ndarray, fwd_ret: np.ndarray, day: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(days, portfolio return per day) of trading probabilities `p` on the sample-file rows
        `rows` (time-sorted); `pos`, `fwd_ret`, `day` are the rows' clock position, forward log
        return and session. Days without a trade are there with 0."""
        side = signals(p, self.long_threshold, self.short_threshold, self.allow_short)
        net = trade_returns(
            pos.astype(np.int64),
            self.ticker[rows].astype(np.int64),
            side,
            np.expm1(fwd_ret.astype(np.float64)),
            self.cost,
            self.hold_bars,
        )
        days, inverse = np.unique(day, return_inverse=True)
        return days, np.bincount(inverse, weights=net * self.weight, minlength=len(days))


def signals(p: np.ndarray, long_threshold: float, short_threshold: float, allow_short: bool):
    """+1 / -1 / 0 per probability, as the backtest engine reads them (long wins a tie; NaN is
    no signal)."""
    p = np.asarray(p, dtype=np.float64)
    side = np.where(p >= long_threshold, 1, 0).astype(np.int8)
    if allow_short:
        side[(p <= short_threshold) & (side == 0)] = -1
    return side


@njit(cache=True)
def trade_returns(
    pos: np.ndarray,
    ticker: np.ndarray,
    side: np.ndarray,
    gross: np.ndarray,
    cost: np.ndarray,
    hold: int,
) -> np.ndarray:
    """Net return of the trade opened at each sample (0 where none opens): samples in time
    order; a ticker opens a trade on a signal only when its previous trade has ended (`hold`
    bars after it opened), as the engine's one position at a time; net = side * gross - cost."""
    out = np.zeros(pos.shape[0])
    free = np.full(cost.shape[0], np.iinfo(np.int64).min)
    for i in range(pos.shape[0]):
        s = side[i]
        if s == 0 or not np.isfinite(gross[i]):
            continue
        t = ticker[i]
        if pos[i] >= free[t]:
            out[i] = s * gross[i] - cost[t]
            free[t] = pos[i] + hold
    return out


def round_trip_cost(cfg: Config, price: float | None, n_tickers: int) -> float:
    """A round trip's cost as a fraction of the sleeve's notional, with the engine's cost model:
    slippage on both fills, and a commission per order of max(min_commission, shares x per-share
    rate) with shares = notional / price. Without a price, the minimum commission alone."""
    bt = cfg.backtest
    notional = bt.capital * bt.position_fraction / max(1, n_tickers)
    per_order = bt.min_commission / notional
    if price is not None and math.isfinite(price) and price > 0:
        per_order = max(per_order, bt.commission_per_share / price)
    return 2.0 * (bt.slippage_bps / 1e4 + per_order)


def trade_proxy(cfg: Config, ticker_by_row: np.ndarray, prices: list[float | None]) -> TradeProxy:
    """The proxy for `cfg`'s backtest: `prices[code]` is each ticker's median training close."""
    n = len(prices)
    return TradeProxy(
        ticker=np.asarray(ticker_by_row, dtype=np.int16),
        cost=np.array([round_trip_cost(cfg, p, n) for p in prices], dtype=np.float64),
        long_threshold=cfg.backtest.long_threshold,
        short_threshold=cfg.backtest.short_threshold,
        allow_short=cfg.backtest.allow_short,
        hold_bars=cfg.hold_bars,
        weight=cfg.backtest.position_fraction / max(1, n),
    )


PROXY_NOTE = (
    "each trial's validation days traded like the backtest (same thresholds, one position per "
    "ticker for the holding period, round-trip slippage + commission at the ticker's median "
    "training close, equal-weight sleeves); a proxy: trades open only on sample bars "
    "(labels.stride), gross return = the label's close-to-close forward return, no half-spread "
    "or volume cap"
)
