"""The data chain: local store, then GCS, then Polygon, then (if allowed) the synthetic market.

A phase asks for (tickers, period); for each ticker the chain finds the sessions the local store
lacks, asks the remote sources (in `data.sources` order) for exactly those sessions, validates what
arrives, merges it (existing local rows win on equal timestamps) and writes the local file back
atomically, so the next run is local. Polygon delivers chunk by chunk and each chunk is merged and
written as it arrives: an interrupted fetch keeps what it got and the next run asks only for the
rest. A source's complete answer without bars for some past sessions (a halt, a listing date) is
remembered in the file's metadata, so those sessions are not asked of that source again.

Each remote source is built once per `resolve` call, on first need, and probed once: an
unavailable source (no GCS credentials, no Polygon key) costs one INFO line per run. Synthetic bars
are used only for a ticker with no real data anywhere, never mixed with real bars, and announced.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from vpt_ray.core.calendar import get_calendar
from vpt_ray.core.config import Config
from vpt_ray.core.storage import Location
from vpt_ray.data import local
from vpt_ray.data.bars import BarDataError
from vpt_ray.data.errors import SourceError
from vpt_ray.data.local_file import (
    LocalFile,
    expected_sessions,
    fetch_bar,
    fmt_ranges,
    session_ranges,
)
from vpt_ray.data.synthetic import SyntheticParams, generate_ticker

log = logging.getLogger(__name__)

REMOTE = ("gcs", "polygon")


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
    path: Location  # the local file; a gs:// object once staged for a cluster (resume.stage_bars)
    synthetic: bool
    origins: list[dict] = field(default_factory=list)
    missing_sessions: int = 0  # sessions no source has (known absent), e.g. halts
    missing_ranges: str = ""  # the same sessions as "a..b, c" for people


def make_remote_source(name: str, cfg: Config, bar: str | None = None) -> RemoteSource:
    """Registry of remote sources (imported lazily: gcsfs and polygon are heavy)."""
    bar = bar or fetch_bar(cfg)
    d = cfg.data
    if name == "gcs":
        from vpt_ray.data.gcs import GcsSource

        return GcsSource(
            cfg.gcs,
            vwap_tolerance=d.vwap_tolerance,
            calendar=d.calendar,
            bar=bar,
            regular_session_only=d.regular_session_only,
        )
    if name == "polygon":
        from vpt_ray.data.polygon import PolygonSource

        return PolygonSource(
            cfg.polygon,
            bar=bar,
            calendar=d.calendar,
            vwap_tolerance=d.vwap_tolerance,
            regular_session_only=d.regular_session_only,
        )
    raise ValueError(f"unknown remote source {name!r}; known: {', '.join(REMOTE)}")


class Sources:
    """The remote sources of one `resolve` call: each built on first need, probed once.

    Sharing one instance across tickers keeps Polygon's pacer, GCS's filesystem and parsed object
    and each availability answer for the whole call; `built` lists what was touched (tests and
    the CLI use it to show that a warm store makes no remote call).
    """

    def __init__(
        self, cfg: Config, factory: Callable[[str, Config, str], RemoteSource] = make_remote_source
    ):
        self.cfg, self.factory = cfg, factory
        self.built: dict[tuple[str, str], RemoteSource] = {}
        self.calls: dict[str, int] = {}  # fetch calls per source name
        self._reasons: dict[tuple[str, str], str | None] = {}
        self.deferred: list[tuple] | None = None  # synthetic tickers `resolve` makes at the end

    def get(self, name: str, bar: str) -> RemoteSource:
        key = (name, bar)
        if key not in self.built:
            self.built[key] = self.factory(name, self.cfg, bar)
        return self.built[key]

    def unavailable(self, name: str, bar: str) -> str | None:
        """Why `name` cannot be used in this run (None = usable); logged once at INFO."""
        key = (name, bar)
        if key not in self._reasons:
            reason = self.get(name, bar).unavailable_reason()
            self._reasons[key] = reason
            if reason:
                log.info("source %s skipped for this run: %s", name, reason)
        return self._reasons[key]


def synthetic_params(cfg: Config) -> SyntheticParams:
    return SyntheticParams(
        seed=cfg.synthetic.seed,
        signal_strength=cfg.synthetic.signal_strength,
        missing_minute_rate=cfg.synthetic.missing_minute_rate,
        calendar=cfg.data.calendar,
    )


def ensure_synthetic(
    cfg: Config, ticker: str, start: dt.date, end: dt.date, defer: list | None = None
) -> TickerData:
    """Reuse the cached synthetic file when its parameters and dates match, else regenerate
    (now, or appended to `defer` for `generate_synthetic` to make with the others at once)."""
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
        job = (params.to_json(), ticker, start, end, str(path))
        if defer is None:
            _write_synthetic(*job)
        else:
            defer.append(job)
        how = "generated"
    origin = {"source": "synthetic", "how": how, "start": str(start), "end": str(end)}
    log.warning("%s: SYNTHETIC bars (%s, signal_strength=%s)", ticker, how, params.signal_strength)
    return TickerData(ticker, path, synthetic=True, origins=[origin])


def _write_synthetic(
    params_json: str, ticker: str, start: dt.date, end: dt.date, path: str
) -> None:
    """Generate and write one ticker's synthetic bars (a process-pool job: plain arguments)."""
    params = SyntheticParams(**json.loads(params_json))
    df = generate_ticker(params, ticker, start, end)
    meta = {"synthetic": {"params": json_params(params), "start": str(start), "end": str(end)}}
    local.write_bars(df, Path(path), meta)


PARALLEL_TICKER_YEARS = 20  # below this (~6 s of work) a Ray worker's start-up costs more


def generate_synthetic(jobs: list[tuple]) -> None:
    """Make the deferred synthetic tickers: as Ray tasks on this node when Ray runs in this
    process (generation is CPU-bound, ~0.3 s per ticker-year: 120 tickers x 4 years took 158 s
    one after the other on 2 cores), else one after the other. The files go to this node's
    `data.dir`, so the tasks are pinned to it."""
    import ray  # the chain also serves Ray-less commands (vpt data)

    years = sum((end - start).days for _, _, start, end, _ in jobs) / 365.25
    if len(jobs) <= 1 or years < PARALLEL_TICKER_YEARS or not ray.is_initialized():
        for job in jobs:
            _write_synthetic(*job)
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    t0 = time.monotonic()
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(num_cpus=1, max_retries=0)(_write_synthetic).options(
        scheduling_strategy=here, name="synthetic"
    )
    ray.get([task.remote(*job) for job in jobs])
    log.info("synthetic market: %d tickers generated in %.0f s", len(jobs), time.monotonic() - t0)


def json_params(params: SyntheticParams) -> dict:
    return json.loads(params.to_json())


def _today(calendar: str) -> dt.date:
    return pd.Timestamp.now(tz=get_calendar(calendar).tz).date()


def _fetch_range(
    src: RemoteSource, lf: LocalFile, ticker: str, a: dt.date, b: dt.date, delivered: list
) -> None:
    """Fetch [a, b] from `src` into the local file; chunked sources are merged chunk by chunk."""
    label = f"{src.name} {ticker} {a}..{b}"
    if "on_chunk" in inspect.signature(src.fetch).parameters:

        def on_chunk(chunk: pd.DataFrame) -> None:
            delivered.append(lf.merge(chunk, label))

        src.fetch(ticker, a, b, on_chunk=on_chunk)  # type: ignore[call-arg]
    else:
        delivered.append(lf.merge(src.fetch(ticker, a, b), label))


def _upload(sources: Sources, ticker: str, bar: str, frames: list[pd.DataFrame]) -> None:
    """`gcs.upload_fetched`: give what Polygon delivered back to the bucket (best effort)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return
    if bar != "1min":
        log.info("%s: gcs.upload_fetched: daily bars are not uploaded (bucket has minutes)", ticker)
        return
    reason = sources.unavailable("gcs", bar)
    if reason:
        log.warning("%s: gcs.upload_fetched: cannot upload, GCS unavailable: %s", ticker, reason)
        return
    df = pd.concat(frames, ignore_index=True).sort_values("timestamp", ignore_index=True)
    try:
        sources.get("gcs", bar).upload(ticker, df)  # type: ignore[attr-defined]
    except (SourceError, BarDataError) as exc:
        log.warning("%s: gcs.upload_fetched failed (local store is unaffected): %s", ticker, exc)
    else:
        log.info("%s: uploaded %d bars fetched from polygon to gcs", ticker, len(df))


def resolve_ticker(
    cfg: Config, ticker: str, start: dt.date, end: dt.date, sources: Sources | None = None
) -> TickerData:
    """Make the local store hold `ticker` for [start, end] (or point at synthetic bars).

    Raises `DataUnavailableError` naming the ticker, the missing dates and why each source could
    not supply them, also when more than `data.max_missing_sessions` sessions have no bars in
    any source (whatever `data.sources` holds); `BarDataError` when the local file breaks the
    contract (it is never overwritten then).
    """
    sources = sources or Sources(cfg)
    cal = cfg.data.calendar
    lf = LocalFile(cfg, ticker)
    wanted = expected_sessions(cal, start, end)
    origins: list[dict] = []
    held = sorted(set(wanted) & lf.dates)
    if held:
        origins.append({"source": "local", "sessions": len(held)})
        log.info(
            "%s: local store holds %d/%d sessions (%s)",
            ticker,
            len(held),
            len(wanted),
            fmt_ranges(session_ranges(held, cal)),
        )
    tried = ["local" if held else "local (no file)" if not lf.path.exists() else "local (none)"]
    blocked: dict[str, str] = {}  # source -> why it could not answer
    unanswered: set[dt.date] = set()  # missing sessions a blocked source might still hold
    answered: dict[str, set[dt.date]] = {}  # sessions each source answered for completely
    today = _today(cal)
    for name in cfg.data.sources:
        if name not in REMOTE:
            continue
        missing = [d for d in wanted if d not in lf.dates]
        todo = [d for d in missing if d not in lf.absent(name)]
        if not todo:
            continue
        tried.append(name)
        bar = lf.bar
        reason = sources.unavailable(name, bar)
        if reason:
            blocked[name] = f"unavailable: {reason}"
            unanswered.update(todo)
            continue
        src = sources.get(name, bar)
        delivered: list[pd.DataFrame] = []
        for i, (a, b) in enumerate(runs := session_ranges(todo, cal)):
            before, n0 = set(lf.dates), len(delivered)
            sources.calls[name] = sources.calls.get(name, 0) + 1
            try:
                _fetch_range(src, lf, ticker, a, b, delivered)
                failure = None
            except (SourceError, BarDataError) as exc:
                failure = exc
            span = set(expected_sessions(cal, a, b))
            got = sorted((lf.dates - before) & span)
            if got:  # origins hold what arrived (a failed range may have arrived in part)
                bars = sum(len(f) for f in delivered[n0:])
                origins.append(
                    {
                        "source": name,
                        "start": str(got[0]),
                        "end": str(got[-1]),
                        "sessions": len(got),
                        "bars": bars,
                    }
                )
                log.info(
                    "%s: %s delivered %d of the %d sessions asked for %s..%s (%d bars): %s",
                    ticker,
                    name,
                    len(got),
                    len(span),
                    a,
                    b,
                    bars,
                    fmt_ranges(session_ranges(got, cal)),
                )
            if failure is not None:
                left = [d for r in runs[i:] for d in expected_sessions(cal, *r) if d in todo]
                left = [d for d in left if d not in lf.dates]
                log.warning(
                    "%s: %s failed (%d sessions delivered before the failure are kept): %s",
                    ticker,
                    name,
                    len(got),
                    failure,
                )
                blocked[name] = f"failed: {failure}"
                unanswered.update(left)
                break
            answered.setdefault(name, set()).update(span)
        if name == "polygon" and cfg.gcs.upload_fetched:
            _upload(sources, ticker, bar, delivered)
    for name, span in answered.items():  # asked, answered, still missing: known absent there
        lf.mark_absent(name, {d for d in span - lf.dates if d < today})
    lf.save_meta()
    missing = [d for d in wanted if d not in lf.dates]
    for name, why in blocked.items():
        tried[tried.index(name)] = f"{name} ({why})"
    if not set(wanted) & lf.dates:
        if "synthetic" in cfg.data.sources:
            return ensure_synthetic(cfg, ticker, start, end, sources.deferred)
        raise DataUnavailableError(
            f"{ticker}: no bars for {start}..{end} ({len(wanted)} sessions) in any source; "
            f"tried {', '.join(tried)}"
        )
    stuck = [d for d in missing if d in unanswered]
    if stuck:
        raise DataUnavailableError(
            f"{ticker}: {len(stuck)} sessions missing ({fmt_ranges(session_ranges(stuck, cal))}) "
            f"that no source could supply: " + "; ".join(f"{n} {why}" for n, why in blocked.items())
        )
    if len(missing) > cfg.data.max_missing_sessions:
        asked = ", ".join(tried[1:]) or f"none (data.sources: [{', '.join(cfg.data.sources)}])"
        raise DataUnavailableError(
            f"{ticker}: {len(missing)} of {len(wanted)} sessions of {start}..{end} have no bars "
            f"({fmt_ranges(session_ranges(missing, cal))}), more than data.max_missing_sessions "
            f"({cfg.data.max_missing_sessions}); remote sources asked: {asked}. Fill the file "
            "(vpt data import / vpt data fetch), shorten the period, or set "
            "data.on_missing: skip to run without this ticker"
        )
    if missing:
        log.warning(
            "%s: %d sessions have no bars in any source (%s), within data.max_missing_sessions "
            "(%d); sources asked: %s",
            ticker,
            len(missing),
            fmt_ranges(session_ranges(missing, cal)),
            cfg.data.max_missing_sessions,
            ", ".join(tried[1:]) or "none",
        )
    return TickerData(
        ticker,
        lf.path,
        False,
        origins=origins,
        missing_sessions=len(missing),
        missing_ranges=fmt_ranges(session_ranges(missing, cal)),
    )


def describe(td: TickerData) -> str:
    """One line: where a ticker's sessions came from (for the run log and the CLI)."""
    if td.synthetic:
        return "SYNTHETIC"
    parts = []
    for name in ("local", *REMOTE):
        n = sum(o["sessions"] for o in td.origins if o["source"] == name)
        if n:
            parts.append(f"{name} {n}")
    text = ", ".join(parts) + " sessions"
    if td.missing_sessions:
        text += f"; {td.missing_sessions} sessions in no source ({td.missing_ranges})"
    return text


def resolve(
    cfg: Config, start: dt.date, end: dt.date, sources: Sources | None = None
) -> tuple[dict[str, TickerData], list[str]]:
    """Run the chain for every configured ticker; returns (resolved, skipped tickers).

    One `Sources` serves every ticker (one pacer, one probe per source); `data.on_missing: skip`
    turns a ticker's `DataUnavailableError` into a skip listed in the report.
    """
    sources = sources or Sources(cfg)
    out: dict[str, TickerData] = {}
    skipped: list[str] = []
    sources.deferred = []
    for ticker in cfg.data.tickers:
        try:
            td = resolve_ticker(cfg, ticker, start, end, sources)
        except DataUnavailableError as exc:
            if cfg.data.on_missing == "skip":
                log.warning("skipping %s (data.on_missing: skip): %s", ticker, exc)
                skipped.append(ticker)
                continue
            raise
        out[ticker] = td
        if not td.synthetic:
            log.info("%s: %s..%s from %s", ticker, start, end, describe(td))
    jobs, sources.deferred = sources.deferred, None
    generate_synthetic(jobs)
    for td in out.values():
        if td.synthetic:
            log.info("%s: %s..%s from %s", td.ticker, start, end, describe(td))
    if not out:
        raise DataUnavailableError(
            f"no ticker has data for {start}..{end}: every configured ticker was skipped "
            f"({', '.join(skipped)})"
        )
    if skipped:
        log.warning("skipped tickers (no data): %s", ", ".join(skipped))
    return out, skipped
