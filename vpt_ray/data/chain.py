"""The data chain: local store, then GCS, then Polygon, then (if allowed) the synthetic market.

A phase asks for (tickers, period); for each ticker the chain finds what the local store lacks,
asks the remote sources for exactly those sessions, validates and merges what arrives, and writes it
back to the local store atomically, so the next run is local. Synthetic bars are used only for a
ticker with no real data anywhere, never mixed with real bars, and always announced.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from vpt_ray.bars import empty_bars, validate_bars
from vpt_ray.config import Config
from vpt_ray.data import local
from vpt_ray.data.calendar import get_calendar
from vpt_ray.data.synthetic import SyntheticParams, generate_ticker

log = logging.getLogger(__name__)


class DataUnavailableError(ValueError):
    """A ticker's bars could not be found or completed by any configured source."""


class RemoteSource(Protocol):
    name: str

    def unavailable_reason(self) -> str | None: ...

    def fetch(self, ticker: str, start: dt.date, end: dt.date) -> pd.DataFrame: ...


@dataclass
class TickerData:
    """Where one ticker's bars live after the chain ran, and where they came from."""

    ticker: str
    path: Path
    synthetic: bool
    origins: list[dict] = field(default_factory=list)
    missing_sessions: int = 0


def expected_sessions(calendar: str, start: dt.date, end: dt.date) -> list[dt.date]:
    return [d.date() for d in get_calendar(calendar).sessions_in_range(start, end)]


def _ranges(dates: list[dt.date], calendar: str) -> list[tuple[dt.date, dt.date]]:
    """Group session dates into runs of consecutive sessions."""
    if not dates:
        return []
    sessions = [d.date() for d in get_calendar(calendar).sessions_in_range(dates[0], dates[-1])]
    index = {d: i for i, d in enumerate(sessions)}
    runs: list[tuple[dt.date, dt.date]] = []
    first = prev = dates[0]
    for d in dates[1:]:
        if index[d] != index[prev] + 1:
            runs.append((first, prev))
            first = d
        prev = d
    runs.append((first, prev))
    return runs


def _fmt_ranges(runs: list[tuple[dt.date, dt.date]], limit: int = 4) -> str:
    text = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in runs[:limit])
    return text + (f" (+{len(runs) - limit} more)" if len(runs) > limit else "")


def make_remote_source(name: str, cfg: Config) -> RemoteSource:
    """Registry of remote sources (imported lazily: gcsfs and polygon are heavy)."""
    if name == "gcs":
        from vpt_ray.data.gcs import GcsSource

        return GcsSource(cfg.gcs, vwap_tolerance=cfg.data.vwap_tolerance)
    if name == "polygon":
        from vpt_ray.data.polygon import PolygonSource

        return PolygonSource(
            cfg.polygon,
            bar="1min" if cfg.data.bar != "1day" else "1day",
            calendar=cfg.data.calendar,
            vwap_tolerance=cfg.data.vwap_tolerance,
        )
    raise ValueError(f"unknown remote source {name!r}; known: gcs, polygon")


def synthetic_params(cfg: Config) -> SyntheticParams:
    return SyntheticParams(
        seed=cfg.synthetic.seed,
        signal_strength=cfg.synthetic.signal_strength,
        missing_minute_rate=cfg.synthetic.missing_minute_rate,
        calendar=cfg.data.calendar,
    )


def ensure_synthetic(cfg: Config, ticker: str, start: dt.date, end: dt.date) -> TickerData:
    """Reuse the cached synthetic file when its parameters and dates match, else regenerate."""
    params = synthetic_params(cfg)
    path = local.ticker_path(cfg.data.dir, ticker, synthetic=True)
    meta = local.read_meta(path) if path.exists() else {}
    cached = meta.get("synthetic")
    if (
        cached
        and cached.get("params") == json_params(params)
        and cached.get("start") <= start.isoformat()
        and cached.get("end") >= end.isoformat()
    ):
        how = "cached"
    else:
        if cached:
            log.info(
                "%s: synthetic cache was made with other parameters or dates: regenerating", ticker
            )
        df = generate_ticker(params, ticker, start, end)
        meta = {"synthetic": {"params": json_params(params), "start": str(start), "end": str(end)}}
        local.write_bars(df, path, meta)
        how = "generated"
    origin = {"source": "synthetic", "how": how, "start": str(start), "end": str(end)}
    log.warning("%s: SYNTHETIC bars (%s, signal_strength=%s)", ticker, how, params.signal_strength)
    return TickerData(ticker, path, synthetic=True, origins=[origin])


def json_params(params: SyntheticParams) -> dict:
    return json.loads(params.to_json())


def resolve_ticker(cfg: Config, ticker: str, start: dt.date, end: dt.date) -> TickerData:
    """Make the local store hold `ticker` for [start, end] (or point at synthetic bars)."""
    cal = cfg.data.calendar
    path = local.ticker_path(cfg.data.dir, ticker)
    have = (
        local.read_bars(path, vwap_tolerance=cfg.data.vwap_tolerance)
        if path.exists()
        else empty_bars()
    )
    wanted = expected_sessions(cal, start, end)
    have_dates = set(local.session_dates(have["timestamp"])) if len(have) else set()
    missing = [d for d in wanted if d not in have_dates]
    origins = []
    if have_dates & set(wanted):
        origins.append({"source": "local", "sessions": len(set(wanted) & have_dates)})
    tried, unavailable = ["local"], []
    for name in cfg.data.sources:
        if not missing or name in ("local", "synthetic"):
            continue
        tried.append(name)
        source = make_remote_source(name, cfg)
        reason = source.unavailable_reason()
        if reason:
            log.info("%s: source %s unavailable: %s", ticker, name, reason)
            unavailable.append(f"{name} ({reason})")
            continue
        for a, b in _ranges(missing, cal):
            fetched = source.fetch(ticker, a, b)
            if fetched.empty:
                continue
            fetched = validate_bars(fetched, f"{name}:{ticker}", cfg.data.vwap_tolerance)
            merged = (
                pd.concat([have, fetched], ignore_index=True)
                .drop_duplicates("timestamp", keep="first")
                .sort_values("timestamp", ignore_index=True)
            )
            have = validate_bars(merged, f"merged {ticker}", cfg.data.vwap_tolerance)
            local.write_bars(have, path)
            n = len(set(local.session_dates(fetched["timestamp"])))
            origins.append({"source": name, "start": str(a), "end": str(b), "sessions": n})
            log.info("%s: %s delivered %d sessions for %s..%s", ticker, name, n, a, b)
        have_dates = set(local.session_dates(have["timestamp"]))
        missing = [d for d in wanted if d not in have_dates]
    if not have_dates & set(wanted):
        if "synthetic" in cfg.data.sources:
            return ensure_synthetic(cfg, ticker, start, end)
        raise DataUnavailableError(
            f"{ticker}: no bars for {start}..{end} in any source; tried {', '.join(tried)}"
            + (f"; unavailable: {'; '.join(unavailable)}" if unavailable else "")
        )
    if missing and unavailable:
        raise DataUnavailableError(
            f"{ticker}: {len(missing)} sessions missing ({_fmt_ranges(_ranges(missing, cal))}) and "
            f"unavailable: {'; '.join(unavailable)}"
        )
    if missing:
        log.warning(
            "%s: %d sessions have no bars in any source (%s)",
            ticker,
            len(missing),
            _fmt_ranges(_ranges(missing, cal)),
        )
    return TickerData(ticker, path, synthetic=False, origins=origins, missing_sessions=len(missing))


def resolve(cfg: Config, start: dt.date, end: dt.date) -> tuple[dict[str, TickerData], list[str]]:
    """Run the chain for every configured ticker; returns (resolved, skipped tickers)."""
    out: dict[str, TickerData] = {}
    skipped: list[str] = []
    for ticker in cfg.data.tickers:
        try:
            out[ticker] = resolve_ticker(cfg, ticker, start, end)
        except DataUnavailableError as exc:
            if cfg.data.on_missing == "skip":
                log.warning("skipping %s: %s", ticker, exc)
                skipped.append(ticker)
                continue
            raise
    if not out:
        raise DataUnavailableError("no ticker has data: every configured ticker was skipped")
    return out, skipped
