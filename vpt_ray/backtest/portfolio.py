"""The portfolio: one pool of capital trading every ticker's planned round trips on one clock.

Why it exists: splitting the capital once into equal sleeves that never rebalance lets one
compounding ticker decide a phase and lets minimum commissions eat small sleeves (issue 21:
$100k / 120 tickers = $833 sleeves, one of them +16,074%). Here the capital is one pool: each entry
is sized from the portfolio's equity at that moment.

The split of work (each part where it is cheapest):

1. Per ticker (a Ray task, `plan_trades`): predictions -> signals -> the round trips the
   one-ticker engine's rules make of them (entry/exit bar, side, fill prices with slippage and
   spread, exit at the open or the close), the volume cap of each entry (`max_volume_fraction`
   of the signal bar's volume) and every bar's close for marking. The rules are the engine's own:
   `engine.simulate` runs unchanged with an unlimited cash budget, so only the volume cap limits
   its size; what it plans does not depend on the money.
2. For the portfolio (`simulate_portfolio`, one pass in a compiled kernel): all tickers' bars
   merged onto one clock (the union of their bar timestamps); at each clock step, in order:
   exits at the open, entries at the open, session-end close-outs at the close, then every open
   position is marked at its ticker's close and the portfolio equity is recorded (bar-level
   equity: the intraday drawdown is measured on it).

Sizing (equal weight across the tickers that signal, volatility-scaled by default): an entry at
a clock step gets the target weight w = position_fraction * min(max_ticker_weight,
max_gross_exposure / n_active) of the current equity (cash + open positions marked at their
last close), where n_active counts the positions open after this step's entries. With
`sizing="volatility"` w is scaled by reference vol / the ticker's trailing vol (capped at
position_fraction * max_ticker_weight), so every position carries about the same risk; the
reference is the geometric mean of each ticker's vol at its latest planned entry (known at that
time). Why: with equal notional a ticker's PnL grows with its volatility, and on 30 synthetic
tickers at the same edge the most volatile one made a third of the PnL (bench_portfolio.py). A
vol not yet known (fewer than VOL_MIN_BARS returns) keeps the equal weight. The entries of one
step share the room left under `max_gross_exposure` pro rata. Shares are whole, at most
floor((budget - min_commission) / fill) and budget / (fill + commission_per_share) (the engine's
rule), capped by the volume limit; fewer than one share skips the planned trade (the ticker stays
idle until its next planned trade: the plan is the signals', only the size is the portfolio's).
Rebalancing happens at entries (every entry is sized from the book at that moment); open positions
are not traded to a new size before their exit: with holds of a few bars, resizing them would pay a
commission per order for minutes of drift. Commissions (with the minimum) and slippage fall on
the actual shares.

Cost (bench/bench_portfolio.py prints it against the sleeve roll-up it replaces): the kernel walks
the clock once, touching every ticker at every step (clock steps x tickers, ~6 M for phase 4's 120
tickers x 6 months of minute bars) plus one update per bar of an open position.

The equal-sleeve roll-up (`combine`) stays as the baseline the benchmark compares with and as the
bridge to vectorbt's per-column portfolios in the engine's cross-check; the pipeline does not use
it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numba import njit

from vpt_ray.backtest.engine import (
    EXIT_REASONS,
    EXIT_SESSION,
    TRADE_COLUMNS,
    SimSettings,
    TickerResult,
    session_days,
    simulate,
)
from vpt_ray.backtest.stats import STAT_KEYS, summarize, trading_stats

if TYPE_CHECKING:  # pragma: no cover
    from vpt_ray.config import BacktestConfig

# The plan's cash budget: large enough that only the volume cap ever limits a planned entry.
PLAN_CAPITAL = 1e15
VOL_MIN_BARS = 30  # trailing returns needed before a ticker's volatility counts in the sizing
SIZINGS = ("volatility", "equal")
# the engine's round-trip columns, with the ticker first and the entry's weight of the equity
_AFTER_RETURN = TRADE_COLUMNS.index("return") + 1
PORTFOLIO_TRADE_COLUMNS = (
    "ticker",
    *TRADE_COLUMNS[:_AFTER_RETURN],
    "weight",
    *TRADE_COLUMNS[_AFTER_RETURN:],
)


# -- per ticker: the plan -------------------------------------------------------------------------


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


# -- the portfolio --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortfolioSettings:
    """Sizing and costs of the pool; validated on construction."""

    capital: float = 100_000.0
    max_ticker_weight: float = 0.2  # one position's notional / equity, at most
    max_gross_exposure: float = 1.0  # sum of |notional| / equity, at most
    position_fraction: float = 1.0  # scales every target weight
    commission_per_share: float = 0.0035
    min_commission: float = 0.35
    sizing: str = "volatility"  # or "equal" (module docstring)

    def __post_init__(self) -> None:
        if self.sizing not in SIZINGS:
            raise ValueError(
                f"PortfolioSettings.sizing = {self.sizing!r}: must be one of {', '.join(SIZINGS)}"
            )
        for name in ("capital", "max_ticker_weight", "max_gross_exposure", "position_fraction",
                     "commission_per_share", "min_commission"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float | np.number):
                raise ValueError(f"PortfolioSettings.{name} = {v!r}: must be a number")
            if not math.isfinite(v):
                raise ValueError(f"PortfolioSettings.{name} = {v!r}: must be finite")
        for name in ("capital", "max_ticker_weight", "max_gross_exposure", "position_fraction"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PortfolioSettings.{name} = {getattr(self, name)!r}: must be > 0")
        for name in ("commission_per_share", "min_commission"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"PortfolioSettings.{name} = {getattr(self, name)!r}: must be >= 0"
                )

    @classmethod
    def from_config(cls, bt: BacktestConfig) -> PortfolioSettings:
        return cls(
            capital=bt.capital,
            max_ticker_weight=bt.max_ticker_weight,
            max_gross_exposure=bt.max_gross_exposure,
            position_fraction=bt.position_fraction,
            commission_per_share=bt.commission_per_share,
            min_commission=bt.min_commission,
            sizing=bt.sizing,
        )

    def weight(self, n_active: int) -> float:
        """Target weight of an entry with `n_active` positions open after it (with every ticker in
        a position: the smallest regular position, whose commission `cost_check` prices)."""
        return self.position_fraction * min(self.max_ticker_weight,
                                            self.max_gross_exposure / max(1, n_active))  # fmt: skip


@dataclass
class PortfolioResult:
    """One portfolio simulation.

    bar_equity: equity at every clock step's close (index: UTC bar start), after that step's
        fills; gross: gross exposure (sum of |notional| / equity) at the same steps.
    daily_equity: equity at each session's last clock step (index: session date, naive).
    trades: the round trips that were filled (`PORTFOLIO_TRADE_COLUMNS`); `return` = pnl /
        entry notional, `weight` = entry notional / portfolio equity at the entry.
    ticker_pnl: cumulative net PnL by session (rows) and ticker (columns), realized plus the open
        position marked at the session's last close.
    planned, skipped: planned round trips per ticker, and those sized to zero shares.
    bars: bars per ticker (for exposure).
    """

    capital: float
    bar_equity: pd.Series
    gross: pd.Series
    daily_equity: pd.Series
    trades: pd.DataFrame
    ticker_pnl: pd.DataFrame
    planned: dict[str, int]
    skipped: dict[str, int]
    bars: dict[str, int]


@njit(cache=True)
def _clock_steps(ts, boff):
    """Number of distinct timestamps over all tickers (each ticker's bars sorted)."""
    n_tk = boff.shape[0] - 1
    ptr = boff[:-1].copy()
    steps = 0
    big = np.iinfo(np.int64).max
    while True:
        tmin = big
        for i in range(n_tk):
            if ptr[i] < boff[i + 1] and ts[ptr[i]] < tmin:
                tmin = ts[ptr[i]]
        if tmin == big:
            return steps
        for i in range(n_tk):
            if ptr[i] < boff[i + 1] and ts[ptr[i]] == tmin:
                ptr[i] += 1
        steps += 1


@njit(cache=True)
def _pool_kernel(
    ts, close, session, boff, n_steps, day0, n_days,
    t_entry, t_exit, t_side, t_entry_px, t_exit_px, t_at_close, t_max_sh, t_vol, toff,
    capital, fraction, max_w, max_gross, cps, min_comm, by_vol,
):  # fmt: skip
    """The clock loop. Bars and planned trades of all tickers are concatenated (ticker i's bars
    are boff[i]..boff[i+1]-1, its trades toff[i]..toff[i+1]-1, bar indices local to the ticker).
    Returns (clock, equity, gross, shares, commission, pnl, equity at entry, day sessions,
    cumulative PnL by day and ticker, days recorded)."""
    n_tk = boff.shape[0] - 1
    big = np.iinfo(np.int64).max
    clock = np.empty(n_steps, np.int64)
    equity = np.empty(n_steps)
    gross_out = np.empty(n_steps)
    n_tr = t_entry.shape[0]
    shares_out = np.zeros(n_tr)
    comm_out = np.zeros(n_tr)
    pnl_out = np.zeros(n_tr)
    eq_entry = np.zeros(n_tr)
    day_session = np.empty(n_days, np.int64)
    day_pnl = np.zeros((n_days, n_tk))

    ptr = boff[:-1].copy()  # next bar of each ticker (global index)
    nxt = toff[:-1].copy()  # next planned trade of each ticker (global index)
    cur = np.full(n_tk, -1)  # open trade of each ticker, -1 = flat
    sh = np.zeros(n_tk)
    sd = np.zeros(n_tk)
    mark = np.zeros(n_tk)  # price the open position is marked at
    ecomm = np.zeros(n_tk)
    realized = np.zeros(n_tk)
    here = np.empty(n_tk, np.int64)
    entr = np.empty(n_tk, np.int64)
    want_i = np.empty(n_tk)
    last_vol = np.full(n_tk, np.nan)  # each ticker's volatility at its latest planned entry
    log_vol_sum = 0.0
    n_vol = 0
    cash = capital
    mtm = 0.0  # sum of side * shares * mark
    gross = 0.0  # sum of shares * mark
    n_open = 0
    day = -1
    prev_session = day0 - 1
    for c in range(n_steps):
        tmin = big
        for i in range(n_tk):
            if ptr[i] < boff[i + 1] and ts[ptr[i]] < tmin:
                tmin = ts[ptr[i]]
        m = 0
        for i in range(n_tk):
            if ptr[i] < boff[i + 1] and ts[ptr[i]] == tmin:
                here[m] = i
                m += 1
        sess = session[ptr[here[0]]]
        if sess != prev_session:  # a new session: the state now is the last one's close
            if day >= 0:
                for i in range(n_tk):
                    day_pnl[day, i] = realized[i]
                    if cur[i] >= 0:
                        day_pnl[day, i] += sd[i] * sh[i] * (mark[i] - t_entry_px[cur[i]]) - ecomm[i]
            day += 1
            day_session[day] = sess
            prev_session = sess

        # 1. exits at this bar's open, 3. close-outs at its close: one body, two moments
        for phase in range(2):
            if phase == 1:
                # 2. entries at the open, sized from the equity after the exits
                e = 0
                for q in range(m):
                    i = here[q]
                    k = nxt[i]
                    if k < toff[i + 1] and t_entry[k] == ptr[i] - boff[i]:
                        entr[e] = i
                        e += 1
                if e > 0:
                    eq_now = cash + mtm
                    base = fraction * min(max_w, max_gross / (n_open + e))
                    if by_vol:  # the reference: geometric mean of the tickers' latest vols
                        for q in range(e):
                            i = entr[q]
                            v = t_vol[nxt[i]]
                            if v > 0.0:
                                if last_vol[i] > 0.0:
                                    log_vol_sum -= np.log(last_vol[i])
                                else:
                                    n_vol += 1
                                last_vol[i] = v
                                log_vol_sum += np.log(v)
                    total = 0.0
                    for q in range(e):
                        i = entr[q]
                        w = base
                        v = t_vol[nxt[i]]
                        if by_vol and v > 0.0 and n_vol > 0:
                            w = min(fraction * max_w, base * np.exp(log_vol_sum / n_vol) / v)
                        want_i[q] = w * eq_now
                        total += want_i[q]
                    room = max_gross * eq_now - gross
                    scale = 1.0
                    if total > room:
                        scale = max(room, 0.0) / total
                    for q in range(e):
                        i = entr[q]
                        k = nxt[i]
                        nxt[i] += 1
                        budget = want_i[q] * scale
                        px = t_entry_px[k]
                        n = 0.0
                        if eq_now > 0.0 and budget > 0.0 and px > 0.0:
                            n = np.floor(min((budget - min_comm) / px, budget / (px + cps)))
                            n = min(n, t_max_sh[k])
                        if n >= 1.0:
                            comm = max(min_comm, n * cps)
                            side = t_side[k]
                            cash -= side * n * px + comm
                            cur[i] = k
                            sh[i] = n
                            sd[i] = side
                            mark[i] = px
                            ecomm[i] = comm
                            mtm += side * n * px
                            gross += n * px
                            n_open += 1
                            shares_out[k] = n
                            eq_entry[k] = eq_now
            for q in range(m):
                i = here[q]
                k = cur[i]
                if k < 0 or t_exit[k] != ptr[i] - boff[i] or t_at_close[k] != (phase == 1):
                    continue
                fill = t_exit_px[k]
                comm = max(min_comm, sh[i] * cps)
                cash += sd[i] * sh[i] * fill - comm
                mtm -= sd[i] * sh[i] * mark[i]
                gross -= sh[i] * mark[i]
                pnl = sd[i] * sh[i] * (fill - t_entry_px[k]) - ecomm[i] - comm
                pnl_out[k] = pnl
                comm_out[k] = ecomm[i] + comm
                realized[i] += pnl
                cur[i] = -1
                n_open -= 1

        # marks at the close
        for q in range(m):
            i = here[q]
            if cur[i] >= 0:
                px = close[ptr[i]]
                mtm += sd[i] * sh[i] * (px - mark[i])
                gross += sh[i] * (px - mark[i])
                mark[i] = px
            ptr[i] += 1
        if n_open == 0:  # exact zero again: no drift from the running sums
            mtm = 0.0
            gross = 0.0
        clock[c] = tmin
        equity[c] = cash + mtm
        gross_out[c] = gross
    if day >= 0:
        for i in range(n_tk):
            day_pnl[day, i] = realized[i]
            if cur[i] >= 0:
                day_pnl[day, i] += sd[i] * sh[i] * (mark[i] - t_entry_px[cur[i]]) - ecomm[i]
    return (clock, equity, gross_out, shares_out, comm_out, pnl_out, eq_entry, day_session,
            day_pnl, day + 1)  # fmt: skip


def _concat(plans: dict[str, TradePlan]) -> dict[str, np.ndarray]:
    """The plans' arrays end to end, with offsets, as the kernel takes them."""
    ps = list(plans.values())
    boff = np.zeros(len(ps) + 1, np.int64)
    boff[1:] = np.cumsum([p.n_bars for p in ps])
    toff = np.zeros(len(ps) + 1, np.int64)
    toff[1:] = np.cumsum([p.n_trades for p in ps])

    def cat(name: str, dtype: type) -> np.ndarray:
        arrays = [np.asarray(getattr(p, name), dtype=dtype) for p in ps]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype)

    ts = cat("timestamp", np.int64)
    sessions = [session_days(pd.DatetimeIndex(p.timestamp, tz="UTC")) for p in ps]
    return {
        "ts": ts,
        "close": cat("close", np.float64),
        "session": np.concatenate(sessions) if sessions else np.zeros(0, np.int64),
        "boff": boff,
        "t_entry": cat("entry_bar", np.int64),
        "t_exit": cat("exit_bar", np.int64),
        "t_side": cat("side", np.float64),
        "t_entry_px": cat("entry_price", np.float64),
        "t_exit_px": cat("exit_price", np.float64),
        "t_at_close": cat("exit_at_close", np.bool_),
        "t_max_sh": cat("max_shares", np.float64),
        "t_vol": np.concatenate(
            [np.full(p.n_trades, np.nan) if p.vol is None else np.asarray(p.vol, float) for p in ps]
        )
        if ps
        else np.zeros(0),  # fmt: skip
        "toff": toff,
    }


def _check_plans(plans: dict[str, TradePlan]) -> None:
    if not plans:
        raise ValueError("simulate_portfolio: no ticker plans to combine")
    for t, p in plans.items():
        if not isinstance(p, TradePlan):
            raise TypeError(
                f"simulate_portfolio: {t}'s plan is a {type(p).__name__}, not a TradePlan"
            )
        if p.n_bars and (np.diff(p.timestamp) <= 0).any():
            raise ValueError(
                f"simulate_portfolio: {t}'s bar timestamps are not strictly increasing"
            )
        if p.n_trades:
            if p.entry_bar.min() < 0 or p.exit_bar.max() >= p.n_bars:
                raise ValueError(f"simulate_portfolio: {t} plans a trade outside its bars")
            if (p.exit_bar < p.entry_bar).any() or (p.entry_bar[1:] < p.exit_bar[:-1]).any():
                raise ValueError(
                    f"simulate_portfolio: {t}'s planned trades overlap or run backwards"
                )


def simulate_portfolio(plans: dict[str, TradePlan], settings: PortfolioSettings) -> PortfolioResult:
    """Trade every ticker's plan from one pool of capital on one clock (rules: module docstring).

    Pure: same plans and settings, same result. Tickers are processed in the dict's order wherever
    order matters (it never changes a size: entries of one clock step are sized together)."""
    if not isinstance(settings, PortfolioSettings):
        raise TypeError(f"settings must be a PortfolioSettings, got {type(settings).__name__}")
    _check_plans(plans)
    a = _concat(plans)
    tickers = list(plans)
    n_steps = _clock_steps(a["ts"], a["boff"])
    sess = a["session"]
    day0 = int(sess.min()) if len(sess) else 0
    n_days = int(sess.max() - day0 + 1) if len(sess) else 0
    s = settings
    out = _pool_kernel(
        a["ts"], a["close"], sess, a["boff"], n_steps, day0, n_days,
        a["t_entry"], a["t_exit"], a["t_side"], a["t_entry_px"], a["t_exit_px"],
        a["t_at_close"], a["t_max_sh"], a["t_vol"], a["toff"],
        float(s.capital), float(s.position_fraction), float(s.max_ticker_weight),
        float(s.max_gross_exposure), float(s.commission_per_share), float(s.min_commission),
        s.sizing == "volatility",
    )  # fmt: skip
    clock, equity, gross, shares, comm, pnl, eq_entry, day_session, day_pnl, n_rec = out
    index = pd.DatetimeIndex(clock.view("datetime64[ns]")).tz_localize("UTC")
    bar_equity = pd.Series(equity, index=index, name="equity")
    with np.errstate(divide="ignore", invalid="ignore"):
        gross_frac = np.where(equity > 0, gross / equity, np.nan)
    days = pd.DatetimeIndex(day_session[:n_rec].astype("datetime64[D]"), name="session")
    if len(clock):
        clock_sess = session_days(index)
        last = np.flatnonzero(np.append(clock_sess[1:] != clock_sess[:-1], True))
        daily = pd.Series(equity[last], index=days, name="equity")
    else:
        daily = pd.Series([], index=days, name="equity", dtype=float)
    ticker_pnl = pd.DataFrame(day_pnl[:n_rec], index=days, columns=tickers)
    trades = _trades_frame(plans, a, shares, comm, pnl, eq_entry)
    toff = a["toff"]
    planned = {t: int(toff[i + 1] - toff[i]) for i, t in enumerate(tickers)}
    filled = trades["ticker"].value_counts() if len(trades) else pd.Series(dtype=int)
    return PortfolioResult(
        capital=float(s.capital),
        bar_equity=bar_equity,
        gross=pd.Series(gross_frac, index=index, name="gross_exposure"),
        daily_equity=daily,
        trades=trades,
        ticker_pnl=ticker_pnl,
        planned=planned,
        skipped={t: planned[t] - int(filled.get(t, 0)) for t in tickers},
        bars={t: plans[t].n_bars for t in tickers},
    )


def _trades_frame(plans, a, shares, comm, pnl, eq_entry) -> pd.DataFrame:
    """The filled round trips, ticker by ticker in plan order."""
    tickers = list(plans)
    toff = a["toff"]
    ticker_of = np.repeat(np.arange(len(tickers)), np.diff(toff))
    filled = shares >= 1.0
    boff = a["boff"]
    g_entry = a["t_entry"] + boff[ticker_of]
    g_exit = a["t_exit"] + boff[ticker_of]
    ts = a["ts"]
    entry_px = a["t_entry_px"]
    notional = shares * entry_px
    reasons = np.concatenate([p.exit_reason for p in plans.values()]) if tickers else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(notional > 0, pnl / notional, np.nan)
        weight = np.where(eq_entry > 0, notional / eq_entry, np.nan)
    frame = pd.DataFrame(
        {
            "ticker": pd.Categorical.from_codes(ticker_of, tickers) if tickers else [],
            "entry_time": pd.DatetimeIndex(ts[g_entry].view("datetime64[ns]")).tz_localize("UTC"),
            "exit_time": pd.DatetimeIndex(ts[g_exit].view("datetime64[ns]")).tz_localize("UTC"),
            "side": a["t_side"].astype(np.int64),
            "shares": shares.astype(np.int64),
            "entry_price": entry_px,
            "exit_price": a["t_exit_px"],
            "commission": comm,
            "pnl": pnl,
            "return": ret,
            "weight": weight,
            "bars_held": a["t_exit"] - a["t_entry"] + a["t_at_close"],
            "exit_reason": pd.Categorical.from_codes(
                np.asarray(reasons, np.int64) - 1, list(EXIT_REASONS.values())
            ),
            "entry_bar": a["t_entry"],
            "exit_bar": a["t_exit"],
            "entry_ref": np.concatenate([p.entry_ref for p in plans.values()]),
            "exit_ref": np.concatenate([p.exit_ref for p in plans.values()]),
        }
    )
    return frame[filled].reset_index(drop=True)


# -- statistics -----------------------------------------------------------------------------------


def portfolio_stats(result: PortfolioResult) -> dict:
    """`trading_stats` of the portfolio (Sharpe etc. on daily returns, max drawdown intraday on
    the bar-level equity) plus its size: tickers, planned and skipped round trips.

    exposure: the mean gross exposure (sum of |notional| / equity) over the clock's bars;
    turnover: traded value of all fills / capital."""
    t = result.trades
    traded = float((t["shares"] * (t["entry_price"] + t["exit_price"])).sum()) if len(t) else 0.0
    gross = result.gross.to_numpy()
    stats = trading_stats(
        result.daily_equity,
        t,
        exposure=float(np.nanmean(gross)) if len(gross) and np.isfinite(gross).any() else 0.0,
        turnover=traded / result.capital,
        initial_equity=result.capital,
        bar_equity=result.bar_equity,
    )
    stats["capital"] = result.capital
    stats["tickers"] = len(result.planned)
    stats["trades_planned"] = int(sum(result.planned.values()))
    stats["trades_skipped"] = int(sum(result.skipped.values()))
    return stats


def per_ticker_stats(result: PortfolioResult) -> dict[str, dict]:
    """Each ticker's contribution to the portfolio: `trading_stats` of capital + its cumulative
    PnL by session (so total_return = its PnL / the portfolio's capital, Sharpe = the Sharpe of
    its daily contributions), plus pnl (net dollars), pnl_share (of the portfolio's net PnL; None
    when that is not positive), trades skipped and exposure (share of its bars in a position)."""
    t = result.trades
    by_ticker = dict(tuple(t.groupby("ticker", observed=False))) if len(t) else {}
    total = float(t["pnl"].sum()) if len(t) else 0.0
    empty = pd.DataFrame({"pnl": [], "return": [], "commission": []})
    out = {}
    for name in result.planned:
        trades = by_ticker.get(name, empty)
        path = result.capital + result.ticker_pnl[name]
        held = float(trades["bars_held"].sum()) if len(trades) else 0.0
        traded = (
            float((trades["shares"] * (trades["entry_price"] + trades["exit_price"])).sum())
            if len(trades)
            else 0.0
        )
        s = trading_stats(
            path,
            trades,
            exposure=held / result.bars[name] if result.bars[name] else 0.0,
            turnover=traded / result.capital,
            initial_equity=result.capital,
        )
        pnl = float(trades["pnl"].sum()) if len(trades) else 0.0
        s["pnl"] = pnl
        s["pnl_share"] = pnl / total if total > 0 else None
        s["trades_skipped"] = result.skipped[name]
        out[name] = s
    return out


def concentration(per_ticker: dict[str, dict]) -> dict:
    """Who made the PnL: top-1 and top-5 tickers' share of the net PnL (None when the portfolio
    made none), the share of tickers that made money, and the median ticker Sharpe."""
    pnl = pd.Series({t: s["pnl"] for t, s in per_ticker.items()}, dtype=float)
    total = float(pnl.sum())
    ranked = pnl.sort_values(ascending=False)
    sharpes = [s["sharpe"] for s in per_ticker.values() if s.get("sharpe") is not None]
    top = str(ranked.index[0]) if len(ranked) else None
    return {
        "pnl": total,
        "top_ticker": top,
        "top_ticker_pnl": float(ranked.iloc[0]) if len(ranked) else None,
        "top_ticker_share": float(ranked.iloc[0]) / total if total > 0 and len(ranked) else None,
        "top5_share": float(ranked.iloc[:5].sum()) / total if total > 0 and len(ranked) else None,
        "tickers_profitable_share": float((pnl > 0).mean()) if len(pnl) else None,
        "median_ticker_sharpe": float(np.median(sharpes)) if sharpes else None,
    }


def cost_section(result: PortfolioResult) -> dict:
    """Costs against what the trades made before them: commissions and slippage (spread
    included) in dollars, their share of the gross PnL, and per fill in bps of the notional."""
    t = result.trades
    if not len(t):
        return {"gross_pnl": 0.0, "commissions": 0.0, "slippage": 0.0, "total": 0.0,
                "net_pnl": 0.0, "cost_share_of_gross": None, "commission_bps_per_fill": None,
                "cost_bps_per_fill": None}  # fmt: skip
    n, side = t["shares"].to_numpy(float), t["side"].to_numpy(float)
    gross = float((side * n * (t["exit_ref"] - t["entry_ref"])).sum())
    slip = float(
        (side * n * ((t["entry_price"] - t["entry_ref"]) - (t["exit_price"] - t["exit_ref"]))).sum()
    )
    comm = float(t["commission"].sum())
    notional = float((n * (t["entry_price"] + t["exit_price"])).sum())  # both fills
    return {
        "gross_pnl": gross,
        "commissions": comm,
        "slippage": slip,
        "total": comm + slip,
        "net_pnl": float(t["pnl"].sum()),
        "cost_share_of_gross": (comm + slip) / gross if gross > 0 else None,
        "commission_bps_per_fill": comm / notional * 1e4 if notional else None,
        "cost_bps_per_fill": (comm + slip) / notional * 1e4 if notional else None,
    }


def cost_check(
    settings: PortfolioSettings, n_tickers: int, max_cost_bps: float, prices: dict[str, float]
) -> dict:
    """Is the capital large enough for the commission schedule? The expected position is the
    full-book one (capital x `settings.weight(n_tickers)`, every ticker held at once: the
    smallest regular size), at each ticker's typical price; its commission per fill in bps of the
    position is max(min_commission / position, commission_per_share / price) (the first part
    alone when no prices are known yet: before the data is read). `capital_needed`: the capital
    that brings the minimum-commission part under `max_cost_bps` (None if it already is);
    `per_share_over`: tickers whose per-share commission alone exceeds it (capital cannot fix).
    `warn` when the median ticker's expected commission exceeds the limit."""
    w = settings.weight(n_tickers)
    position = settings.capital * w
    limit = max_cost_bps * 1e-4
    bps = {
        t: max(settings.min_commission / position, settings.commission_per_share / p) * 1e4
        for t, p in prices.items()
        if p > 0
    } or {"(any)": settings.min_commission / position * 1e4}
    over = sorted(t for t, v in bps.items() if v > max_cost_bps)
    per_share_over = sorted(
        t for t, p in prices.items() if p > 0 and settings.commission_per_share / p > limit
    )
    min_part = settings.min_commission / position
    needed = (
        math.ceil(settings.min_commission / (limit * w) / 1000.0) * 1000.0
        if min_part > limit and limit > 0
        else None
    )
    typical = float(np.median(list(bps.values())))
    return {
        "max_cost_bps": max_cost_bps,
        "expected_position": position,
        "expected_commission_bps": typical,
        "tickers_over": over,
        "per_share_over": per_share_over,
        "capital_needed": needed,
        "warn": typical > max_cost_bps,  # the typical (median) ticker, not the cheapest stock
    }


def cost_warning(check: dict, capital: float) -> str | None:
    """The log and summary line for a `cost_check` that failed (None when it passed)."""
    if not check["warn"]:
        return None
    over = check["tickers_over"]
    who = "every ticker" if over == ["(any)"] else f"{len(over)} tickers"
    parts = [
        f"expected commission per fill {check['expected_commission_bps']:.2f} bps (median "
        f"ticker) of a ${check['expected_position']:,.0f} position (every ticker held at once); "
        f"{who} over backtest.max_cost_bps = {check['max_cost_bps']:g}"
    ]
    if check["capital_needed"]:
        parts.append(
            f"the minimum commission is the cause: backtest.capital >= "
            f"{check['capital_needed']:,.0f} (now {capital:,.0f}) brings it under the limit"
        )
    if check["per_share_over"]:
        parts.append(
            f"{len(check['per_share_over'])} tickers pay more than that per share alone "
            f"({', '.join(check['per_share_over'][:5])}...): capital cannot fix it, a cheaper "
            "commission schedule or fewer trades can"
        )
    return "costs: " + "; ".join(parts)


# -- the equal-sleeve roll-up (the old scheme; baseline of bench/bench_portfolio.py) -------------


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


__all__ = [
    "PortfolioResult",
    "PortfolioSettings",
    "TradePlan",
    "combine",
    "concentration",
    "cost_check",
    "cost_section",
    "per_ticker_stats",
    "plan_trades",
    "portfolio_stats",
    "simulate_portfolio",
]
