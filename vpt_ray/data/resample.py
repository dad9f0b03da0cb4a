"""Bar sizes: N-minute bars from 1-minute bars, and daily bars, without crossing sessions.

N-minute bins are anchored at each session's open from the exchange calendar (a 5-minute bar is
09:30-09:35 ET, also when a ticker had no trade at 09:30), so no bar mixes two sessions; vwap is
volume-weighted; a bin with no trades has no bar, like Polygon.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vpt_ray.core.calendar import session_opens
from vpt_ray.data.local import EXCHANGE_TZ


def is_daily(df: pd.DataFrame) -> bool:
    """True when the frame holds at most one bar per exchange date (a daily file)."""
    if df.empty:
        return False
    dates = df["timestamp"].dt.tz_convert(EXCHANGE_TZ).dt.date
    return bool(dates.nunique() == len(df))


def resample_bars(df: pd.DataFrame, bar: str, calendar: str = "XNYS") -> pd.DataFrame:
    """Aggregate contract bars to `bar` ("1min" returns the input; "Nmin"; "1day"); N-minute
    bins start at the `calendar` session's open."""
    if bar == "1min" or df.empty:
        return df
    if bar == "1day" and is_daily(df):
        return df
    if is_daily(df):
        raise ValueError(f"cannot build {bar} bars from a daily file: intraday bars are needed")
    local = df["timestamp"].dt.tz_convert(EXCHANGE_TZ)
    session = local.dt.normalize()
    if bar == "1day":
        key = session
    else:  # bins from the calendar's open: a missing 09:30 minute must not shift the session's grid
        step = int(bar.removesuffix("min")) * 60_000_000_000
        dates = session.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
        opens = session_opens(dates, calendar)
        ts = pd.DatetimeIndex(df["timestamp"]).as_unit("ns").asi8
        first = pd.Series(ts).groupby(session.to_numpy()).transform("min").to_numpy()
        opens = np.where(opens == np.iinfo(np.int64).min, first, opens)  # not a session: as was
        key = pd.DatetimeIndex(opens + (ts - opens) // step * step, tz="UTC")
    pv = df["vwap"] * df["volume"]
    g = df.assign(_key=key.to_numpy(), _pv=pv).groupby("_key", sort=True)
    out = pd.DataFrame(
        {
            "timestamp": g["timestamp"].min(),
            "open": g["open"].first(),
            "high": g["high"].max(),
            "low": g["low"].min(),
            "close": g["close"].last(),
            "volume": g["volume"].sum(),
            "_pv": g["_pv"].sum(),
            "transactions": g["transactions"].sum(),
        }
    ).reset_index(drop=True)
    vw = out["_pv"] / out["volume"].where(out["volume"] > 0)
    out["vwap"] = vw.fillna((out["high"] + out["low"]) / 2).clip(out["low"], out["high"])
    return out[["timestamp", "open", "high", "low", "close", "volume", "vwap", "transactions"]]
