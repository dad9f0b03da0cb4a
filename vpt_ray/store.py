"""The per-run feature store: one parquet file per ticker, built by one Ray task per ticker.

Why: the driver never builds the pooled feature frame; each task reads one ticker's bars, builds
its features and labels, writes them next to the run and returns a slim summary. The training
matrix is then read back with only the columns and rows the search needs (float32, strided).
The files may be gs:// objects (`vpt_ray.storage`): on a cluster the tasks run on other nodes.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

from vpt_ray import storage
from vpt_ray.config import Config
from vpt_ray.data.chain import TickerData
from vpt_ray.data.local import read_bars
from vpt_ray.data.resample import resample_bars
from vpt_ray.features import build_features, feature_names
from vpt_ray.progress import track
from vpt_ray.resources import clamp_task_memory

log = logging.getLogger(__name__)


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
    storage.write_parquet(pa.Table.from_pandas(feats, preserve_index=False), out_path)
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


@ray.remote(num_cpus=1, max_retries=0)
def _features_task(cfg: Config, td: TickerData, out_path: str | storage.GcsPath) -> dict:
    return ticker_features(cfg, td, storage.as_location(out_path))


def build_store(
    cfg: Config,
    tickers: dict[str, TickerData],
    store_dir: storage.Location,
    paths: dict[str, storage.Location] | None = None,
) -> dict[str, dict]:
    """One Ray task per ticker; returns per-ticker summaries as they finish.

    Files go to `store_dir/{ticker}.parquet`, or to `paths[ticker]` (the resume cache's
    content-addressed names)."""
    storage.makedirs(store_dir)
    cfg_ref = ray.put(cfg)
    memory = clamp_task_memory(_task_memory(cfg), 1, "features task")
    refs = {
        _features_task.options(name=f"features:{t}", memory=memory).remote(
            cfg_ref, td, storage.portable((paths or {}).get(t, store_dir / f"{t}.parquet"))
        ): t
        for t, td in tickers.items()
    }
    out: dict[str, dict] = {}
    for summary in track(refs, "features", unit="ticker"):
        out[summary["ticker"]] = summary
    return dict(sorted(out.items()))


def _task_memory(cfg: Config) -> int:
    """Admission-control estimate for one ticker: bars x (features + bars) x 8 bytes x copies."""
    return window_task_memory(cfg, cfg.data.start, cfg.backtest.end)


def window_task_memory(cfg: Config, start: dt.date, end: dt.date) -> int:
    """The same estimate for one ticker's bars and features over [start, end] (backtest tasks)."""
    days = max(1, (end - start).days) * 252 / 365
    bars_per_day = 390 // cfg.data.bar_minutes if cfg.data.bar != "1day" else 1
    cols = len(feature_names(cfg.features.windows)) + 16
    return int(max(64 * 2**20, days * bars_per_day * cols * 8 * 6))


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
