"""`vpt data import`: the bar files people actually have, turned into contract files in data.dir.

Why: the pipeline reads one contract file per ticker (`data/README.md`), but real files come as
Polygon REST aggregates saved to disk, Polygon flat files, CSVs or parquet frames indexed by date
from other tools, with naive timestamps in exchange time. Converting them by hand is where
lookahead (a daily bar dated a day late), silent time-zone shifts and invented fields creep in,
so the conversion is one tested function with every choice written down:

- Polygon REST aggregates (a saved `.json` response, or a table with `t o h l c v [vw n]`):
  `t` is Unix milliseconds, `vw` the vwap, `n` the trade count.
- Polygon flat files (`.csv.gz`, `ticker volume open close high low window_start
  transactions`, any number of tickers): `window_start` is Unix nanoseconds; no vwap.
- Any other table (`.csv`, `.parquet`, `.json`): open/high/low/close/volume in any case, time
  in a `timestamp`/`datetime`/`date`/`time` column or a DatetimeIndex (a CSV's unnamed first
  column), optional `vwap`/`vw`, `transactions`/`n`/`trades`, `ticker`/`symbol`, `adj close`.

- Naive timestamps are exchange time (`America/New_York` for XNYS) unless `--timezone` says
  otherwise; numbers are epochs (unit from the column, else from their magnitude).
- A file with one bar per exchange date is daily: each bar is stamped at midnight exchange time
  of its session, like Polygon's daily `t`. Daily rows stamped at 00:00 UTC (a date, not an
  instant) keep that date instead of becoming the previous evening in New York.
- A missing vwap is approximated by the typical price (high + low + close) / 3, a missing trade
  count is stored as 0 (the trade-count features are then constant): both are recorded in the
  file's parquet metadata (`vpt_ray.imports`) and in the printed report, never silent.
- An `adj close` column (split- and dividend-adjusted close, as Quandl/Yahoo frames have) adjusts
  open/high/low/close/vwap by adj close / close and volume by the inverse (`--no-adjust` keeps
  the raw prices): the contract wants split-adjusted prices.
- Rows outside the regular session (`data.regular_session_only`) and before the calendar clock's
  first session are dropped and counted. The result must pass `validate_bars`; it is merged into
  an existing file (existing rows win on equal timestamps, like the data chain) unless `replace`,
  and written atomically (temp file + rename).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vpt_ray.core.calendar import calendar_bounds, exchange_dates, get_calendar, in_session_mask
from vpt_ray.core.config import Config
from vpt_ray.core.config_sections import TICKER_RE
from vpt_ray.data import local
from vpt_ray.data.bars import BarDataError, validate_bars
from vpt_ray.data.resample import is_daily

ALIASES = {  # lower-cased input column -> contract column
    "t": "timestamp",
    "timestamp": "timestamp",
    "window_start": "timestamp",
    "datetime": "timestamp",
    "date": "timestamp",
    "time": "timestamp",
    "o": "open",
    "open": "open",
    "h": "high",
    "high": "high",
    "l": "low",
    "low": "low",
    "c": "close",
    "close": "close",
    "v": "volume",
    "volume": "volume",
    "vw": "vwap",
    "vwap": "vwap",
    "n": "transactions",
    "transactions": "transactions",
    "trades": "transactions",
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "adjclose": "adj_close",
    "ticker": "ticker",
    "symbol": "ticker",
}
EPOCH_UNITS = {"t": "ms", "window_start": "ns"}  # Polygon REST: ms; flat files: ns
TYPICAL_PRICE = "typical price (high + low + close) / 3"


@dataclass
class Imported:
    """One ticker's converted bars and what the conversion did (the report's row)."""

    ticker: str
    source: str
    shape: str
    bars: pd.DataFrame
    rows_in: int
    notes: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)  # goes into the file's metadata


# -- reading --------------------------------------------------------------------------------------


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".json", ".parquet", ".txt"):
        name = name.removesuffix(suffix)
    return name


def read_table(path: Path) -> tuple[pd.DataFrame, str | None]:
    """The file as a frame (a DatetimeIndex kept as the index) and the ticker it names, if any
    (Polygon's JSON `ticker`)."""
    name = path.name.lower()
    try:
        if name.endswith((".json", ".json.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt") as fh:
                payload = json.load(fh)
            if isinstance(payload, dict):
                if "results" not in payload:
                    raise BarDataError(str(path), "JSON object without 'results' (not aggregates)")
                return pd.DataFrame(payload["results"] or []), payload.get("ticker")
            return pd.DataFrame(payload), None
        if name.endswith(".parquet"):
            return pd.read_parquet(path), None
        if name.endswith((".csv", ".csv.gz", ".txt")):
            df = pd.read_csv(path)
            first = str(df.columns[0]) if len(df.columns) else ""
            if first.startswith("Unnamed") or first == "":  # a saved DatetimeIndex
                df = df.set_index(df.columns[0])
                df.index = pd.to_datetime(df.index)
            return df, None
    except BarDataError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BarDataError(str(path), f"unreadable file ({exc})") from None
    raise BarDataError(str(path), "unknown file type: use .csv, .csv.gz, .json or .parquet")


# -- converting -----------------------------------------------------------------------------------


def _timestamps(raw: pd.Series, column: str, naive_tz: str, source: str) -> tuple[pd.Series, str]:
    """UTC instants from epochs, strings or datetimes; the note says how they were read."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        unit = EPOCH_UNITS.get(column)
        if unit is None:
            big = float(np.nanmax(np.abs(raw.to_numpy(np.float64)))) if len(raw) else 0.0
            unit = "ns" if big > 1e17 else "us" if big > 1e14 else "ms" if big > 1e11 else "s"
        ts = pd.to_datetime(raw.astype(np.int64), unit=unit, utc=True)
        return ts, f"{column}: Unix {unit}"
    try:
        ts = pd.to_datetime(raw, utc=False, format="mixed") if raw.dtype == object else raw
        ts = pd.Series(pd.DatetimeIndex(ts), index=raw.index)
    except (ValueError, TypeError) as exc:
        raise BarDataError(source, f"column {column!r} is not a time: {exc}") from None
    if ts.dt.tz is None:
        try:
            ts = ts.dt.tz_localize(naive_tz, ambiguous="raise", nonexistent="raise")
        except (ValueError, TypeError) as exc:  # a DST-ambiguous or missing local time
            raise BarDataError(
                source, f"naive {column!r} is not a {naive_tz} time: {exc}"
            ) from None
        return ts.dt.tz_convert("UTC"), f"{column}: naive, read as {naive_tz}"
    return ts.dt.tz_convert("UTC"), f"{column}: {ts.dt.tz}"


def _columns(df: pd.DataFrame, source: str) -> tuple[pd.DataFrame, str, str]:
    """`df` with contract column names (+ `ticker`, `adj_close`), its time column's original
    name and the shape name."""
    if isinstance(df.index, pd.DatetimeIndex):
        df = df.reset_index(names="__index__")
        time_col = "__index__"
    else:
        time_col = None
    rename, seen = {}, {}
    for col in df.columns:
        key = str(col).strip().lower()
        target = ALIASES.get(key)
        if target is None or col == time_col:
            continue
        if target in seen:
            raise BarDataError(source, f"columns {seen[target]!r} and {col!r} both mean {target}")
        seen[target] = col
        rename[col] = target
    if time_col is not None:
        if "timestamp" in seen:
            raise BarDataError(source, f"a DatetimeIndex and a time column {seen['timestamp']!r}")
        rename[time_col] = "timestamp"
        seen["timestamp"] = "index"
    needed = ("timestamp", "open", "high", "low", "close", "volume")
    missing = [c for c in needed if c not in seen]
    if missing:
        raise BarDataError(
            source,
            f"no column for {missing} (columns: {[str(c) for c in df.columns]}); expected "
            "Polygon's t o h l c v [vw n], a flat file's window_start open high low close "
            "volume, or open high low close volume with a time column or DatetimeIndex",
        )
    lowered = {str(k).strip().lower() for k in seen.values()}
    shape = (
        "polygon flat file"
        if "window_start" in lowered
        else "polygon aggregates"
        if "t" in lowered
        else "table with a DatetimeIndex"
        if seen["timestamp"] == "index"
        else "table"
    )
    time_name = "index" if seen["timestamp"] == "index" else str(seen["timestamp"]).lower()
    return df.rename(columns=rename)[list(rename.values())], time_name, shape


def convert(
    df: pd.DataFrame,
    source: str,
    *,
    ticker: str | None = None,
    naive_tz: str = "America/New_York",
    adjust: bool = True,
) -> list[Imported]:
    """A read frame -> contract bars per ticker (split by a `ticker` column when present).

    Pure: nothing is written. Session filtering and the merge happen in `import_files`."""
    df, time_name, shape = _columns(df, source)
    ts, how = _timestamps(df["timestamp"], time_name, naive_tz, source)
    df = df.assign(timestamp=ts.to_numpy())
    if "ticker" in df.columns:
        if ticker is not None:
            df = df[df["ticker"].astype(str).str.upper() == ticker.upper()]
        groups = {str(k).strip().upper(): g for k, g in df.groupby("ticker", sort=True)}
    else:
        if ticker is None:
            raise BarDataError(source, "no ticker column and no ticker in the file name: --ticker")
        groups = {ticker.upper(): df}
    out = []
    for name, g in groups.items():
        if not TICKER_RE.match(name):
            raise BarDataError(source, f"ticker {name!r} is not a symbol ({TICKER_RE.pattern})")
        out.append(_one(g, name, source, shape, how, len(g), adjust))
    return out


def _one(
    g: pd.DataFrame, ticker: str, source: str, shape: str, how: str, rows_in: int, adjust: bool
) -> Imported:
    """One ticker's rows of a file as contract columns (see the module docs for each rule)."""
    g = g.sort_values("timestamp", kind="stable").reset_index(drop=True)
    notes, record = [how], {"shape": shape, "time": how}
    for c in ("open", "high", "low", "close", "volume"):
        g[c] = pd.to_numeric(g[c], errors="coerce").astype(np.float64)
    if adjust and "adj_close" in g.columns:
        factor = pd.to_numeric(g["adj_close"], errors="coerce") / g["close"]
        for c in ("open", "high", "low", "close", *(["vwap"] if "vwap" in g.columns else [])):
            g[c] = pd.to_numeric(g[c], errors="coerce") * factor
        g["volume"] = g["volume"] / factor
        notes.append("prices adjusted by adj close / close")
        record["adjusted"] = "adj close / close (prices), inverse (volume)"
    typical = (g["high"] + g["low"] + g["close"]) / 3
    if "vwap" in g.columns:
        vw = pd.to_numeric(g["vwap"], errors="coerce")
        filled = int(vw.isna().sum())
        g["vwap"] = vw.fillna(typical)
        if filled:
            notes.append(f"{filled} missing vwap(s) set to the {TYPICAL_PRICE}")
            record["vwap"] = f"given; {filled} missing set to the {TYPICAL_PRICE}"
        else:
            record["vwap"] = "given"
    else:
        g["vwap"] = typical
        notes.append(f"vwap approximated by the {TYPICAL_PRICE}")
        record["vwap"] = f"approximated by the {TYPICAL_PRICE}"
    if "transactions" in g.columns:
        n = pd.to_numeric(g["transactions"], errors="coerce")
        record["transactions"] = "given"
        if n.isna().any():
            notes.append(f"{int(n.isna().sum())} missing trade count(s) set to 0")
            record["transactions"] = f"given; {int(n.isna().sum())} missing set to 0"
        g["transactions"] = n.fillna(0).astype(np.int64)
    else:
        g["transactions"] = np.int64(0)
        notes.append("no trade counts in the input: 0")
        record["transactions"] = "absent (stored as 0)"
    bars = g[["timestamp", "open", "high", "low", "close", "volume", "vwap", "transactions"]]
    return Imported(ticker, source, shape, bars, rows_in, notes, record)


def as_daily(bars: pd.DataFrame, tz: str) -> tuple[pd.DataFrame, str | None]:
    """Daily bars stamped at midnight exchange time of their session (Polygon's daily `t`);
    rows stamped exactly 00:00 UTC are dates and keep their UTC date. The note says which."""
    ts = bars["timestamp"]
    utc_midnight = bool((ts.dt.tz_convert("UTC") == ts.dt.tz_convert("UTC").dt.normalize()).all())
    local_ts = ts.dt.tz_convert(tz)
    if utc_midnight and not (local_ts == local_ts.dt.normalize()).all():
        days = ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
        note = "daily rows stamped 00:00 UTC read as dates"
    else:
        days = local_ts.dt.tz_localize(None).dt.normalize()
        note = None
    stamped = days.dt.tz_localize(tz).dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return bars.assign(timestamp=stamped.to_numpy()), note


# -- writing --------------------------------------------------------------------------------------


def conform(item: Imported, cfg: Config) -> tuple[pd.DataFrame, bool]:
    """`item.bars` as the store keeps them: validated, daily bars stamped like Polygon's, rows
    before the clock's first session or outside the regular session dropped (counted in the
    notes). Returns (bars, daily)."""
    cal = cfg.data.calendar
    bars = item.bars
    daily = len(bars) > 1 and is_daily(bars)
    if daily:
        bars, note = as_daily(bars, str(get_calendar(cal).tz))
        if note:
            item.notes.append(note)
    lo, hi = calendar_bounds(cal)
    days = exchange_dates(bars["timestamp"], cal) if len(bars) else np.array([], "datetime64[D]")
    inside = (days >= np.datetime64(lo, "D")) & (days <= np.datetime64(hi, "D"))
    if not inside.all():
        item.notes.append(
            f"{int((~inside).sum())} bar(s) outside {lo}..{hi} dropped (the {cal} clock's range)"
        )
        bars = bars.loc[inside].reset_index(drop=True)
    bars = validate_bars(bars, item.source, cfg.data.vwap_tolerance)
    if cfg.data.regular_session_only and len(bars):
        keep = in_session_mask(bars["timestamp"], cal, daily=daily)
        if not keep.all():
            what = "on non-session dates" if daily else "outside the regular session"
            item.notes.append(f"{int((~keep).sum())} bar(s) {what} dropped")
            bars = bars.loc[keep].reset_index(drop=True)
    return bars, daily


def write_ticker(
    item: Imported, bars: pd.DataFrame, daily: bool, cfg: Config, replace: bool = False
) -> tuple[Path, int]:
    """Merge `bars` into `{data.dir}/{TICKER}.parquet` (existing rows win) or replace it; the
    import is appended to the file's metadata. Returns (path, bars in the file)."""
    path = local.ticker_path(cfg.data.dir, item.ticker)
    meta: dict = {}
    if path.exists() and not replace:
        meta = local.read_meta(path)
        old = local.read_bars(path, vwap_tolerance=cfg.data.vwap_tolerance)
        if len(old) and is_daily(old) != daily and len(old) + len(bars) > 2:
            raise BarDataError(
                str(path),
                f"holds {'daily' if is_daily(old) else 'intraday'} bars; {item.source} has "
                f"{'daily' if daily else 'intraday'} ones: import into another data.dir or "
                "pass --replace",
            )
        bars = (
            pd.concat([old, bars], ignore_index=True)
            .drop_duplicates("timestamp", keep="first")
            .sort_values("timestamp", ignore_index=True)
        )
        bars = validate_bars(bars, f"merged {path}", cfg.data.vwap_tolerance)
    entry = {
        "file": item.source,
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **item.record,
    }
    meta["imports"] = [*meta.get("imports", []), entry]
    local.write_bars(bars, path, meta)
    return path, len(bars)


def import_files(
    paths: list[Path],
    cfg: Config,
    *,
    ticker: str | None = None,
    naive_tz: str | None = None,
    adjust: bool = True,
    replace: bool = False,
) -> list[dict]:
    """Convert every file, then write one contract file per ticker; returns the report rows.

    Every file is converted and checked before anything is written, so a bad file (named with
    its rule) leaves the store as it was. Files of one ticker (e.g. a flat file a day) are
    combined before the write."""
    tz = naive_tz or str(get_calendar(cfg.data.calendar).tz)
    by_ticker: dict[str, list[tuple[Imported, pd.DataFrame, bool]]] = {}
    for path in paths:
        df, named = read_table(path)
        stem = _stem(path).upper()
        has_column = any(ALIASES.get(str(c).strip().lower()) == "ticker" for c in df.columns)
        from_name = stem if not (ticker or named or has_column) and TICKER_RE.match(stem) else None
        converted = convert(
            df, str(path), ticker=ticker or named or from_name, naive_tz=tz, adjust=adjust
        )
        for item in converted if from_name else []:
            item.notes.insert(0, f"ticker {from_name} from the file name")
        if not converted:
            raise BarDataError(str(path), f"no rows for ticker {ticker}")
        for item in converted:
            bars, daily = conform(item, cfg)
            by_ticker.setdefault(item.ticker, []).append((item, bars, daily))
    plans = []
    for name, parts in by_ticker.items():
        kinds = {daily for _, _, daily in parts}
        if len(kinds) > 1:
            files = ", ".join(i.source for i, _, _ in parts)
            raise BarDataError(files, f"{name}: some files hold daily bars, others intraday")
        sources = ", ".join(i.source for i, _, _ in parts)
        bars = pd.concat([b for _, b, _ in parts], ignore_index=True)
        bars = bars.sort_values("timestamp", kind="stable", ignore_index=True)
        bars = validate_bars(bars, f"{name} from {sources}", cfg.data.vwap_tolerance)
        plans.append((name, parts, bars, kinds.pop()))
    rows = []
    for name, parts, bars, daily in plans:  # every input converted and checked: now write
        record = {"files": [{"file": i.source, **i.record} for i, _, _ in parts]}
        merged = Imported(name, ", ".join(i.source for i, _, _ in parts), parts[0][0].shape,
                          bars, sum(i.rows_in for i, _, _ in parts), record=record)  # fmt: skip
        path, total = write_ticker(merged, bars, daily, cfg, replace)
        rows += [report_row(i, b, daily, path, total, cfg.data.calendar) for i, b, _ in parts]
    return rows


def report_row(
    item: Imported, bars: pd.DataFrame, daily: bool, path: Path, total: int, calendar: str
) -> dict:
    """One line of the import report: a file's bars of one ticker and what was done to them."""
    tz = get_calendar(calendar).tz
    fmt = "%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"
    first = bars["timestamp"].iloc[0].tz_convert(tz).strftime(fmt) if len(bars) else "-"
    last = bars["timestamp"].iloc[-1].tz_convert(tz).strftime(fmt) if len(bars) else "-"
    return {
        "file": Path(item.source).name,
        "ticker": item.ticker,
        "shape": item.shape,
        "bar": "1day" if daily else "intraday",
        "rows": item.rows_in,
        "bars": len(bars),
        "first": first,
        "last": last,
        "written": f"{path} ({total:,} bars)",
        "notes": list(item.notes),
    }
