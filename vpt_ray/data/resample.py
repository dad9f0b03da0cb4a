"""Bar sizes: N-minute bars from 1-minute bars, and daily bars, without crossing sessions.

N-minute bins are anchored at each session's open (a 5-minute bar is 09:30-09:35 ET), so no bar
mixes two sessions; vwap is volume-weighted; a bin with no trades has no bar, like Polygon.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vpt_ray.data.local import EXCHANGE_TZ


def is_daily(df: pd.DataFrame) -> bool:
    """True when the frame holds at most one bar per exchange date (a daily file)."""
    if df.empty:
        return False
    dates = df["timestamp"].dt.tz_convert(EXCHANGE_TZ).dt.date
    return bool(dates.nunique() == len(df))


def resample_bars(df: pd.DataFrame, bar: str) -> pd.DataFrame:
    """Aggregate contract bars to `bar` ("1min" returns the input; "Nmin"; "1day")."""
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
    else:
        minutes = int(bar.removesuffix("min"))
        first = df.groupby(session)["timestamp"].transform("min")
        offset = ((df["timestamp"] - first) // pd.Timedelta(minutes=minutes)).astype(np.int64)
        key = first + pd.to_timedelta(offset * minutes, unit="min")
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
