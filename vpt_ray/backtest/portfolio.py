"""The portfolio: one pool of capital trading every ticker's planned round trips on one clock.

Why it exists: splitting the capital once into equal sleeves that never rebalance lets one
compounding ticker decide a phase and lets minimum commissions eat small sleeves (issue 21:
$100k / 120 tickers = $833 sleeves, one of them +16,074%). Here the capital is one pool: each entry
is sized from the portfolio's equity at that moment.

The split of work (each part where it is cheapest):

1. Per ticker (a Ray task, `vpt_ray.backtest.plans.plan_trades`): predictions -> signals -> the
   round trips the one-ticker engine's rules make of them (entry/exit bar, side, fill prices with
   slippage and spread, exit at the open or the close), the volume cap of each entry
   (`max_volume_fraction` of the signal bar's volume) and every bar's close for marking. The
   rules are the engine's own: `engine.simulate` runs unchanged with an unlimited cash budget, so
   only the volume cap limits its size; what it plans does not depend on the money.
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

What the book made and cost is measured in `vpt_ray.backtest.portfolio_stats`. The equal-sleeve
roll-up (`vpt_ray.backtest.sleeves.combine`) stays as the baseline the benchmark compares with and
as the bridge to vectorbt's per-column portfolios in the engine's cross-check; the pipeline does
not use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numba import njit

from vpt_ray.backtest.engine import EXIT_REASONS, TRADE_COLUMNS, session_days
from vpt_ray.backtest.plans import TradePlan

if TYPE_CHECKING:  # pragma: no cover
    from vpt_ray.core.config import BacktestConfig

SIZINGS = ("volatility", "equal")
# the engine's round-trip columns, with the ticker first and the entry's weight of the equity
_AFTER_RETURN = TRADE_COLUMNS.index("return") + 1
PORTFOLIO_TRADE_COLUMNS = (
    "ticker",
    *TRADE_COLUMNS[:_AFTER_RETURN],
    "weight",
    *TRADE_COLUMNS[_AFTER_RETURN:],
)


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
        fills; gross, net: gross and net exposure (sum of |notional|, of signed notional, / equity).
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
    net: pd.Series
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
    Returns (clock, equity, gross, net, shares, commission, pnl, equity at entry, day sessions,
    cumulative PnL by day and ticker, days recorded)."""
    n_tk = boff.shape[0] - 1
    big = np.iinfo(np.int64).max
    clock = np.empty(n_steps, np.int64)
    equity = np.empty(n_steps)
    gross_out = np.empty(n_steps)
    net_out = np.empty(n_steps)
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
        net_out[c] = mtm
    if day >= 0:
        for i in range(n_tk):
            day_pnl[day, i] = realized[i]
            if cur[i] >= 0:
                day_pnl[day, i] += sd[i] * sh[i] * (mark[i] - t_entry_px[cur[i]]) - ecomm[i]
    return (clock, equity, gross_out, net_out, shares_out, comm_out, pnl_out, eq_entry,
            day_session, day_pnl, day + 1)  # fmt: skip


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
    clock, equity, gross, net, shares, comm, pnl, eq_entry, day_session, day_pnl, n_rec = out
    index = pd.DatetimeIndex(clock.view("datetime64[ns]")).tz_localize("UTC")
    bar_equity = pd.Series(equity, index=index, name="equity")
    with np.errstate(divide="ignore", invalid="ignore"):
        gross_frac = np.where(equity > 0, gross / equity, np.nan)
        net_frac = np.where(equity > 0, net / equity, np.nan)
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
        net=pd.Series(net_frac, index=index, name="net_exposure"),
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
