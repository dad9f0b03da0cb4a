"""Causal volume-price features and forward-direction labels for one ticker.

Every feature at bar t is a function of bars <= t only (rolling windows and EWMs that look back,
never centred, never back-filled); tests perturb future bars and check the past does not move.
Windows are counted in bars: a missing minute (Polygon omits minutes with no trades) makes a
window span one more minute, and `gap_minutes` tells the model so. Prices enter only as ratios,
so tickers at $15 and $500 pool into one model.

Labels, by bar size (`h` = `labels.horizon`, counted in the ticker's own bars):
- intraday bars (1min ... 60min, several bars a session): 1 when close[t + h] > close[t] and bar
  t + h is in the same session as t, else no label: a label never spans the close or the
  overnight gap, so `h` must be below the bars of a session (the config refuses more);
- daily bars (one bar a session): the label spans `h` sessions by construction (a same-session
  rule would leave every daily bar unlabelled); a missing session makes it span one more.
Each row carries `pos`, its bar's ordinal on the exchange-calendar clock shared by all tickers
(`clock_positions`), and `label_end`, the ordinal of the bar its label ends on: purging and the
training window's cut (`samples.SampleRule`) use it, so no label reaches a validation or backtest
window whatever the bar size.

The clock is the exchange calendar's, from its first supported session (`CLOCK_ORIGIN`:
`data.calendar.calendar_bounds`, 1990-01-02 for XNYS): session ordinal x slots + slot. It does
not depend on any ticker's data or on the synthetic generator, so training, CV, the backtest and
a saved model (its meta.json records the clock) all compute the same positions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from vpt_ray.core.calendar import calendar_bounds, get_calendar, session_opens
from vpt_ray.core.config_sections import feature_names  # the list the config validates
from vpt_ray.data.local import EXCHANGE_TZ

EPS = 1e-12
META_COLUMNS = ["timestamp", "session", "pos", "label_end", "y", "fwd_ret"]


@lru_cache(maxsize=4)
def _session_index(calendar: str) -> pd.Series:
    """Session date -> ordinal on the clock, from the calendar's first supported session."""
    sessions = get_calendar(calendar).sessions
    return pd.Series(np.arange(len(sessions), dtype=np.int64), index=sessions.date)


def clock_slots(bar_minutes: int) -> int:
    """Bars per session on the shared clock (1 for daily bars)."""
    return 1 if bar_minutes >= 390 else -(-390 // bar_minutes)


def clock_info(bar_minutes: int, calendar: str = "XNYS") -> dict:
    """What fixes the positions (saved in a model's meta.json and checked when it is reused)."""
    return {
        "calendar": calendar,
        "origin": str(calendar_bounds(calendar)[0]),
        "slots": clock_slots(bar_minutes),
    }


def session_of(pos: np.ndarray | int, slots: int, calendar: str = "XNYS") -> np.ndarray:
    """Session date(s) of clock position(s): the inverse of `clock_positions` by session."""
    index = _session_index(calendar)
    return np.asarray(index.index)[np.asarray(pos) // slots]


def clock_positions(ts: pd.Series, bar_minutes: int, calendar: str = "XNYS") -> np.ndarray:
    """Ordinal of each bar on a clock shared by all tickers (session * slots + slot)."""
    days = local_days(ts)
    codes, uniq = pd.factorize(days)  # a few hundred sessions for ~100k bars: look those up
    index = _session_index(calendar)
    found = pd.Index(pd.DatetimeIndex(index.index)).get_indexer(pd.DatetimeIndex(uniq))
    if (found < 0).any():
        day = pd.Timestamp(uniq[int(np.flatnonzero(found < 0)[0])]).date()
        lo, hi = calendar_bounds(calendar)
        why = (
            f"outside the {calendar} calendar's supported sessions {lo}..{hi}"
            if not lo <= day <= hi
            else f"not a {calendar} session"
        )
        bad = int(np.isin(codes, np.flatnonzero(found < 0)).sum())
        raise ValueError(f"{bad} bar(s) on dates {why} (first: {day})")
    sess = index.to_numpy()[found][codes].astype(np.int64)
    if bar_minutes >= 390:
        return sess
    slots = clock_slots(bar_minutes)
    # the slot counts bar lengths from the calendar's open, not from the ticker's first bar, so
    # a ticker whose 09:30 minute had no trade still puts its 09:31 bar on every ticker's 09:31
    opens = session_opens(np.asarray(uniq, dtype="datetime64[ns]"), calendar)[codes]
    since_open = pd.DatetimeIndex(ts).as_unit("ns").asi8 - opens
    slot = np.clip(since_open // (bar_minutes * 60_000_000_000), 0, slots - 1)
    return sess * slots + slot


def local_days(ts: pd.Series) -> pd.Series:
    """Each bar's exchange-local date as a tz-naive midnight (datetime64[us], the store's
    `session` type): vectorized, no Python date objects (they cost most of this stage)."""
    local = ts.dt.tz_convert(EXCHANGE_TZ).dt.tz_localize(None)
    return local.dt.normalize().astype("datetime64[us]")


def _rolling_mean(x: pd.Series, w: int) -> pd.Series:
    return x.rolling(w, min_periods=max(2, w // 2)).mean()


def _zscore(x: pd.Series, w: int) -> pd.Series:
    """(x - rolling mean) / rolling std over `w` bars; 0 where the window has no variation (a
    file without trade counts, stored as 0, gives constant trade features, not undefined ones)."""
    r = x.rolling(w, min_periods=max(2, w // 2))
    sd = r.std()
    return ((x - r.mean()) / sd.where(sd > 0)).where(~(sd == 0), 0.0)


def complete_rows(X: np.ndarray) -> np.ndarray:
    """Rows whose every feature is defined: the training samples' rule. A ticker's first bars
    lack the history of their rolling windows; left in, their missing cells would also make
    XGBoost store the whole quantized matrix in its sparse layout (~2x the dense one). The
    backtest still predicts on them (XGBoost routes missing values)."""
    return ~np.isnan(X).any(axis=1)


def build_features(
    bars: pd.DataFrame,
    windows: list[int],
    horizon: int,
    bar_minutes: int,
    calendar: str = "XNYS",
    dtype: str = "float32",
) -> pd.DataFrame:
    """Features, labels and clock positions for one ticker's contract bars (sorted, validated)."""
    ts = bars["timestamp"]
    o, h, lo, c = (bars[k].astype(float) for k in ("open", "high", "low", "close"))
    v, vw = bars["volume"].astype(float), bars["vwap"].astype(float)
    n_tr = bars["transactions"].astype(float)
    local_ts = ts.dt.tz_convert(EXCHANGE_TZ)
    session = local_days(ts)
    new_session = session.ne(session.shift())
    logc = np.log(c)
    rng = (h - lo).clip(lower=EPS)
    f: dict[str, pd.Series] = {}

    r1 = logc.diff()
    f["ret_1"] = r1
    rv_long = np.sqrt(_rolling_mean(r1**2, max(windows))).clip(lower=EPS)
    for w in windows:
        f[f"ret_{w}"] = (logc - logc.shift(w)) / (rv_long * np.sqrt(w))

    vwap_pos = (c - vw) / rng  # > 0: the bar closed above where its volume traded (buy pressure)
    f["vwap_pos"] = vwap_pos
    # Where the bar's volume traded inside its range (like Chaikin's close location value, with
    # the vwap for the close): > 0 when trading happened low in a bar, i.e. buyers lifting it.
    vwap_loc = ((h + lo) / 2 - vw) / rng
    f["vwap_loc"] = vwap_loc
    f["close_vwap_1"] = np.log(c / vw) / rv_long
    log_v = np.log1p(v)
    rel_vol = v / _rolling_mean(v, max(windows)).clip(lower=EPS)
    for w in windows:
        f[f"flow_ewm_{w}"] = (vwap_pos * rel_vol).ewm(span=w, adjust=False).mean()
        f[f"vwap_loc_ewm_{w}"] = vwap_loc.ewm(span=w, adjust=False).mean()
        roll_vwap = (vw * v).rolling(w, min_periods=1).sum() / v.rolling(w, min_periods=1).sum()
        f[f"close_vwap_{w}"] = np.log(c / roll_vwap) / rv_long
        f[f"vol_z_{w}"] = _zscore(log_v, w * 4)

    simple_ret = c.pct_change()
    vpt = (v * simple_ret).fillna(0).cumsum()
    obv = (np.sign(r1).fillna(0) * v).cumsum()
    for w in windows:
        vol_w = v.rolling(w, min_periods=1).sum().clip(lower=EPS)
        f[f"vpt_slope_{w}"] = (vpt - vpt.shift(w)) / vol_w / rv_long
        f[f"obv_slope_{w}"] = (obv - obv.shift(w)) / vol_w

    typical = (h + lo + c) / 3
    flow = typical * v
    up = flow.where(typical.diff() > 0, 0.0).rolling(14, min_periods=2).sum()
    down = flow.where(typical.diff() < 0, 0.0).rolling(14, min_periods=2).sum()
    f["mfi_14"] = up / (up + down).clip(lower=EPS)

    for w in windows:
        f[f"rv_{w}"] = np.sqrt(_rolling_mean(r1**2, w)) / rv_long
    log_range = np.log(h / lo)
    f["range_1"] = log_range / rv_long
    f[f"range_{windows[0]}"] = _rolling_mean(log_range, windows[0]) / rv_long

    log_n = np.log1p(n_tr)
    wl = max(windows)
    f["trades_z"] = _zscore(log_n, wl)
    f["trade_size_z"] = _zscore(log_v - log_n, wl)

    minutes_since_open = (local_ts - local_ts.groupby(session.to_numpy()).transform("min")).dt
    f["time_of_day"] = minutes_since_open.total_seconds() / (390 * 60)
    prev_close = c.shift().where(new_session)
    gap = np.log(o / prev_close)
    f["overnight_gap"] = gap.groupby(session.to_numpy()).transform("first") / rv_long
    gap_min = ts.diff().dt.total_seconds() / 60 / bar_minutes
    f["gap_minutes"] = gap_min.where(~new_session, 0.0)

    out = pd.DataFrame(f)[feature_names(windows)]
    out = out.replace([np.inf, -np.inf], np.nan).astype(dtype)

    pos = clock_positions(ts, bar_minutes, calendar)
    sess_codes = pd.factorize(session)[0]
    same_session = np.zeros(len(bars), dtype=bool)
    if len(bars) > horizon:
        same_session[:-horizon] = sess_codes[horizon:] == sess_codes[:-horizon]
        if bar_minutes >= 390:  # daily bars: the label spans days by construction
            same_session[:-horizon] = True
    fwd = np.full(len(bars), np.nan)
    label_end = pos.copy()
    if len(bars) > horizon:
        fwd[:-horizon] = logc.to_numpy()[horizon:] - logc.to_numpy()[:-horizon]
        label_end[:-horizon] = pos[horizon:]
    fwd[~same_session] = np.nan
    y = np.where(np.isnan(fwd), np.nan, (fwd > 0).astype(float))
    meta = pd.DataFrame(
        {
            "timestamp": ts.reset_index(drop=True),
            "session": session.to_numpy(),
            "pos": pos,
            "label_end": label_end,
            "y": y.astype(np.float32),
            "fwd_ret": fwd.astype(np.float32),
        }
    )
    return pd.concat([meta, out], axis=1)
