"""Exchange-calendar helpers: which UTC minutes are regular-session bars, and which dates trade.

Every source (Polygon, GCS, the local store) must agree on what "regular session" means,
including half days (13:00 ET closes) and holidays, so they all ask this module. Calendars come from
`exchange_calendars` with `side="left"`, so a session's minutes are the bar-start instants Polygon
uses (`t` = start of the bar). Building a calendar costs ~0.2 s; `get_calendar` caches one object
per name for the life of the process.

The bound: calendars are built from `CALENDAR_START` (1990-01-01), or from the library's own
earliest date for a calendar that starts later (XTKS: 1997). exchange_calendars' XNYS lists
holidays back to 1885, but it gives every session the 09:30-16:00 hours, which the NYSE has kept
only since 1985-09-30 (it opened at 10:00 before), so earlier minutes would be placed wrongly; the
first XNYS session supported is therefore 1990-01-02, the last the library's horizon (about a
year ahead of today). `calendar_bounds` gives both; data or a config outside them is an error
naming the bound, never a silent gap on the clock.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

# Calendars start here instead of the library's default (20 years back), so old daily data
# (e.g. 2000-2013 sample sets) can be filtered too; the build cost is the same.
CALENDAR_START = "1990-01-01"
_MINUTE = 60_000_000_000  # ns


@lru_cache(maxsize=8)
def get_calendar(name: str = "XNYS") -> xcals.ExchangeCalendar:
    """The cached `exchange_calendars` calendar `name` (side="left": minutes are bar starts)."""
    try:
        return xcals.get_calendar(name, side="left", start=CALENDAR_START)
    except xcals.errors.InvalidCalendarName as exc:
        raise ValueError(
            f"calendar {name!r} is not an exchange_calendars name (e.g. 'XNYS', 'XNAS')"
        ) from exc
    except ValueError:  # a calendar the library cannot evaluate that far back (XTKS: 1997)
        bound = type(xcals.get_calendar(name)).bound_min()
        if bound is None:
            raise
        return xcals.get_calendar(name, side="left", start=bound)


def calendar_bounds(name: str = "XNYS") -> tuple[dt.date, dt.date]:
    """First and last session the project supports on calendar `name` (see the module docs)."""
    cal = get_calendar(name)
    return cal.first_session.date(), cal.last_session.date()


def bound_problem(first: dt.date, last: dt.date, calendar: str = "XNYS") -> str | None:
    """Why dates [first, last] cannot go on the clock (outside `calendar_bounds`), else None."""
    lo, hi = calendar_bounds(calendar)
    if first < lo:
        return (
            f"first date {first} is before {lo}, the first {calendar} session the "
            f"exchange-calendar clock supports: drop the rows before {lo}"
        )
    if last > hi:
        return (
            f"last date {last} is after {hi}, the last {calendar} session the calendar knows "
            "(exchange_calendars looks about a year ahead)"
        )
    return None


def session_opens(dates: np.ndarray, calendar: str = "XNYS") -> np.ndarray:
    """UTC open (int64 ns) of each session date (datetime64[D] or dates); NaT's int64 for a
    date that is not a session."""
    opens = get_calendar(calendar).schedule["open"]
    index = pd.DatetimeIndex(opens.index).as_unit("ns")
    where = index.get_indexer(pd.DatetimeIndex(np.asarray(dates, dtype="datetime64[ns]")))
    ns = pd.DatetimeIndex(opens).as_unit("ns").asi8
    return np.where(where >= 0, ns[np.maximum(where, 0)], np.iinfo(np.int64).min)


def _check_bounds(cal: xcals.ExchangeCalendar, start: dt.date, end: dt.date) -> None:
    first, last = cal.first_session.date(), cal.last_session.date()
    if start < first or end > last:
        raise ValueError(f"dates {start}..{end} fall outside calendar {cal.name} ({first}..{last})")


def sessions(start: dt.date, end: dt.date, calendar: str = "XNYS") -> pd.DatetimeIndex:
    """Session dates (tz-naive midnights) of `calendar` within [start, end], inclusive."""
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    cal = get_calendar(calendar)
    _check_bounds(cal, start, end)
    return cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))


def _ns(col: pd.Series) -> np.ndarray:
    """A schedule column as int64 UTC nanoseconds (NaT -> int64 min)."""
    return pd.DatetimeIndex(col).as_unit("ns").asi8


def session_minutes(start: dt.date, end: dt.date, calendar: str = "XNYS") -> pd.DatetimeIndex:
    """UTC bar-start minutes of all regular sessions in [start, end] (390 a day, 210 on half days).

    Built from the schedule (opens, closes, breaks) rather than the calendar's all-minutes index,
    which costs tens of MB for a 1990 start.
    """
    days = sessions(start, end, calendar)
    if len(days) == 0:
        return pd.DatetimeIndex([], dtype="datetime64[ns, UTC]")
    sched = get_calendar(calendar).schedule.loc[days[0] : days[-1]]
    opens, closes = _ns(sched["open"]), _ns(sched["close"])
    counts = (closes - opens) // _MINUTE
    first = np.repeat(opens, counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    minutes = first + offset * _MINUTE
    minutes = minutes[~_in_break(minutes, sched)]
    return pd.DatetimeIndex(minutes.astype("datetime64[ns]")).tz_localize("UTC")


def _in_break(t: np.ndarray, sched: pd.DataFrame) -> np.ndarray:
    """True where int64 ns instants `t` fall in a session's lunch break (none on XNYS)."""
    out = np.zeros(len(t), dtype=bool)
    if "break_start" not in sched or sched["break_start"].isna().all():
        return out
    has = sched["break_start"].notna().to_numpy()
    bs, be = _ns(sched["break_start"][has]), _ns(sched["break_end"][has])
    i = np.searchsorted(bs, t, side="right") - 1
    ok = i >= 0
    out[ok] = t[ok] < be[i[ok]]
    return out


def exchange_dates(timestamps: pd.Series | pd.DatetimeIndex, calendar: str = "XNYS") -> np.ndarray:
    """The exchange-local calendar date (datetime64[D]) of each UTC timestamp."""
    idx = pd.DatetimeIndex(timestamps)
    local = idx.tz_convert(get_calendar(calendar).tz).tz_localize(None)
    return local.to_numpy().astype("datetime64[D]")


def in_session_mask(
    timestamps: pd.Series | pd.DatetimeIndex, calendar: str = "XNYS", *, daily: bool = False
) -> np.ndarray:
    """True where a bar belongs to a regular session.

    Intraday bars: the bar start lies in [open, close) of a session (so a 60-minute bar starting at
    09:00 ET, which mixes pre-market minutes, is outside). Daily bars (`daily=True`, Polygon stamps
    them at midnight ET): the bar's exchange-local date is a session.
    """
    idx = pd.DatetimeIndex(timestamps)
    if len(idx) == 0:
        return np.zeros(0, dtype=bool)
    if idx.tz is None:
        raise ValueError("timestamps are timezone-naive; the calendar needs UTC instants")
    cal = get_calendar(calendar)
    days = exchange_dates(idx, calendar)
    lo = pd.Timestamp(days.min()).date() - dt.timedelta(days=1)
    hi = pd.Timestamp(days.max()).date() + dt.timedelta(days=1)
    lo, hi = max(lo, cal.first_session.date()), min(hi, cal.last_session.date())
    if lo > hi:
        raise ValueError(f"dates {days.min()}..{days.max()} fall outside calendar {cal.name}")
    _check_bounds(cal, lo, hi)
    sched = cal.schedule.loc[pd.Timestamp(lo) : pd.Timestamp(hi)]
    if daily:
        return np.isin(days, sched.index.to_numpy().astype("datetime64[D]"))
    opens, closes = _ns(sched["open"]), _ns(sched["close"])
    t = idx.tz_convert("UTC").as_unit("ns").asi8
    i = np.searchsorted(opens, t, side="right") - 1
    ok = i >= 0
    ok[ok] = t[ok] < closes[i[ok]]
    return ok & ~_in_break(t, sched)


def filter_regular_session(
    df: pd.DataFrame, calendar: str = "XNYS", *, daily: bool = False
) -> pd.DataFrame:
    """Rows of `df` whose `timestamp` falls in a regular session (see `in_session_mask`)."""
    if df.empty:
        return df
    mask = in_session_mask(df["timestamp"], calendar, daily=daily)
    return df.loc[mask].reset_index(drop=True)


def restrict_dates(
    df: pd.DataFrame, start: dt.date, end: dt.date, calendar: str = "XNYS"
) -> pd.DataFrame:
    """Rows of `df` whose exchange-local date is within [start, end]."""
    if df.empty:
        return df
    days = exchange_dates(df["timestamp"], calendar)
    mask = (days >= np.datetime64(start, "D")) & (days <= np.datetime64(end, "D"))
    return df.loc[mask].reset_index(drop=True)
