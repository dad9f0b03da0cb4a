"""The per-run feature store: one parquet file per ticker, built by one Ray task per ticker.

Why: the driver never builds the pooled feature frame; a Ray Data map over the tickers reads one
ticker's bars, builds its features and labels, writes them next to the run and returns a slim
summary. Each file holds one row group per calendar month, so a reader asking for a window (the
training period, the backtest) reads only that window's months. The training samples are
read back a month at a time across the tickers, with only the columns and rows training needs
(float32, strided, every feature defined): into memory (`load_matrix`) or, for the pipeline,
into a sample file on local disk with only the per-sample index in memory (`load_samples`).
The files may be gs:// objects (`vpt_ray.core.storage`): on a cluster the tasks run on other nodes.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from vpt_ray.core import remote_error, storage
from vpt_ray.core.config import Config
from vpt_ray.core.memory_sampler import check_memory, note_node
from vpt_ray.core.node_memory import node_label
from vpt_ray.core.resources import (
    WORKER_BASELINE_BYTES,
    clamp_task_memory,
    ray_data_limits,
    release_freed_memory,
)
from vpt_ray.data import quality
from vpt_ray.data.bars import BarDataError
from vpt_ray.data.chain import TickerData
from vpt_ray.data.local import read_bars
from vpt_ray.data.resample import resample_bars
from vpt_ray.features.causal import build_features, complete_rows, feature_names
from vpt_ray.features.samples import INDEX, SampleFile, SampleRule, write_samples

log = logging.getLogger("vpt_ray.store")


def parquet_by_month(table: pa.Table, session: pd.Series) -> bytes:
    """`table` (time-sorted) as parquet bytes with one row group per calendar month of `session`,
    so filters on `session` skip whole months through the row-group statistics."""
    month = session.dt.year.to_numpy() * 12 + session.dt.month.to_numpy()
    bounds = [0, *(np.flatnonzero(np.diff(month)) + 1).tolist(), len(month)]
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, table.schema, compression="zstd") as writer:
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi > lo or len(month) == 0:
                writer.write_table(table.slice(lo, hi - lo), row_group_size=max(1, hi - lo))
    return buf.getvalue()


@dataclass(frozen=True)
class Matrix:
    """Pooled samples: features, labels and where each sample sits on the shared clock.

    `X` is None when the features stay on disk (`load_samples`): `samples` holds them in this
    order, `rows` says which of its rows these are (None: all of them, e.g. before
    `cv.sample_days`), and `features()` reads them when a consumer needs the floats."""

    X: np.ndarray | None
    y: np.ndarray
    pos: np.ndarray
    label_end: np.ndarray
    ticker: np.ndarray
    feature_names: list[str]
    fwd_ret: np.ndarray
    slots: int  # bars per session on the shared clock: pos // slots is the session ordinal
    samples: SampleFile | None = None
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def sample_rows(self) -> np.ndarray:
        """Row ids of these samples in `samples`."""
        return self.rows if self.rows is not None else np.arange(len(self))

    def features(self) -> np.ndarray:
        """The float32 feature matrix (read from `samples` when it is not in memory)."""
        if self.X is not None:
            return self.X
        if self.samples is None:
            raise ValueError("this Matrix has neither features in memory nor a sample file")
        X = self.samples.read(0, self.samples.rows)
        return X if self.rows is None else X[self.rows]


def ticker_features(cfg: Config, td: TickerData, out_path: storage.Location) -> dict:
    """Bars -> features for [data.start, backtest.end] of one ticker, written to `out_path`.

    The summary carries the volume/price facts of the training and backtest windows
    (`data.quality`) and the training samples the ticker gives; bars the exchange-calendar clock
    cannot place raise `BarDataError` naming the ticker and the file."""
    source = f"{td.ticker} ({storage.portable(td.path)})"
    bars = read_bars(td.path, cfg.data.start, cfg.backtest.end, cfg.data.vwap_tolerance)
    bars = resample_bars(bars, cfg.data.bar)
    try:
        feats = build_features(
            bars,
            cfg.features.windows,
            cfg.labels.horizon,
            cfg.data.bar_minutes,
            cfg.data.calendar,
            cfg.features.dtype,
        )
    except ValueError as exc:  # the clock: a bar on a date the calendar does not hold
        raise BarDataError(source, str(exc)) from None
    table = pa.Table.from_pandas(feats, preserve_index=False)
    storage.write_bytes(out_path, parquet_by_month(table, feats["session"]))
    sess = feats["session"].dt.date
    train = ((sess >= cfg.data.start) & (sess <= cfg.data.end)).to_numpy()
    test = ((sess >= cfg.backtest.start) & (sess <= cfg.backtest.end)).to_numpy()
    names = feature_names(cfg.features.windows)
    labelled = train & feats["y"].notna().to_numpy()
    samples = int(complete_rows(feats.loc[labelled, names].to_numpy(np.float32)).sum())
    return {
        "ticker": td.ticker,
        "path": storage.portable(out_path),
        "bars": int(len(bars)),
        "train_bars": int(train.sum()),
        "test_bars": int(test.sum()),
        "train_samples": samples,  # labelled, every feature defined (before labels.stride)
        "quality": {
            "train": quality.window_facts(bars[train]),
            "backtest": quality.window_facts(bars[test]),
        },
        "synthetic": td.synthetic,
        # the price level the search's after-cost validation returns charge commissions at
        "median_close": float(np.median(bars["close"].to_numpy()[train])) if train.any() else None,
    }


def _features_row(
    row: dict, cfg: Config, tickers: dict[str, TickerData], paths: dict[str, str | storage.GcsPath]
) -> dict:
    """Ray Data map: one ticker's features written to its store file; the summary travels back
    pickled (its path may be a `GcsPath`, which Arrow cannot hold).

    An error travels back as a value (`remote_error.capture`), not raised: Ray Data would wrap it
    in `UserCodeException` and lose the original type and message on the way to the driver."""
    t = row["ticker"]
    try:
        summary = ticker_features(cfg, tickers[t], storage.as_location(paths[t]))
    except Exception as exc:  # noqa: BLE001 - re-raised as itself by the driver
        return {"ticker": t, "summary": b"", "error": remote_error.capture(exc)}
    finally:
        release_freed_memory()  # the worker maps the next ticker: give back this one's frames
    return {"ticker": t, "summary": pickle.dumps(summary), "error": b"", "node": node_label()}


def build_store(
    cfg: Config,
    tickers: dict[str, TickerData],
    store_dir: storage.Location,
    paths: dict[str, storage.Location] | None = None,
) -> dict[str, dict]:
    """Features of every ticker through Ray Data (a map over the tickers, one ticker per block,
    within `resources.ray_data_limits`); returns per-ticker summaries, consumed as they stream out.

    Files go to `store_dir/{ticker}.parquet`, or to `paths[ticker]` (the resume cache's
    content-addressed names)."""
    storage.makedirs(store_dir)
    out_paths = {
        t: storage.portable((paths or {}).get(t, store_dir / f"{t}.parquet")) for t in tickers
    }
    memory = clamp_task_memory(_task_memory(cfg), 1, "features task")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options = ray_data_limits(cfg.hardware)
    ctx.enable_progress_bars = False  # one log line per ticker (below): vpt_ray.core.console
    items = ray.data.from_items(
        [{"ticker": t} for t in tickers], override_num_blocks=max(1, len(tickers))
    )
    with warnings.catch_warnings():
        # Ray Data retries its tasks forever by default, also after Ray's memory monitor killed
        # them; max_retries=0 makes a killed task fail, and the run stop cleanly. Ray 2.60 has
        # no named parameter for it and warns that `ray_remote_args` goes away in 2.64.
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        ds = items.map(
            _features_row,
            fn_kwargs={"cfg": cfg, "tickers": tickers, "paths": out_paths},
            num_cpus=1,
            memory=memory,
            max_retries=0,
        )
    out: dict[str, dict] = {}
    t0 = time.monotonic()
    for row in ds.iter_rows():
        if row["error"]:
            remote_error.reraise(row["error"], f"the features task of {row['ticker']}")
        summary = pickle.loads(row["summary"])
        out[summary["ticker"]] = summary
        check_memory("the features fan-out")  # raises MemoryLimitExceeded: a clean stop
        note_node(summary["ticker"], row["node"])
        log.info(
            "features: %d/%d tickers done (%s on node %s), %.0fs elapsed",
            len(out),
            len(tickers),
            summary["ticker"],
            row["node"],
            time.monotonic() - t0,
        )
    return dict(sorted(out.items()))


def _task_memory(cfg: Config) -> int:
    """Admission-control estimate for one ticker: bars x (features + bars) x 8 bytes x copies."""
    return window_task_memory(cfg, cfg.data.start, cfg.backtest.end)


def window_task_memory(cfg: Config, start: dt.date, end: dt.date) -> int:
    """The same estimate for one ticker's bars and features over [start, end] (backtest tasks),
    plus the worker process itself (Ray Data's memory issue detector measured ~177 MiB per
    feature worker on a two-month ticker)."""
    days = max(1, (end - start).days) * 252 / 365
    bars_per_day = 390 // cfg.data.bar_minutes if cfg.data.bar != "1day" else 1
    cols = len(feature_names(cfg.features.windows)) + 16
    return int(WORKER_BASELINE_BYTES + days * bars_per_day * cols * 8 * 6)


def _read_rows(
    path: str | storage.GcsPath, columns: list[str], start: dt.date, end: dt.date
) -> pd.DataFrame:
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    table = storage.read_parquet(
        path, columns=columns, filters=[("session", ">=", lo), ("session", "<=", hi)]
    )
    return table.to_pandas()


def sample_rule(
    summaries: dict[str, dict],
    names: list[str],
    start: dt.date,
    end: dt.date,
    stride: int = 1,
    slots: int = 390,
) -> SampleRule:
    return SampleRule(
        paths=tuple(s["path"] for s in summaries.values()),
        names=tuple(names),
        start=start,
        end=end,
        stride=stride,
        slots=slots,
    )


def load_matrix(
    summaries: dict[str, dict],
    names: list[str],
    start: dt.date,
    end: dt.date,
    stride: int = 1,
    slots: int = 390,
) -> Matrix:
    """Labelled samples of every ticker in [start, end], every `stride`-th bar, time-sorted,
    with their features in memory (`samples.SampleRule` says which rows).

    A sample whose label ends after the last session of the window is dropped, so a training
    label can never reach into what comes after the training period (daily bars' labels span days).
    """
    rule = sample_rule(summaries, names, start, end, stride, slots)
    parts = list(rule.month_batches())
    index = {k: np.concatenate([p[0][k] for p in parts]) if parts else np.empty(0) for k in INDEX}
    X = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, len(names)), np.float32)
    return _matrix(index, names, slots, start, end, X=X)


def load_samples(
    summaries: dict[str, dict],
    names: list[str],
    start: dt.date,
    end: dt.date,
    stride: int,
    slots: int,
    out_dir: Path,
) -> Matrix:
    """`load_matrix`'s samples with the features written to `out_dir` instead of kept
    (`samples.SampleFile`): the driver holds the per-sample index only."""
    rule = sample_rule(summaries, names, start, end, stride, slots)
    index, samples = write_samples(rule, out_dir)
    return _matrix(index, names, slots, start, end, samples=samples)


def _matrix(
    index: dict[str, np.ndarray],
    names: list[str],
    slots: int,
    start: dt.date,
    end: dt.date,
    **features: object,
) -> Matrix:
    if not len(index["y"]):
        raise ValueError(f"no labelled samples between {start} and {end}: check the data period")
    return Matrix(
        y=index["y"],
        pos=index["pos"],
        label_end=index["label_end"],
        ticker=index["ticker"],
        feature_names=list(names),
        fwd_ret=index["fwd_ret"],
        slots=slots,
        **{"X": None, **features},
    )


def read_ticker_window(
    path: str | storage.GcsPath, start: dt.date, end: dt.date, names: list[str]
) -> pd.DataFrame:
    """All bars' feature rows of one ticker in [start, end] (labelled or not), for the backtest."""
    return _read_rows(path, ["timestamp", "pos", "label_end", "y", "fwd_ret", *names], start, end)
