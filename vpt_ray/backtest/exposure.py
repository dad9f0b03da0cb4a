"""How much of the book was at risk, and on which side: gross and net exposure of the portfolio
over time, from its bar-level record (`equity_bars.parquet`: every clock step's equity, gross and
net exposure as shares of the equity).

gross = sum over open positions of |shares| x mark / equity; net = sum of side x shares x mark /
equity; so the long book is (gross + net) / 2 and the short book (gross - net) / 2. Per session
(New York date of the bar): the mean and the maximum of gross over the session's bars, the mean
of net, the mean long and short books, and the share of bars with any position.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SESSION_COLUMNS = ("gross_mean", "gross_max", "net_mean", "long_mean", "short_mean", "in_market")


def session_exposure(bars: pd.DataFrame) -> pd.DataFrame:
    """Per session (`SESSION_COLUMNS`, index: naive session date) from bar-level rows with
    `timestamp` (UTC), `gross_exposure` and `net_exposure`."""
    from vpt_ray.backtest.engine import SESSION_TZ

    missing = {"timestamp", "gross_exposure", "net_exposure"} - set(bars.columns)
    if missing:
        raise ValueError(f"bar equity: missing columns {sorted(missing)} for the exposure")
    if not len(bars):
        return pd.DataFrame(columns=list(SESSION_COLUMNS), index=pd.DatetimeIndex([]))
    local = pd.to_datetime(bars["timestamp"], utc=True).dt.tz_convert(SESSION_TZ)
    day = local.dt.tz_localize(None).dt.normalize().to_numpy()
    gross = bars["gross_exposure"].to_numpy(np.float64)
    net = bars["net_exposure"].to_numpy(np.float64)
    frame = pd.DataFrame(
        {
            "gross": gross,
            "net": net,
            "long": (gross + net) / 2.0,
            "short": (gross - net) / 2.0,
            "in": gross > 0,
        }
    )
    g = frame.groupby(day)
    out = pd.DataFrame(
        {
            "gross_mean": g["gross"].mean(),
            "gross_max": g["gross"].max(),
            "net_mean": g["net"].mean(),
            "long_mean": g["long"].mean(),
            "short_mean": g["short"].mean(),
            "in_market": g["in"].mean(),
        }
    )
    out.index = pd.DatetimeIndex(out.index, name="session")
    return out


def exposure_summary(bars: pd.DataFrame) -> dict:
    """Over every bar: mean and max gross exposure, mean net, mean long and short books and the
    share of bars with a position (None without bars)."""
    keys = ("gross_mean", "gross_max", "net_mean", "long_mean", "short_mean", "in_market")
    if not len(bars):
        return dict.fromkeys(keys)
    gross = bars["gross_exposure"].to_numpy(np.float64)
    net = bars["net_exposure"].to_numpy(np.float64)
    return {
        "gross_mean": float(np.nanmean(gross)),
        "gross_max": float(np.nanmax(gross)),
        "net_mean": float(np.nanmean(net)),
        "long_mean": float(np.nanmean((gross + net) / 2.0)),
        "short_mean": float(np.nanmean((gross - net) / 2.0)),
        "in_market": float(np.mean(gross > 0)),
    }
