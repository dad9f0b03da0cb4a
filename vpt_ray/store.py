"""The per-run feature store: one parquet file per ticker, built by one Ray task per ticker.

Why: the driver never builds the pooled feature frame; a Ray Data map over the tickers reads one
ticker's bars, builds its features and labels, writes them next to the run and returns a slim
summary. Each file holds one row group per calendar month, so a reader asking for a window (the
training period, the backtest) reads only that window's months. The training
matrix is then read back with only the columns and rows the search needs (float32, strided).
The files may be gs:// objects (`vpt_ray.storage`): on a cluster the tasks run on other nodes.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import pickle
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from vpt_ray import storage
from vpt_ray.config import Config
from vpt_ray.data.chain import TickerData
from vpt_ray.data.local import read_bars
from vpt_ray.data.resample import resample_bars
from vpt_ray.features import build_features, feature_names
from vpt_ray.resources import (
    WORKER_BASELINE_BYTES,
    check_memory,
    clamp_task_memory,
    ray_data_limits,
)

log = logging.getLogger(__name__)


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
    """Pooled samples: features, labels and where each sample sits on the shared clock."""

    X: np.ndarray
    y: np.ndarray
    pos: np.ndarray
    label_end: np.ndarray
    ticker: np.ndarray
    feature_names: list[str]
    fwd_ret: np.ndarray
    slots: int  # bars per session on the shared clock: pos // slots is the session ordinal

    def __len__(self) -> int:
        return len(self.y)


def ticker_features(cfg: Config, td: TickerData, out_path: storage.Location) -> dict:
    """Bars -> features for [data.start, backtest.end] of one ticker, written to `out_path`."""
    bars = read_bars(td.path, cfg.data.start, cfg.backtest.end, cfg.data.vwap_tolerance)
    bars = resample_bars(bars, cfg.data.bar)
    feats = build_features(
        bars,
        cfg.features.windows,
        cfg.labels.horizon,
        cfg.data.bar_minutes,
        cfg.data.calendar,
        cfg.features.dtype,
    )
    table = pa.Table.from_pandas(feats, preserve_index=False)
    storage.write_bytes(out_path, parquet_by_month(table, feats["session"]))
    sess = feats["session"].dt.date
    train = (sess >= cfg.data.start) & (sess <= cfg.data.end)
    test = (sess >= cfg.backtest.start) & (sess <= cfg.backtest.end)
    return {
        "ticker": td.ticker,
        "path": storage.portable(out_path),
        "bars": int(len(bars)),
        "train_bars": int(train.sum()),
        "test_bars": int(test.sum()),
        "synthetic": td.synthetic,
    }


def _features_row(
    row: dict, cfg: Config, tickers: dict[str, TickerData], paths: dict[str, str | storage.GcsPath]
) -> dict:
    """Ray Data map: one ticker's features written to its store file; the summary travels back
    pickled (its path may be a `GcsPath`, which Arrow cannot hold)."""
    t = row["ticker"]
    summary = ticker_features(cfg, tickers[t], storage.as_location(paths[t]))
    return {"ticker": t, "summary": pickle.dumps(summary)}


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
    ctx.enable_progress_bars = sys.stderr.isatty()  # else one log line per ticker (below)
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
        summary = pickle.loads(row["summary"])
        out[summary["ticker"]] = summary
        check_memory("the features fan-out")  # raises MemoryLimitExceeded: a clean stop
        log.info(
            "features: %d/%d tickers done (%s), %.0fs elapsed",
            len(out),
            len(tickers),
            summary["ticker"],
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


def load_matrix(
    summaries: dict[str, dict],
    names: list[str],
    start: dt.date,
    end: dt.date,
    stride: int = 1,
    slots: int = 390,
) -> Matrix:
    """Labelled samples of every ticker in [start, end], every `stride`-th bar, time-sorted.

    A sample whose label ends after the last session of the window is dropped, so a training
    label can never reach into what comes after the training period (daily bars' labels span days).
    """
    parts = []
    cols = ["pos", "label_end", "y", "fwd_ret", *names]
    for code, (_, s) in enumerate(summaries.items()):
        df = _read_rows(s["path"], cols, start, end)
        df = df[df["y"].notna()]
        if len(df):
            last_session = df["pos"].max() // slots
            df = df[df["label_end"] // slots <= last_session]
        if stride > 1:
            df = df[(df["pos"] % stride) == 0]
        df["_ticker"] = np.int32(code)
        parts.append(df)
    df = pd.concat(parts, ignore_index=True).sort_values(["pos", "_ticker"], kind="stable")
    if df.empty:
        raise ValueError(f"no labelled samples between {start} and {end}: check the data period")
    return Matrix(
        X=df[names].to_numpy(np.float32),
        y=df["y"].to_numpy(np.float32),
        pos=df["pos"].to_numpy(np.int64),
        label_end=df["label_end"].to_numpy(np.int64),
        ticker=df["_ticker"].to_numpy(np.int32),
        feature_names=list(names),
        fwd_ret=df["fwd_ret"].to_numpy(np.float32),
        slots=slots,
    )


def read_ticker_window(
    path: str | storage.GcsPath, start: dt.date, end: dt.date, names: list[str]
) -> pd.DataFrame:
    """All bars' feature rows of one ticker in [start, end] (labelled or not), for the backtest."""
    return _read_rows(path, ["timestamp", "pos", "label_end", "y", "fwd_ret", *names], start, end)
