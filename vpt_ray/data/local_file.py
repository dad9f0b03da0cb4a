"""The chain's view of one ticker's local file (`LocalFile`): which sessions it holds, which a
source said have no bars (kept in the file's metadata, so they are not asked again), merging
arrivals in (existing rows win on equal timestamps) and writing it back atomically; plus the
checks every arrival passes (calendar bounds, regular session) and the session-range helpers the
chain's messages use. The bar size the store keeps is `fetch_bar`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vpt_ray.core.calendar import bound_problem, exchange_dates, get_calendar, in_session_mask
from vpt_ray.core.config import Config
from vpt_ray.data import local
from vpt_ray.data.bars import BarDataError, empty_bars, validate_bars
from vpt_ray.data.resample import is_daily, resample_bars

log = logging.getLogger("vpt_ray.data.chain")  # the chain's log, as before

Range = tuple[dt.date, dt.date]


def expected_sessions(calendar: str, start: dt.date, end: dt.date) -> list[dt.date]:
    return [d.date() for d in get_calendar(calendar).sessions_in_range(start, end)]


def session_ranges(dates: list[dt.date], calendar: str) -> list[Range]:
    """Group sorted session dates into runs of consecutive sessions."""
    if not dates:
        return []
    sessions = [d.date() for d in get_calendar(calendar).sessions_in_range(dates[0], dates[-1])]
    index = {d: i for i, d in enumerate(sessions)}
    runs: list[Range] = []
    first = prev = dates[0]
    for d in dates[1:]:
        if index[d] != index[prev] + 1:
            runs.append((first, prev))
            first = d
        prev = d
    runs.append((first, prev))
    return runs


def fmt_ranges(runs: list[Range], limit: int = 4) -> str:
    text = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in runs[:limit])
    return text + (f" (+{len(runs) - limit} more)" if len(runs) > limit else "")


def fetch_bar(cfg: Config) -> str:
    """The bar size the local store keeps: daily for `data.bar: 1day`, else 1-minute bars."""
    return "1day" if cfg.data.bar == "1day" else "1min"


def check_calendar_bounds(df: pd.DataFrame, source: str, calendar: str) -> None:
    """Reject bars dated outside the sessions the calendar clock supports (`calendar_bounds`),
    naming the first date and the bound (not "not a session" for a date the clock cannot hold)."""
    if df.empty:
        return
    first, last = (
        pd.Timestamp(d).date() for d in exchange_dates(df["timestamp"].iloc[[0, -1]], calendar)
    )
    problem = bound_problem(first, last, calendar)
    if problem:
        raise BarDataError(source, problem)


def check_session(df: pd.DataFrame, source: str, calendar: str) -> None:
    """Reject bars outside the regular session (`data.regular_session_only`).

    Intraday bars must start within [open, close) of a session; a daily file (one bar per
    exchange date) must hold session dates only.
    """
    if df.empty:
        return
    daily = is_daily(df)
    inside = in_session_mask(df["timestamp"], calendar, daily=daily)
    if inside.all():
        return
    i = int(np.flatnonzero(~inside)[0])
    ts = df["timestamp"].iloc[i]
    et = ts.tz_convert(get_calendar(calendar).tz)
    rule = (
        f"{int((~inside).sum())} daily bar(s) on dates that are not {calendar} sessions"
        if daily
        else f"{int((~inside).sum())} bar(s) outside the regular {calendar} session"
    )
    raise BarDataError(
        source,
        rule + " (data.regular_session_only is true)",
        f"row {i}: timestamp={ts} ({et:%Y-%m-%d %H:%M %Z})",
    )


def _session_dates(df: pd.DataFrame, calendar: str) -> set[dt.date]:
    if df.empty:
        return set()
    return {pd.Timestamp(d).date() for d in np.unique(exchange_dates(df["timestamp"], calendar))}


def _expand(runs: list, calendar: str) -> set[dt.date]:
    out: set[dt.date] = set()
    for a, b in runs:
        out.update(expected_sessions(calendar, dt.date.fromisoformat(a), dt.date.fromisoformat(b)))
    return out


def _to_daily(df: pd.DataFrame, tz: str) -> pd.DataFrame:
    """Minute bars -> one bar per session stamped at midnight exchange time (Polygon's daily t)."""
    out = resample_bars(df, "1day")
    ts = out["timestamp"].dt.tz_convert(tz).dt.normalize().dt.tz_convert("UTC")
    return out.assign(timestamp=ts.astype("datetime64[ns, UTC]"))


def _check_name_case(path: Path, ticker: str) -> None:
    """A store file named in another case than the (upper-case) ticker is an error, not a
    missing file: on a case-sensitive disk it would be silently ignored (and GCS names objects
    in upper case)."""
    if not path.parent.is_dir():
        return
    for other in path.parent.glob("*.parquet"):
        if other.stem.upper() == ticker.upper() and other.name != path.name:
            raise BarDataError(
                str(other),
                f"file name is not {path.name}: tickers are upper case (data.tickers is "
                f"upper-cased at load); rename it to {path}",
            )


class LocalFile:
    """One ticker's local parquet file: its bars, known-absent sessions and atomic merges."""

    def __init__(self, cfg: Config, ticker: str):
        self.cfg, self.ticker = cfg, ticker
        self.cal = cfg.data.calendar
        self.path = local.ticker_path(cfg.data.dir, ticker)
        self.meta: dict = {}
        self._dirty = False
        self.bars = empty_bars()
        if self.path.exists():
            self.meta = local.read_meta(self.path)
            self.bars = local.read_bars(self.path, vwap_tolerance=cfg.data.vwap_tolerance)
            check_calendar_bounds(self.bars, f"{ticker} ({self.path})", self.cal)
            if cfg.data.regular_session_only:
                check_session(self.bars, str(self.path), self.cal)
        else:
            _check_name_case(self.path, ticker)
        self.dates = _session_dates(self.bars, self.cal)
        self.daily = is_daily(self.bars) if len(self.bars) > 1 else None
        if self.daily and cfg.data.bar != "1day":
            raise BarDataError(
                str(self.path),
                f"holds daily bars but data.bar is {cfg.data.bar}: intraday bars are needed "
                "(move the file away or set data.bar: 1day)",
            )

    @property
    def bar(self) -> str:
        """The bar size to fetch: what the file already holds, else what the config asks for."""
        if self.daily is False:
            return "1min"
        return fetch_bar(self.cfg)

    def absent(self, source: str) -> set[dt.date]:
        """Sessions `source` answered for without bars on an earlier run."""
        return _expand(self.meta.get("absent", {}).get(source, []), self.cal)

    def mark_absent(self, source: str, dates: set[dt.date]) -> None:
        if not dates:
            return
        known = self.absent(source) | dates
        runs = session_ranges(sorted(known), self.cal)
        self.meta.setdefault("absent", {})[source] = [[str(a), str(b)] for a, b in runs]
        self._dirty = True

    def conform(self, fetched: pd.DataFrame, label: str) -> pd.DataFrame:
        """A source's bars in this file's form: validated, regular session, daily if daily."""
        df = validate_bars(fetched, label, self.cfg.data.vwap_tolerance)
        if df.empty:
            return df
        daily = self.bar == "1day"
        daily_in = daily and is_daily(df)
        if self.cfg.data.regular_session_only:
            keep = in_session_mask(df["timestamp"], self.cal, daily=daily_in)
            if not keep.all():
                log.info("%s: %d bars outside the session dropped", label, int((~keep).sum()))
                df = df.loc[keep].reset_index(drop=True)
        if daily and not daily_in and len(df):
            df = _to_daily(df, str(get_calendar(self.cal).tz))
        return validate_bars(df, label, self.cfg.data.vwap_tolerance)

    def merge(self, fetched: pd.DataFrame, label: str) -> pd.DataFrame:
        """Merge conformed bars into the file and write it atomically; returns the new bars.

        Rows already in the file win on equal timestamps, and the write replaces the file only
        once the merged frame passed validation, so nothing stored is lost or overwritten.
        """
        new = self.conform(fetched, label)
        if new.empty:
            return new
        merged = (
            pd.concat([self.bars, new], ignore_index=True)
            .drop_duplicates("timestamp", keep="first")
            .sort_values("timestamp", ignore_index=True)
        )
        merged = validate_bars(merged, f"merged {self.path}", self.cfg.data.vwap_tolerance)
        local.write_bars(merged, self.path, self.meta or None)
        self.bars, self._dirty = merged, False
        self.dates |= _session_dates(new, self.cal)
        if self.daily is None and len(merged) > 1:
            self.daily = is_daily(merged)
        return new

    def save_meta(self) -> None:
        """Persist metadata changes (known-absent sessions) of a file that holds bars."""
        if self._dirty and len(self.bars):
            local.write_bars(self.bars, self.path, self.meta)
            self._dirty = False
