"""`python -m vpt_ray.data fetch|import|check`: fill the local store ahead of a run, bring your
own files into it, and audit it.

`fetch --phase N` runs the data chain (local -> GCS -> Polygon, never synthetic) for the phase's
tickers over its training and backtest period, so the phase itself starts from a warm local store;
a free-tier Polygon key needs minutes per ticker-year, which is better spent before than during a
run. `check` reads every file of a store with the same validation the pipeline uses and prints
one row per file, so a broken file is found before a phase trips over it. `import FILE...`
converts the files people have (Polygon REST aggregates or flat files, CSV/parquet frames with a
DatetimeIndex, naive exchange-time stamps; `vpt_ray.data.importer`) into contract files in
`data.dir`, atomically, and prints what it did to each file.

Exit codes: 0 = done / every file passes; 1 = some ticker is incomplete or some file breaks the
contract; 2 = bad invocation or config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from vpt_ray.core.bounded import bounded_lines
from vpt_ray.core.config import Config, ConfigError, load_config
from vpt_ray.data.bars import BarDataError
from vpt_ray.pipeline.cli import EXIT_USER_ERROR, add_config_args, guarded, user_errors
from vpt_ray.pipeline.parsers import prog

EXIT_INCOMPLETE = 1
log = logging.getLogger("vpt_ray.data")


def _config(args: argparse.Namespace) -> Config:
    phase = getattr(args, "phase", None)  # --config overlays config/phaseN.yaml, as for a run
    return load_config(phase=phase, config_path=args.config, overrides=args.overrides)


def _say(text: str) -> None:
    print(text, flush=True)


# -- fetch ----------------------------------------------------------------------------------------


def fetch(cfg: Config) -> int:
    """Resolve every ticker of `cfg` for data.start..backtest.end from real sources only."""
    from vpt_ray.data import chain

    real = [s for s in cfg.data.sources if s != "synthetic"]
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": real})})
    start, end = cfg.data.start, cfg.backtest.end
    n_sessions = len(chain.expected_sessions(cfg.data.calendar, start, end))
    tickers = cfg.data.tickers
    _say(
        f"fetch: phase {cfg.phase}, {len(tickers)} ticker(s), {start}..{end} "
        f"({n_sessions} sessions), {cfg.data.bar} bars into {cfg.data.dir}/ "
        f"from {' -> '.join(real)}"
    )
    sources = chain.Sources(cfg)
    failed: dict[str, str] = {}
    t0 = time.monotonic()
    for i, ticker in enumerate(tickers, 1):
        tag = f"[{i}/{len(tickers)}] {ticker}"
        _say(f"{tag}: ...")
        t1 = time.monotonic()
        try:
            td = chain.resolve_ticker(cfg, ticker, start, end, sources)
        except user_errors() as exc:
            failed[ticker] = str(exc)
            _say(f"{tag}: INCOMPLETE: {exc}")
            continue
        _say(f"{tag}: ok in {time.monotonic() - t1:.1f}s: {chain.describe(td)}")
    calls = ", ".join(f"{n} x{k}" for n, k in sorted(sources.calls.items())) or "none"
    _say(
        f"fetch: {len(tickers) - len(failed)}/{len(tickers)} tickers complete in "
        f"{time.monotonic() - t0:.1f}s (remote fetches: {calls})"
    )
    if failed:
        _say(f"fetch: MISSING data for {', '.join(failed)}:")
        for why in failed.values():
            _say(f"  {why}")
        return EXIT_INCOMPLETE
    return 0


# -- import ---------------------------------------------------------------------------------------


def import_(args: argparse.Namespace, cfg: Config) -> int:
    """Convert `args.files` into contract files in data.dir and print one row per file and
    ticker; nothing is written unless every file converts."""
    from vpt_ray.data.importer import import_files

    data_dir = args.data_dir or Path(cfg.data.dir)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dir": str(data_dir)})})
    session = "regular session only" if cfg.data.regular_session_only else "any hours"
    _say(f"import: {len(args.files)} file(s) into {data_dir}/ ({cfg.data.calendar}, {session})")
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing)}")
    rows = import_files(
        args.files,
        cfg,
        ticker=args.ticker,
        naive_tz=args.timezone,
        adjust=not args.no_adjust,
        replace=args.replace,
    )
    for file in dict.fromkeys(r["file"] for r in rows):
        mine = [r for r in rows if r["file"] == file]
        common = [n for n in mine[0]["notes"] if all(n in r["notes"] for r in mine)]
        _say(f"{file} ({mine[0]['shape']}, {len(mine)} ticker(s)): {'; '.join(common)}")
        width = max(len(r["ticker"]) for r in mine)
        for r in mine:
            extra = "".join(f"; {n}" for n in r["notes"] if n not in common)
            _say(
                f"  {r['ticker']:<{width}}  {r['rows']:>9,} rows -> {r['bars']:>9,} {r['bar']} "
                f"bars {r['first']}..{r['last']} -> {r['written']}{extra}"
            )
    written = {r["written"] for r in rows}
    _say(f"import: {len(written)} file(s) written; next: vpt data check --data-dir {data_dir}")
    return 0


# -- check ----------------------------------------------------------------------------------------


def _gaps(dates: set[dt.date], calendar: str) -> int:
    """Sessions between the first and last date held that the file lacks."""
    from vpt_ray.data.chain import expected_sessions

    if not dates:
        return 0
    return sum(1 for d in expected_sessions(calendar, min(dates), max(dates)) if d not in dates)


def check_file(path: Path, cfg: Config) -> dict:
    """One row of the check table; `problem` is empty when the file honours the contract."""
    from vpt_ray.core.calendar import exchange_dates, get_calendar
    from vpt_ray.data import local
    from vpt_ray.data.local_file import check_calendar_bounds, check_session
    from vpt_ray.data.quality import window_facts
    from vpt_ray.data.resample import is_daily

    synthetic = path.parent.name == "_synthetic"
    row = {"ticker": path.stem + (" (synthetic)" if synthetic else ""), "rows": "-"}
    row.update(first="-", last="-", gaps="-", problem="", notes=[])
    try:
        df = local.read_bars(path, vwap_tolerance=cfg.data.vwap_tolerance)
        check_calendar_bounds(df, str(path), cfg.data.calendar)
        if cfg.data.regular_session_only:
            check_session(df, str(path), cfg.data.calendar)
    except BarDataError as exc:
        row["problem"] = exc.rule + (f" (e.g. {exc.example})" if exc.example is not None else "")
        return row
    except ValueError as exc:  # e.g. dates outside the exchange calendar
        row["problem"] = str(exc)
        return row
    row["rows"] = f"{len(df):,}"
    if len(df):
        tz = get_calendar(cfg.data.calendar).tz
        fmt = "%Y-%m-%d" if is_daily(df) else "%Y-%m-%d %H:%M"
        row["first"] = df["timestamp"].iloc[0].tz_convert(tz).strftime(fmt)
        row["last"] = df["timestamp"].iloc[-1].tz_convert(tz).strftime(fmt)
        days = {pd.Timestamp(d).date() for d in set(exchange_dates(df["timestamp"]))}
        row["gaps"] = str(_gaps(days, cfg.data.calendar))
        facts = window_facts(df)
        if facts["zero_volume_bars"] == facts["bars"]:
            row["notes"].append("zero volume in every bar (a run excludes it)")
        elif facts["price_changes"] == 0:
            row["notes"].append("the close never changes (a run excludes it)")
    else:
        row["gaps"] = "0"
    for entry in local.read_meta(path).get("imports", []):
        for f in entry.get("files", [entry]):
            for key in ("vwap", "transactions"):
                if f.get(key, "given") != "given":
                    row["notes"].append(f"{key} {f[key]}")
    row["notes"] = list(dict.fromkeys(row["notes"]))
    return row


def _table(rows: list[dict]) -> str:
    cols = [("ticker", "ticker"), ("rows", "rows"), ("first", "first"), ("last", "last")]
    cols += [("gaps", "gaps"), ("problem", "problems")]  # gaps: sessions missing in the span
    width = {k: max(len(title), *(len(str(r[k])) for r in rows)) for k, title in cols}
    right = {"rows", "gaps"}

    def line(values: dict) -> str:
        cells = [
            str(values[k]).rjust(width[k]) if k in right else str(values[k]).ljust(width[k])
            for k, _ in cols
        ]
        return "  ".join(cells).rstrip()

    head = line({k: title for k, title in cols})
    return "\n".join([head, "-" * len(head), *(line(r) for r in rows)])


def check(data_dir: Path, cfg: Config) -> int:
    """Validate every bar file under `data_dir`; print the table; 1 if any breaks the contract."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data directory")
    files = sorted(p for p in data_dir.glob("*.parquet") if not p.name.startswith("."))
    files += sorted(p for p in (data_dir / "_synthetic").glob("*.parquet"))
    if not files:
        _say(f"check: {data_dir}/ holds no *.parquet files")
        return 0
    rows = [check_file(p, cfg) for p in files]
    session = "regular session only" if cfg.data.regular_session_only else "any hours"
    _say(f"check: {data_dir}/ ({cfg.data.calendar}, {session})")
    _say(_table(rows))
    bad = [r["ticker"] for r in rows if r["problem"]]
    leftovers = list(data_dir.glob(".*.tmp"))
    if leftovers:
        _say(f"note: {len(leftovers)} temp file(s) from interrupted writes (safe to delete)")
    for r in rows:
        for note in r["notes"]:
            _say(f"note: {r['ticker']}: {note}")
    if bad:
        _say(f"check: {len(bad)} of {len(rows)} files break the data contract: {', '.join(bad)}")
        return EXIT_INCOMPLETE
    _say(f"check: all {len(rows)} files pass")
    return 0


# -- entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("vpt_ray.data"),
        description="Fill the local bar store ahead of a run, or validate it.",
        epilog="exit codes: 0 ok; 1 missing data / broken files; 2 bad invocation or config",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser(
        "fetch",
        help="fill the local store for a phase (train + backtest period) from local/GCS/Polygon",
        description="Run the data chain for a phase's tickers and period without synthetic "
        "bars; each ticker's line says where its sessions came from or what is missing.",
    )
    f.add_argument("--phase", type=int, choices=range(1, 6), metavar="N", help="phase 1-5")
    add_config_args(f)
    i = sub.add_parser(
        "import",
        help="convert your bar files (Polygon JSON/flat files, CSV, parquet) into data.dir",
        description="Convert bar files into contract files {data.dir}/{TICKER}.parquet: "
        "Polygon REST aggregates (t o h l c v vw n, Unix ms), Polygon flat files "
        "(window_start in Unix ns; vwap approximated by the typical price and recorded), "
        "tables with a DatetimeIndex or a date/time column (naive times = exchange time). "
        "Merges into existing files (existing rows win) unless --replace; atomic writes.",
    )
    i.add_argument("files", nargs="+", type=Path, metavar="FILE")
    i.add_argument("--ticker", help="the ticker of files without a ticker column")
    i.add_argument(
        "--timezone",
        default=None,
        help="time zone of naive timestamps (default: the calendar's, America/New_York)",
    )
    i.add_argument("--no-adjust", action="store_true", help="ignore an 'adj close' column")
    i.add_argument("--replace", action="store_true", help="replace existing files, not merge")
    i.add_argument("--data-dir", type=Path, default=None, help="default: data.dir of the config")
    add_config_args(i)
    c = sub.add_parser(
        "check",
        help="validate every file in the store and print a table",
        description="Validate every {dir}/*.parquet (and _synthetic/) against the bar contract.",
    )
    c.add_argument("--data-dir", type=Path, default=None, help="default: data.dir of the config")
    add_config_args(c)
    return parser


@guarded
def main(argv: list[str] | None = None) -> int:
    from vpt_ray.core.run import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(None)
    try:
        if args.command == "fetch":
            if args.phase is None and args.config is None:
                raise ConfigError("fetch needs --phase N or --config PATH")
            return fetch(_config(args))
        cfg = _config(args)
        if args.command == "import":
            return import_(args, cfg)
        return check(args.data_dir or Path(cfg.data.dir), cfg)
    except user_errors() as exc:
        print(f"error: {bounded_lines(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted (everything fetched so far is kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
