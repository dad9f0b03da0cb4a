"""The built-in synthetic market: realistic 1-minute bars with a known, tunable volume-price edge.

Why it exists: a new user has no data and no credentials, and the pipeline needs a market whose
truth is known to prove it finds a real edge (`signal_strength > 0`) and invents none (`= 0`).

The mechanism (a plausible order-flow story, not a copy of any feature): each minute carries a
flow imbalance `u` (buyers vs sellers) that shows in the bar as where the vwap sits inside the
range (buy pressure trades below the close), as extra volume and as more, smaller trades. The
imbalance feeds a persistent pressure state `s = phi*s + sqrt(1-phi^2)*u`, and the next minutes
drift with `kappa * g * s` (times the bar's volatility), where `g` is a monthly regime and
`kappa = 0.08 * signal_strength`. `drift` (annual, log) adds a trend to every minute of a
session: with `signal_strength` 0 that is the drift-only market, where prices trend inside every
session and nothing else is predictable, so for intraday labels the naive predictor (always up)
is the best any model can do. The overnight pull toward the ticker's level gives the trend back
between sessions (prices settle about drift / 252 / 0.01 in log above the level, so any date
range stays a slice of one bounded market): buy-and-hold across sessions does not gain from it,
and daily bars do not see a trend. Volatility
clusters (GARCH(1,1) on minute shocks), shocks are Student-t(4), volume and volatility follow a
U-shaped intraday curve, sessions come from the NYSE calendar (holidays, half days) and a few
minutes are missing, as in Polygon's data.

Everything is deterministic per (seed, ticker, session): the daily path is drawn from a fixed
epoch so any date range of one ticker is a slice of the same market. Cost: ~0.5 s per ticker-year.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from numba import njit

from vpt_ray.core.calendar import get_calendar

GENERATOR_VERSION = 2
EPOCH = dt.date(2015, 1, 2)
PHI = 0.9  # persistence of the pressure state per minute (half-life ~6.6 minutes)
KAPPA = 0.08  # drift per unit pressure, in units of the bar's volatility, at signal_strength 1
IMPACT = 0.3  # same-bar price impact of the flow imbalance
VWAP_SKEW = 0.2  # how far flow pushes the vwap from the range midpoint, as a fraction of range
GARCH_ALPHA, GARCH_BETA = 0.06, 0.90
T_DOF = 4.0
REGIMES = np.array([0.25, 1.0, 1.6])
TRADING_DAYS = 252  # sessions a year: the unit of `drift`
REVERSION = 0.01  # overnight pull of the log price toward the ticker's level (half-life ~70 days)


@dataclass(frozen=True)
class SyntheticParams:
    """What a synthetic file was generated with; a file whose params differ is regenerated."""

    seed: int
    signal_strength: float
    missing_minute_rate: float
    calendar: str = "XNYS"
    version: int = GENERATOR_VERSION
    drift: float = 0.0  # annual log drift of every price (the drift-only market: a trend, no edge)

    def to_json(self) -> str:
        d = asdict(self)
        if not d["drift"]:  # files made before the drift existed stay valid
            del d["drift"]
        return json.dumps(d, sort_keys=True)


@dataclass(frozen=True)
class TickerProfile:
    base_price: float
    daily_vol: float
    minute_volume: float
    trade_size: float


def _ticker_key(ticker: str) -> int:
    return zlib.crc32(ticker.encode())


def ticker_profile(seed: int, ticker: str) -> TickerProfile:
    """Per-ticker levels: about a third of tickers start in the $10-20 band."""
    rng = np.random.default_rng([seed, _ticker_key(ticker), 0])
    if rng.random() < 0.35:
        price = rng.uniform(10.0, 20.0)
    else:
        price = float(np.exp(rng.uniform(np.log(20.0), np.log(500.0))))
    return TickerProfile(
        base_price=float(price),
        daily_vol=float(rng.uniform(0.01, 0.03)),
        minute_volume=float(np.exp(rng.uniform(np.log(2e3), np.log(1e5)))),
        trade_size=float(rng.uniform(60, 200)),
    )


@lru_cache(maxsize=4)
def _schedule(calendar: str, end: dt.date) -> pd.DataFrame:
    cal = get_calendar(calendar)
    first = max(pd.Timestamp(EPOCH), cal.first_session)
    return cal.schedule.loc[first : pd.Timestamp(end)]


def _daily_path(params: SyntheticParams, ticker: str, n_days: int) -> dict[str, np.ndarray]:
    """Per-session state from the epoch: opening price, vol multiplier, regime, volume level."""
    prof = ticker_profile(params.seed, ticker)
    key = _ticker_key(ticker)

    def stream(j: int) -> np.random.Generator:  # one stream per quantity: prefixes never shift
        return np.random.default_rng([params.seed, key, 1, j])

    log_vol = np.zeros(n_days)
    z = stream(0).standard_normal(n_days)
    for i in range(1, n_days):  # O(days): a few thousand steps
        log_vol[i] = 0.97 * log_vol[i - 1] + 0.12 * z[i]
    vol_mult = np.exp(log_vol - 0.5 * 0.12**2 / (1 - 0.97**2))
    day_sd = prof.daily_vol * vol_mult
    gaps = 0.3 * day_sd * stream(2).standard_normal(n_days)
    regime_idx = np.zeros(n_days, dtype=np.int64)
    switch = stream(3).random(n_days) < 1 / 21  # a new regime about once a month
    draws = stream(4).integers(0, len(REGIMES), n_days)
    for i in range(1, n_days):
        regime_idx[i] = draws[i] if switch[i] else regime_idx[i - 1]
    volume_level = np.exp(0.3 * stream(5).standard_normal(n_days)) * vol_mult**0.7
    return {
        "gap": gaps,
        "minute_sd": day_sd / np.sqrt(390.0),
        "regime": REGIMES[regime_idx],
        "volume_level": volume_level,
    }


@njit(cache=True)
def _session_kernel(
    open0: float,
    minute_sd: float,
    kappa: float,
    u: np.ndarray,
    e: np.ndarray,
    curve: np.ndarray,
    out: np.ndarray,
    mu: float = 0.0,
) -> None:
    """Open/close/sigma/state for one session; out columns: open, close, sigma, state_before.
    `mu`: the drift added to every minute's log return (0: no trend)."""
    omega = 1.0 - GARCH_ALPHA - GARCH_BETA
    h = 1.0
    s = 0.0
    price = open0
    for i in range(u.shape[0]):
        if i > 0:
            h = omega + GARCH_ALPHA * e[i - 1] ** 2 + GARCH_BETA * h
        sig = minute_sd * curve[i] * np.sqrt(h)
        r = sig * (kappa * s + e[i] + IMPACT * u[i]) / np.sqrt(1.0 + IMPACT**2) + mu
        out[i, 0] = price
        out[i, 2] = sig
        out[i, 3] = s
        price = price * np.exp(r)
        out[i, 1] = price
        s = PHI * s + np.sqrt(1.0 - PHI**2) * u[i]


def _intraday_curve(n: int) -> np.ndarray:
    """U-shaped volatility multiplier, normalized so a full session's variance is unchanged."""
    i = np.arange(390)
    full = 1.0 + 1.2 * np.exp(-i / 25.0) + 0.6 * np.exp(-(389 - i) / 20.0)
    j = np.arange(n)
    curve = 1.0 + 1.2 * np.exp(-j / 25.0) + 0.6 * np.exp(-(n - 1 - j) / 20.0)
    return curve / np.sqrt(np.mean(full**2))


def _session_draws(
    params: SyntheticParams, ticker: str, k: int, n: int
) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """Session k's generator and its flow (u) and shock (e) draws, always drawn first."""
    rng = np.random.default_rng([params.seed, _ticker_key(ticker), 2, k])
    u = rng.standard_normal(n)
    e = rng.standard_t(T_DOF, n) * np.sqrt((T_DOF - 2) / T_DOF)
    return rng, u, e


@dataclass(frozen=True)
class SessionDraw:
    """One generated session: its bars and the hidden state behind them (every minute, kept or not).

    `vpt_ray.validation.oracle` reads the hidden state to compute the true probability of each
    label; the bars are what the rest of the pipeline sees.
    """

    bars: pd.DataFrame  # the contract bars of the kept minutes
    keep: np.ndarray  # bool per minute of the session: became a bar
    u: np.ndarray  # flow imbalance per minute
    e: np.ndarray  # standardized Student-t shock per minute
    sigma: np.ndarray  # the minute's return scale (minute_sd * curve * sqrt(h))
    state_before: np.ndarray  # pressure state driving the minute's drift (s after the previous)
    curve: np.ndarray  # intraday volatility multiplier per minute
    minute_sd: float
    kappa: float  # drift per unit pressure this session (KAPPA * signal_strength * regime)


def iter_sessions(
    params: SyntheticParams, ticker: str, start: dt.date, end: dt.date
) -> Iterator[SessionDraw]:
    """The sessions in [start, end] with their hidden state, in order (see `generate_ticker`)."""
    if end < start:
        raise ValueError(f"synthetic: end {end} is before start {start}")
    sched = _schedule(params.calendar, end)
    days = _daily_path(params, ticker, len(sched))
    prof = ticker_profile(params.seed, ticker)
    lengths = ((sched["close"] - sched["open"]) // pd.Timedelta(minutes=1)).to_numpy()
    kappas = KAPPA * params.signal_strength * days["regime"]
    first = int(np.searchsorted(sched.index.date, start))
    # Sessions chain from the epoch: each opens at the previous close times its overnight gap
    # (which holds a weak pull toward the ticker's level, so a $15 stock stays a $10-20 stock).
    # Sessions before `start` only run the compiled kernel (microseconds each).
    close = prof.base_price
    for k in range(len(sched)):
        rng, u, e = _session_draws(params, ticker, k, int(lengths[k]))
        n = len(u)
        arr = np.empty((n, 4))
        # keeps price levels in range (with a drift: the overnight pull gives back the session's
        # trend at equilibrium, prices settle about drift / 252 / REVERSION above the level)
        pull = -REVERSION * np.log(close / prof.base_price)
        open_k = close * np.exp(days["gap"][k] + pull)
        curve = _intraday_curve(n)
        mu = params.drift / TRADING_DAYS / n  # a session's share of the trend, minute by minute
        _session_kernel(open_k, days["minute_sd"][k], kappas[k], u, e, curve, arr, mu)
        close = arr[-1, 1]
        if k < first:
            continue
        minutes = pd.date_range(
            sched["open"].iloc[k], sched["close"].iloc[k], freq="1min", inclusive="left"
        )
        o, c, sig = arr[:, 0], arr[:, 1], arr[:, 2]
        hi = np.maximum(o, c) * np.exp(0.6 * sig * np.abs(rng.standard_normal(n)))
        lo = np.minimum(o, c) * np.exp(-0.6 * sig * np.abs(rng.standard_normal(n)))
        vwap = 0.5 * (hi + lo) - VWAP_SKEW * np.tanh(u) * (hi - lo)
        vol_curve = (
            1.0 + 2.0 * np.exp(-np.arange(n) / 20.0) + 1.5 * np.exp(-(n - 1 - np.arange(n)) / 15.0)
        )
        volume = np.round(
            prof.minute_volume
            * days["volume_level"][k]
            * vol_curve
            * np.exp(0.35 * rng.standard_normal(n) + 0.4 * (np.abs(u) - 0.8))
        )
        volume = np.maximum(volume, 100.0)
        size = prof.trade_size * np.exp(0.2 * rng.standard_normal(n) - 0.2 * np.abs(u))
        trans = np.maximum(1, np.round(volume / size)).astype(np.int64)
        keep = rng.random(n) >= params.missing_minute_rate
        keep[0] = keep[-1] = True
        bars = pd.DataFrame(
            {
                "timestamp": minutes[keep],
                "open": o[keep],
                "high": hi[keep],
                "low": lo[keep],
                "close": c[keep],
                "volume": volume[keep],
                "vwap": vwap[keep],
                "transactions": trans[keep],
            }
        )
        yield SessionDraw(
            bars=bars,
            keep=keep,
            u=u,
            e=e,
            sigma=sig,
            state_before=arr[:, 3],
            curve=curve,
            minute_sd=float(days["minute_sd"][k]),
            kappa=float(kappas[k]),
        )


def generate_ticker(
    params: SyntheticParams, ticker: str, start: dt.date, end: dt.date
) -> pd.DataFrame:
    """1-minute contract bars for one ticker over the sessions in [start, end]."""
    frames = [d.bars for d in iter_sessions(params, ticker, start, end)]
    if not frames:
        raise ValueError(f"synthetic: no {params.calendar} sessions between {start} and {end}")
    out = pd.concat(frames, ignore_index=True)
    out["timestamp"] = out["timestamp"].astype("datetime64[ns, UTC]")
    return out
