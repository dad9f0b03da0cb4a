"""One-ticker backtest: a pure function of (bars, probabilities, settings) -> trades and equity.

Why it exists: the out-of-sample backtest decides whether a phase advances, so its fills and costs
must be exact and its rules explicit; and it runs once per ticker per phase (100+ tickers x months
of minute bars), so it is a compiled state machine (numba, `cache=True`) rather than a Python loop
per bar. Cost, measured with bench/bench_backtest.py on 2 shared cores: warm, a ticker with 484k
minute bars takes ~15-25 ms (20-35 M bars/s; the bar loop itself ~6 ms); the first call in a fresh
process loads the kernels from numba's on-disk cache in ~0.35 s (mostly numba's own start-up);
with no cache for this source path (a fresh checkout, or a Ray `working_dir` unpacked to a new
directory) the first process compiles them in ~2 s and writes the cache for the others.

The rules (each has a hand-computed test in `tests/test_backtest_engine.py`):

- Signal at bar t: +1 (long) when `proba[t] >= long_threshold`, -1 (short) when
  `proba[t] <= short_threshold`, else 0; NaN is no signal; long wins a tie when the thresholds are
  equal. With `allow_short=False` a short signal opens nothing but still counts as the opposite
  signal that closes a long under `exit_on_reversal`.
- Orders are filled at the OPEN of bar t+1, never at bar t's close. Within one bar the order is:
  exits at the open, then an entry at the open, then the session-end close-out at the close,
  then equity is marked at the close (so a bar's equity includes that bar's close-out costs).
- One position at a time: a signal is acted on only if the book is flat at the next bar's open
  (after any exit at that open), so a signal seen while a position is open is ignored unless the
  position is closed at that very open (then the signal can re-enter or flip immediately).
- With `flat_at_close` (default for intraday bars): no entry whose fill bar is in another session
  than the signal bar, and an open position is closed at the CLOSE of its session's last bar. A
  session is the calendar date of the bar's timestamp in America/New_York. Without it positions
  may be held overnight. At the last bar of the data any open position is closed at that bar's
  close (`exit_reason` "session_close" under `flat_at_close`, else "end_of_data").
- `flat_at_close` needs sessions of several bars: with one bar a session (daily bars) every fill
  bar is in the next session, so nothing could ever trade; `simulate` refuses that combination
  and `SimSettings.from_config(..., daily=True)` turns the rule off. Daily bars are therefore held
  across sessions: signal at session t's close, entry at session t+1's open, exit at the open of
  the session `hold_bars` bars later (or at the last bar's close, "end_of_data").
- Exit: at the open of bar `entry + hold_bars`, or, with `exit_on_reversal`, at the open after an
  opposite signal instead (the holding period is then ignored); session end / end of data first.
- Fills are adverse: buy = ref * (1 + slippage_bps/1e4) + h, sell = ref * (1 - slippage_bps/1e4) - h
  where ref is the bar's open (or close for close-outs) and h = (high - low) / 2, when
  `half_spread`, of the last bar completed at the fill (bar t for a fill at bar t+1's open, the
  bar itself for a close-out at its close), else 0. Commission per order =
  max(min_commission, shares * commission_per_share).
- Size: whole shares, the most such that shares * fill + commission <= position_fraction * equity
  (equity = cash: the book is flat at entry; shorts are sized on the same gross notional), capped
  at floor(max_volume_fraction * volume) of the signal bar, the last bar completed before the
  fill (a liquidity limit, as in zipline's volume-share slippage, without peeking at the fill
  bar's volume). Fewer than 1 share (or a non-positive fill) -> no trade.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numba import njit

if TYPE_CHECKING:  # pragma: no cover
    from vpt_ray.core.config import BacktestConfig

SESSION_TZ = "America/New_York"
BAR_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
TRADE_COLUMNS = (
    "entry_time",
    "exit_time",
    "side",
    "shares",
    "entry_price",
    "exit_price",
    "commission",
    "pnl",
    "return",
    "bars_held",
    "exit_reason",
    "entry_bar",
    "exit_bar",
)
# exit_reason codes used by the kernel, and the labels in `TickerResult.trades.exit_reason`
EXIT_HOLD, EXIT_REVERSAL, EXIT_SESSION, EXIT_END = 1, 2, 3, 4
EXIT_REASONS = {EXIT_HOLD: "hold", EXIT_REVERSAL: "reversal", EXIT_SESSION: "session_close",
                EXIT_END: "end_of_data"}  # fmt: skip


@dataclass(frozen=True)
class SimSettings:
    """Rules and costs of one ticker's simulation; validated on construction."""

    capital: float = 100_000.0  # capital for THIS ticker
    long_threshold: float = 0.53  # go long when proba >= this
    short_threshold: float = 0.47  # go short when proba <= this (if allow_short)
    allow_short: bool = True
    hold_bars: int = 15  # exit at the open of bar entry + hold_bars ...
    exit_on_reversal: bool = False  # ... or at the open after an opposite signal instead
    commission_per_share: float = 0.0035
    min_commission: float = 0.35  # per order
    slippage_bps: float = 0.5  # adverse, on every fill
    half_spread: bool = False  # add half of (high - low) of the last completed bar as cost
    position_fraction: float = 1.0  # fraction of the ticker's current equity per trade
    max_volume_fraction: float = 0.05  # cap shares at this fraction of the signal bar's volume
    flat_at_close: bool = True  # no overnight positions

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"SimSettings.{name} = {getattr(self, name)!r}: {rule}")

        for name in ("capital", "long_threshold", "short_threshold", "commission_per_share",
                     "min_commission", "slippage_bps", "position_fraction",
                     "max_volume_fraction"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise bad(name, "must be a number")
            if not np.isfinite(value):
                raise bad(name, "must be finite")
        if self.capital <= 0:
            raise bad("capital", "must be > 0")
        for name in ("long_threshold", "short_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must lie in [0, 1] (it is compared with a probability)")
        if self.short_threshold > self.long_threshold:
            raise bad("short_threshold", f"must be <= long_threshold ({self.long_threshold})")
        if isinstance(self.hold_bars, bool) or not isinstance(self.hold_bars, (int, np.integer)):
            raise bad("hold_bars", "must be an integer number of bars")
        if self.hold_bars < 1:
            raise bad("hold_bars", "must be >= 1")
        for name in ("commission_per_share", "min_commission", "slippage_bps"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0 (costs are always adverse)")
        for name in ("position_fraction", "max_volume_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise bad(name, "must lie in (0, 1]")

    @classmethod
    def from_config(
        cls, bt: BacktestConfig, capital: float, hold_bars: int, daily: bool = False
    ) -> SimSettings:
        """Settings for one ticker from the config's backtest section.

        `capital` is this ticker's share of `bt.capital`; `hold_bars` is `Config.hold_bars`
        (the backtest's own value or the label horizon); `daily`: the bars are whole sessions
        (`data.bar: 1day`), where `flat_at_close` does not apply and positions are held across
        sessions.
        """
        return cls(
            capital=float(capital),
            long_threshold=bt.long_threshold,
            short_threshold=bt.short_threshold,
            allow_short=bt.allow_short,
            hold_bars=int(hold_bars),
            exit_on_reversal=bt.exit_on_reversal,
            commission_per_share=bt.commission_per_share,
            min_commission=bt.min_commission,
            slippage_bps=bt.slippage_bps,
            half_spread=bt.half_spread,
            position_fraction=bt.position_fraction,
            max_volume_fraction=bt.max_volume_fraction,
            flat_at_close=bt.flat_at_close and not daily,
        )

    def replace(self, **changes: object) -> SimSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass
class TickerResult:
    """Everything one ticker's simulation produced.

    trades: one row per round trip (see `TRADE_COLUMNS`): fill prices include slippage/spread,
        `commission` is entry + exit, `pnl` is net, `return` = pnl / equity at entry,
        `exit_time` is the timestamp (bar start) of the exit bar; `exit_reason` says whether the
        exit filled at that bar's open (hold, reversal) or close (session_close, end_of_data).
    equity: mark-to-market equity at each bar's close, indexed by bar timestamp (UTC).
    daily_equity: equity at each session's last bar, indexed by session date (naive midnight).
    position: signed shares held during each bar (after that bar's open fills).
    capital: the starting equity of this ticker.
    """

    trades: pd.DataFrame
    equity: pd.Series
    daily_equity: pd.Series
    position: np.ndarray
    capital: float | None = None

    @property
    def exposure(self) -> float:
        """Fraction of bars with an open position."""
        n = len(self.position)
        return float(np.count_nonzero(self.position) / n) if n else 0.0

    @property
    def traded_value(self) -> float:
        """Dollar value of all fills (entries and exits)."""
        t = self.trades
        return float((t["shares"] * (t["entry_price"] + t["exit_price"])).sum()) if len(t) else 0.0

    @property
    def turnover(self) -> float:
        """Traded value / starting capital over the whole period (not annualized)."""
        if not self.capital:
            raise ValueError("TickerResult.capital is not set: turnover needs the starting capital")
        return self.traded_value / self.capital


@njit(cache=True)
def _kernel(
    open_, high, low, close, volume, proba, session,
    capital, long_th, short_th, allow_short, hold_bars, exit_on_reversal,
    cps, min_comm, slip, half_spread, fraction, max_vol_frac, flat_at_close,
):  # fmt: skip
    """The bar loop. Returns (position, equity, n_trades, trade arrays...)."""
    n = open_.shape[0]
    position = np.zeros(n)
    equity = np.empty(n)
    t_entry = np.empty(n, np.int64)
    t_exit = np.empty(n, np.int64)
    t_side = np.empty(n, np.int64)
    t_reason = np.empty(n, np.int64)
    t_shares = np.empty(n)
    t_entry_px = np.empty(n)
    t_exit_px = np.empty(n)
    t_comm = np.empty(n)
    t_pnl = np.empty(n)
    t_ret = np.empty(n)

    cash = capital
    side = 0  # +1 long, -1 short, 0 flat
    shares = 0.0
    entry_bar = -1
    entry_px = 0.0
    entry_comm = 0.0
    entry_equity = 0.0
    k = 0  # trades recorded
    for j in range(n):
        # signal of the previous bar (decided at its close, acted on at this open)
        sig = 0
        if j > 0:
            p = proba[j - 1]
            if p >= long_th:
                sig = 1
            elif p <= short_th:
                sig = -1
        # Costs and size of a fill at this bar's open may only use what is known at that open:
        # the last completed bar (j - 1). A close-out at this bar's close may use bar j itself.
        spread_open = 0.5 * (high[j - 1] - low[j - 1]) if half_spread and j > 0 else 0.0
        spread_close = 0.5 * (high[j] - low[j]) if half_spread else 0.0

        # 1. exit at this bar's open
        if side != 0:
            reason = 0
            if exit_on_reversal:
                if sig == -side:
                    reason = 2
            elif j - entry_bar >= hold_bars:
                reason = 1
            if reason != 0:
                fill = open_[j] - side * (open_[j] * slip + spread_open)
                comm = max(min_comm, shares * cps)
                cash += side * shares * fill - comm
                pnl = side * shares * (fill - entry_px) - entry_comm - comm
                t_entry[k] = entry_bar
                t_exit[k] = j
                t_side[k] = side
                t_reason[k] = reason
                t_shares[k] = shares
                t_entry_px[k] = entry_px
                t_exit_px[k] = fill
                t_comm[k] = entry_comm + comm
                t_pnl[k] = pnl
                t_ret[k] = pnl / entry_equity
                k += 1
                side = 0
                shares = 0.0

        # 2. entry at this bar's open
        if (
            side == 0
            and (sig == 1 or (sig == -1 and allow_short))
            and (not flat_at_close or session[j] == session[j - 1])
        ):
            fill = open_[j] + sig * (open_[j] * slip + spread_open)
            budget = fraction * cash
            if fill > 0.0 and budget > 0.0:
                n_sh = np.floor(min((budget - min_comm) / fill, budget / (fill + cps)))
                n_sh = min(n_sh, np.floor(max_vol_frac * volume[j - 1]))
                if n_sh >= 1.0:
                    comm = max(min_comm, n_sh * cps)
                    entry_equity = cash
                    cash -= sig * n_sh * fill + comm
                    side = sig
                    shares = n_sh
                    entry_bar = j
                    entry_px = fill
                    entry_comm = comm
        position[j] = side * shares

        # 3. session-end / end-of-data close-out at this bar's close
        last_bar = j == n - 1
        if side != 0 and (last_bar or (flat_at_close and session[j + 1] != session[j])):
            fill = close[j] - side * (close[j] * slip + spread_close)
            comm = max(min_comm, shares * cps)
            cash += side * shares * fill - comm
            pnl = side * shares * (fill - entry_px) - entry_comm - comm
            t_entry[k] = entry_bar
            t_exit[k] = j
            t_side[k] = side
            t_reason[k] = 3 if flat_at_close else 4  # the data's last bar ends a session too
            t_shares[k] = shares
            t_entry_px[k] = entry_px
            t_exit_px[k] = fill
            t_comm[k] = entry_comm + comm
            t_pnl[k] = pnl
            t_ret[k] = pnl / entry_equity
            k += 1
            side = 0
            shares = 0.0
        equity[j] = cash + side * shares * close[j]
    return (
        position, equity, t_entry[:k], t_exit[:k], t_side[:k], t_reason[:k], t_shares[:k],
        t_entry_px[:k], t_exit_px[:k], t_comm[:k], t_pnl[:k], t_ret[:k],
    )  # fmt: skip


def session_days(timestamps: pd.DatetimeIndex) -> np.ndarray:
    """Session of each bar: days since 1970-01-01 of its calendar date in America/New_York.

    US time-zone offsets change only on whole UTC hours, so only the first bar of each UTC hour
    goes through the tz database (a few thousand conversions instead of one per bar).
    """
    if timestamps.tz is None:
        raise ValueError("bars.timestamp is timezone-naive; the bar contract stores UTC timestamps")
    if len(timestamps) == 0:
        return np.zeros(0, np.int64)
    unit = np.datetime_data(timestamps.dtype.base)[0]
    per_hour = 3600 * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    raw = timestamps.asi8
    hours = raw // per_hour
    starts = np.flatnonzero(np.concatenate(([True], hours[1:] != hours[:-1])))
    local = timestamps[starts].tz_convert(SESSION_TZ).tz_localize(None).asi8
    days = local // (per_hour * 24)
    return np.repeat(days, np.diff(np.append(starts, len(raw))))


def _readonly(values: np.ndarray, dtype: type) -> np.ndarray:
    """A read-only contiguous view: the kernel then always sees one array type, so numba keeps a
    single cached specialization (pandas hands out read-only or writable arrays depending on how
    the frame was built, and each kind would otherwise compile on first sight)."""
    view = np.ascontiguousarray(values, dtype=dtype).view()
    view.flags.writeable = False
    return view


@njit(cache=True)
def _first_invalid(raw_ts, open_, high, low, close, volume, proba):
    """One pass over the inputs: (rule, row) of the first broken rule, (0, -1) if none.

    Rules: 1 timestamp not increasing, 2-5 open/high/low/close not finite or <= 0, 6 volume not
    finite or < 0, 7 proba outside [0, 1] (NaN is allowed: no signal)."""
    for i in range(open_.shape[0]):
        if i > 0 and raw_ts[i] <= raw_ts[i - 1]:
            return 1, i
        if not (open_[i] > 0.0 and open_[i] < np.inf):
            return 2, i
        if not (high[i] > 0.0 and high[i] < np.inf):
            return 3, i
        if not (low[i] > 0.0 and low[i] < np.inf):
            return 4, i
        if not (close[i] > 0.0 and close[i] < np.inf):
            return 5, i
        if not (volume[i] >= 0.0 and volume[i] < np.inf):
            return 6, i
        if proba[i] < 0.0 or proba[i] > 1.0:
            return 7, i
    return 0, -1


def _inputs(bars: pd.DataFrame, proba: np.ndarray) -> tuple[pd.DatetimeIndex, list[np.ndarray]]:
    """Validated kernel inputs: the timestamps and read-only open/high/low/close/volume/proba."""
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars: missing column(s) {missing}; simulate needs {BAR_COLUMNS}")
    if proba.ndim != 1 or len(proba) != len(bars):
        raise ValueError(
            f"proba has shape {proba.shape}, expected one probability per bar ({len(bars)},)"
        )
    ts = bars["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"bars.timestamp has type {ts.dtype}; expected timezone-aware (UTC)")
    index = pd.DatetimeIndex(ts)
    arrays = [_readonly(bars[c].to_numpy(), np.float64) for c in BAR_COLUMNS[1:]]
    arrays.append(_readonly(proba, np.float64))
    rule, i = _first_invalid(_readonly(index.asi8, np.int64), *arrays)
    if rule == 1:
        raise ValueError(f"bars.timestamp must be strictly increasing; row {i} is {index[i]}")
    if 2 <= rule <= 5:
        col = BAR_COLUMNS[rule - 1]
        raise ValueError(f"bars.{col} must be finite and > 0; row {i} has {arrays[rule - 2][i]}")
    if rule == 6:
        raise ValueError(f"bars.volume must be finite and >= 0; row {i} has {arrays[4][i]}")
    if rule == 7:
        raise ValueError(f"proba must lie in [0, 1] (NaN = no signal); index {i} has {proba[i]}")
    return index, arrays


def simulate(bars: pd.DataFrame, proba: np.ndarray, settings: SimSettings) -> TickerResult:
    """Backtest one ticker: `proba[t]` = P(up) seen at bar t's close, traded at bar t+1's open.

    `bars` follows the bar contract (sorted, UTC `timestamp`, open/high/low/close/volume); the
    rules are in this module's docstring. Pure: same inputs, same outputs, nothing is written.
    """
    if not isinstance(settings, SimSettings):
        raise TypeError(f"settings must be a SimSettings, got {type(settings).__name__}")
    index, arrays = _inputs(bars, np.asarray(proba, dtype=np.float64))
    session = session_days(index)
    s = settings
    if s.flat_at_close and len(session) > 1 and (session[1:] != session[:-1]).all():
        raise ValueError(
            "SimSettings.flat_at_close = True with one bar a session (daily bars) can never "
            "trade: an order fills at the next bar's open, which is in the next session; hold "
            "across sessions with flat_at_close=False (SimSettings.from_config(..., daily=True))"
        )
    out = _kernel(
        *arrays,
        _readonly(session, np.int64),
        float(s.capital),
        float(s.long_threshold),
        float(s.short_threshold),
        bool(s.allow_short),
        int(s.hold_bars),
        bool(s.exit_on_reversal),
        float(s.commission_per_share),
        float(s.min_commission),
        float(s.slippage_bps) * 1e-4,
        bool(s.half_spread),
        float(s.position_fraction),
        float(s.max_volume_fraction),
        bool(s.flat_at_close),
    )
    position, equity = out[0], out[1]
    entry, exit_, side, reason, shares, entry_px, exit_px, comm, pnl, ret = out[2:]
    close_exit = reason >= EXIT_SESSION
    trades = pd.DataFrame(
        {
            "entry_time": index[entry],
            "exit_time": index[exit_],
            "side": side,
            "shares": shares.astype(np.int64),
            "entry_price": entry_px,
            "exit_price": exit_px,
            "commission": comm,
            "pnl": pnl,
            "return": ret,
            "bars_held": exit_ - entry + close_exit,
            "exit_reason": pd.Categorical.from_codes(reason - 1, list(EXIT_REASONS.values())),
            "entry_bar": entry,
            "exit_bar": exit_,
        }
    )
    equity_s = pd.Series(equity, index=index, name="equity", copy=False)
    if len(session):
        last = np.flatnonzero(np.append(session[1:] != session[:-1], True))
        days = pd.DatetimeIndex(session[last].astype("datetime64[D]"), name="session")
        daily = pd.Series(equity[last], index=days, name="equity", copy=False)
    else:
        daily = pd.Series([], index=pd.DatetimeIndex([], name="session"), name="equity")
    return TickerResult(trades, equity_s, daily, position, float(s.capital))
