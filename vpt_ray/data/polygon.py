"""Polygon aggregates as a bar source: paced, retried, chunked, resumable, never leaking the key.

Polygon is the last real source in the chain: whatever neither the local store nor GCS holds is
fetched here through the official `polygon-api-client` (`RESTClient.list_aggs`, which follows
`next_url` pages itself). The client alone is not enough for a free-tier key (5 requests/minute):
it does not pace, its retries use a fixed 0.1 s backoff, it passes no timeout to urllib3, and it
turns a malformed body or a `status: ERROR` answer into an empty result. This module's source
fetches through the transport of `vpt_ray.data.polygon_transport` (pacing, retries, a strict JSON
decoder, no key in any URL).

A fetch is split into chunks of `chunk_days` calendar days; each chunk is mapped to the bar
contract, filtered to the regular session, validated and handed to `on_chunk` as soon as it
arrives, so an interrupted fetch keeps everything delivered before the failure.

Cost: one request per chunk (a month of 1-minute bars incl. extended hours is ~20k aggregates,
under the 50k page limit); at 5 requests/minute a year of one ticker takes ~13 requests, ~2.5 min.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import urllib3

from vpt_ray.core import calendar as xcal
from vpt_ray.core.config import PolygonConfig
from vpt_ray.data.bars import BarDataError, empty_bars, validate_bars
from vpt_ray.data.errors import SourceError
from vpt_ray.data.polygon_transport import (
    BadPayload,
    FetchStats,
    HttpStatus,
    Pacer,
    Redactor,
    RetriesExhausted,
    RetryPolicy,
    StrictJson,
    Transport,
    TransportError,
    Unreachable,
    shared_pacer,
    source_health,
)

log = logging.getLogger(__name__)

PAGE_LIMIT = 50_000  # Polygon's maximum `limit` for aggregates


def polygon_span(bar: str) -> tuple[int, str]:
    """Bar size -> Polygon (multiplier, timespan): "5min" -> (5, "minute"), "1day" -> (1, "day")."""
    if bar == "1day":
        return 1, "day"
    m = re.fullmatch(r"([1-9][0-9]*)min", bar)
    if not m:
        raise ValueError(f"bar {bar!r} is not a Polygon bar size; use '<N>min' or '1day'")
    return int(m.group(1)), "minute"


def chunk_ranges(start: dt.date, end: dt.date, chunk_days: int) -> list[tuple[dt.date, dt.date]]:
    """Split [start, end] into consecutive inclusive ranges of at most `chunk_days` days."""
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    if chunk_days < 1:
        raise ValueError(f"chunk_days must be >= 1, got {chunk_days}")
    out, a = [], start
    while a <= end:
        b = min(end, a + dt.timedelta(days=chunk_days - 1))
        out.append((a, b))
        a = b + dt.timedelta(days=1)
    return out


_AGG_FIELDS = {
    "timestamp": "t",
    "open": "o",
    "high": "h",
    "low": "l",
    "close": "c",
    "volume": "v",
    "vwap": "vw",
    "transactions": "n",
}


def aggs_to_frame(aggs: Iterable[Any]) -> pd.DataFrame:
    """Polygon `Agg` objects -> contract columns (t in ms -> UTC timestamp).

    Raises `BadPayload` naming the Polygon field (`vw`, `n`, ...) and the first bar lacking it:
    filling a missing vwap or trade count would invent data.
    """
    rows = list(aggs)
    if not rows:
        return empty_bars()
    cols = {c: [getattr(a, c) for a in rows] for c in _AGG_FIELDS}
    for c, short in _AGG_FIELDS.items():
        missing = [i for i, v in enumerate(cols[c]) if v is None]
        if missing:
            t = cols["timestamp"][missing[0]]
            raise BadPayload(
                f"{len(missing)} aggregate(s) lack field {short!r} ({c}), e.g. the bar at t={t}"
            )
    ts = pd.to_datetime(np.asarray(cols["timestamp"], dtype=np.int64), unit="ms", utc=True)
    out = pd.DataFrame({"timestamp": ts.astype("datetime64[ns, UTC]")})
    for c in ("open", "high", "low", "close", "volume", "vwap"):
        out[c] = np.asarray(cols[c], dtype=np.float64)
    out["transactions"] = np.asarray(cols["transactions"], dtype=np.int64)
    return out


class PolygonSource:
    """Polygon aggregates for one bar size, through the official client.

    `fetch` returns validated contract bars (regular session unless `regular_session_only=False`)
    for [start, end] in exchange dates. Daily bars keep Polygon's `t` (midnight US/Eastern of the
    session) as a UTC instant, e.g. 2024-01-02 05:00 UTC. Requests go through `shared_pacer(cfg)`
    unless `pacer` is given, so sources built per ticker still share one rate limit.
    """

    name = "polygon"

    def __init__(
        self,
        cfg: PolygonConfig,
        bar: str = "1min",
        calendar: str = "XNYS",
        vwap_tolerance: float = 0.001,
        env: Mapping[str, str] | None = None,
        *,
        regular_session_only: bool = True,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
    ):
        self.cfg, self.bar, self.calendar = cfg, bar, calendar
        self.vwap_tolerance = vwap_tolerance
        self.regular_session_only = regular_session_only
        self.multiplier, self.timespan = polygon_span(bar)
        xcal.get_calendar(calendar)  # fail early on a bad calendar name
        environ = os.environ if env is None else env
        key = (environ.get(cfg.api_key_env) or "").strip()
        self._key = key or None
        self._redact = Redactor(self._key)
        self.pacer = pacer or shared_pacer(cfg)
        self.retry = retry or RetryPolicy(max_retries=cfg.max_retries, backoff_s=cfg.backoff_s)
        self.health = source_health(cfg)
        self.stats = FetchStats()
        self._rest: Any = None

    def __repr__(self) -> str:
        return (
            f"PolygonSource(base_url={self.cfg.base_url!r}, bar={self.bar!r}, "
            f"key={'set' if self._key else 'missing'}, "
            f"requests_per_minute={self.pacer.per_minute:g})"
        )

    def unavailable_reason(self) -> str | None:
        """None when a key is configured and the server has not been found down in this run (no
        request is spent checking: a 401 shows on fetch)."""
        if not self._key:
            return f"no API key: set the environment variable {self.cfg.api_key_env}"
        return self.health.down

    def _client(self) -> Any:
        if self._rest is None:
            from polygon import RESTClient

            rest = RESTClient(
                api_key=self._key,
                base=self.cfg.base_url.rstrip("/"),
                connect_timeout=self.cfg.connect_timeout_s,
                read_timeout=self.cfg.timeout_s,
                retries=0,
                custom_json=StrictJson(self._redact),
            )
            if not isinstance(getattr(rest, "client", None), urllib3.PoolManager):
                raise SourceError(
                    self.name,
                    "this polygon-api-client version has no urllib3 `client` attribute to pace; "
                    "pin polygon-api-client 1.x",
                )
            rest.client = Transport(
                self.pacer,
                self.retry,
                self.cfg.timeout_s,
                self._redact,
                self.stats,
                connect_timeout_s=self.cfg.connect_timeout_s,
                health=self.health,
            )
            self._rest = rest
        return self._rest

    def _error(self, ticker: str, a: dt.date, b: dt.date, exc: Exception) -> SourceError:
        if isinstance(exc, HttpStatus):
            if exc.status == 401:
                cause = (
                    f"HTTP 401: the API key was rejected ({exc.detail}); "
                    f"check the {self.cfg.api_key_env} variable"
                )
            elif exc.status == 403:
                cause = f"HTTP 403: not authorized for this data ({exc.detail}); check the plan"
            else:
                cause = str(exc)
            return SourceError(self.name, self._redact(cause), ticker, a, b, retryable=False)
        if isinstance(exc, RetriesExhausted | Unreachable):
            return SourceError(self.name, self._redact(exc), ticker, a, b, retryable=True)
        return SourceError(self.name, self._redact(exc), ticker, a, b, retryable=False)

    def _fetch_chunk(self, ticker: str, a: dt.date, b: dt.date) -> pd.DataFrame:
        rest = self._client()
        try:
            aggs = rest.list_aggs(
                ticker,
                self.multiplier,
                self.timespan,
                a.isoformat(),
                b.isoformat(),
                adjusted=True,
                sort="asc",
                limit=PAGE_LIMIT,
            )
            raw = aggs_to_frame(aggs)
        except TransportError as exc:
            raise self._error(ticker, a, b, exc) from None
        except (AttributeError, TypeError, KeyError) as exc:  # e.g. results holding non-objects
            cause = self._redact(f"unexpected payload shape ({type(exc).__name__}: {exc})")
            raise SourceError(self.name, cause, ticker, a, b) from None
        source = f"polygon {ticker} {a}..{b}"
        try:
            raw = raw.sort_values("timestamp", kind="stable", ignore_index=True)
            df = raw
            if self.regular_session_only:
                df = xcal.filter_regular_session(df, self.calendar, daily=self.timespan == "day")
            df = xcal.restrict_dates(df, a, b, self.calendar)
            df = validate_bars(df, source, self.vwap_tolerance)
        except BarDataError:
            raise
        except ValueError as exc:  # calendar bounds and the like
            raise SourceError(self.name, str(exc), ticker, a, b) from None
        dropped = len(raw) - len(df)
        log.info(
            "polygon: %s %s..%s: %d bars (%d outside the session or range dropped)",
            ticker,
            a,
            b,
            len(df),
            dropped,
        )
        return df

    def fetch(
        self,
        ticker: str,
        start: dt.date,
        end: dt.date,
        on_chunk: Callable[[pd.DataFrame], None] | None = None,
    ) -> pd.DataFrame:
        """Bars of `ticker` for [start, end], fetched chunk by chunk.

        Each non-empty chunk is validated and passed to `on_chunk` before the next request, so a
        failure later keeps what was delivered. Chunks without any session are not requested.
        Raises `SourceError` (ticker, dates, cause) or `BarDataError` (contract breach).
        """
        reason = self.unavailable_reason()
        if reason:
            raise SourceError(self.name, reason, ticker, start, end)
        ticker = ticker.upper()
        frames = []
        for a, b in chunk_ranges(start, end, self.cfg.chunk_days):
            try:
                days = xcal.sessions(a, b, self.calendar)
            except ValueError as exc:
                raise SourceError(self.name, str(exc), ticker, a, b) from None
            if len(days) == 0:
                continue
            a2, b2 = days[0].date(), days[-1].date()
            df = self._fetch_chunk(ticker, a2, b2)
            self.stats.chunks += 1
            if df.empty:
                self.stats.empty_chunks += 1
                log.warning(
                    "polygon: %s %s..%s: no bars returned for %d session(s)",
                    ticker,
                    a2,
                    b2,
                    len(days),
                )
                continue
            self.stats.bars += len(df)
            frames.append(df)
            if on_chunk is not None:
                on_chunk(df)
        if not frames:
            return empty_bars()
        return validate_bars(
            pd.concat(frames, ignore_index=True), f"polygon {ticker}", self.vwap_tolerance
        )
