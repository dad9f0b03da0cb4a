"""The pooled training samples without a float matrix in memory: index on the driver, features on
local disk.

Why: the search fits every fold of every trial, on a worker per CPU. Handing each worker the
pooled float32 matrix (through the object store) costs ~4 bytes a cell per copy, and caching
every fold's quantized matrices in each worker ~3x more; both grow with the data and together
were 35x the quantized size of the training matrix (issue 6). Here the driver keeps only the
per-sample index (position, label end, label, ticker, forward return) and writes the features
once, time-sorted like `store.load_matrix`, to a raw float32 file (`SampleFile`). A worker builds
one fold's `QuantileDMatrix` at a time from that file through a `DataIter` (`fold_dmatrix`):
memory is the fold's quantized matrix plus one chunk of rows; the page cache, which the kernel
can reclaim, holds the file.

The file is written month by month across the tickers (one row group of each store file at a
time), so the driver never holds more than a month of features either. A worker on another node
of a cluster (the file records the node that wrote it) rebuilds the same file from the feature
store into the run's scratch on its node (`SampleFile.local`, `node_memory.node_scratch`): same
rule, same bytes; the run removes that scratch on every node when it ends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import xgboost as xgb

from vpt_ray.core import storage
from vpt_ray.core.node_memory import node_scratch
from vpt_ray.features.causal import complete_rows

INDEX = ("pos", "label_end", "y", "fwd_ret", "ticker")  # per-sample columns kept on the driver
CHUNK_ROWS = 65_536  # rows per DataIter batch: ~9 MB of float32 at 36 features
COLUMNS = {"y": np.float32, "fwd_ret": np.float32, "pos": np.int64}  # kept next to the features


def calendar_months(start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
    """[start, end] cut at calendar months: the feature store's row groups."""
    out, lo = [], start
    while lo <= end:
        nxt = dt.date(lo.year + lo.month // 12, lo.month % 12 + 1, 1)
        out.append((lo, min(end, nxt - dt.timedelta(days=1))))
        lo = nxt
    return out


def batch_windows(start: dt.date, end: dt.date, slots: int) -> list[tuple[dt.date, dt.date]]:
    """The windows samples are read in: calendar months (the store's row groups) for intraday
    bars, calendar years for daily bars (`slots` 1), whose month holds ~21 rows a ticker: read
    a month at a time, a 6-year daily run spent more time opening files than reading them."""
    months = calendar_months(start, end)
    if slots > 1:
        return months
    years: dict[int, tuple[dt.date, dt.date]] = {}
    for lo, hi in months:
        years[lo.year] = (years.get(lo.year, (lo, hi))[0], hi)
    return list(years.values())


@dataclasses.dataclass(frozen=True)
class SampleRule:
    """Which store rows are training samples (`store.load_matrix`'s rule): labelled, in
    [start, end], the label ending by the ticker's last labelled session, every `stride`-th bar,
    every feature defined (a ticker's first bars have no history for their rolling windows)."""

    paths: tuple[str | storage.GcsPath, ...]  # ticker code i = paths[i]
    names: tuple[str, ...]
    start: dt.date
    end: dt.date
    stride: int
    slots: int

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def months(self) -> list[tuple[dt.date, dt.date]]:
        return batch_windows(self.start, self.end, self.slots)

    def _read(self, i: int, lo: dt.date, hi: dt.date, columns: list[str]) -> pd.DataFrame:
        return storage.read_parquet(
            self.paths[i],
            columns=columns,
            filters=[("session", ">=", pd.Timestamp(lo)), ("session", "<=", pd.Timestamp(hi))],
        ).to_pandas()

    def last_sessions(self) -> list[int]:
        """Per file: the session ordinal of its last labelled bar in [start, end] (-1: none)."""
        out = []
        for i in range(len(self.paths)):
            df = self._read(i, self.start, self.end, ["pos", "y"])
            pos = df["pos"].to_numpy()[df["y"].notna().to_numpy()]
            out.append(int(pos.max() // self.slots) if len(pos) else -1)
        return out

    def month_batches(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """(index columns, float32 features) of the samples, one calendar month at a time,
        time-sorted by (position, ticker): concatenated they are `store.load_matrix`'s rows."""
        last = self.last_sessions()
        cols = ["pos", "label_end", "y", "fwd_ret", *self.names]
        for lo, hi in self.months():
            parts = []
            for i in range(len(self.paths)):
                if last[i] < 0:
                    continue
                df = self._read(i, lo, hi, cols)
                keep = df["y"].notna().to_numpy() & (
                    df["label_end"].to_numpy() // self.slots <= last[i]
                )
                if self.stride > 1:
                    keep &= df["pos"].to_numpy() % self.stride == 0
                df = df[keep]
                df = df[complete_rows(df[list(self.names)].to_numpy(np.float32))]
                parts.append(df.assign(ticker=np.int32(i)))
            if not parts:
                continue
            df = pd.concat(parts, ignore_index=True).sort_values(["pos", "ticker"], kind="stable")
            if len(df):
                index = {
                    "pos": df["pos"].to_numpy(np.int64),
                    "label_end": df["label_end"].to_numpy(np.int64),
                    "y": df["y"].to_numpy(np.float32),
                    "fwd_ret": df["fwd_ret"].to_numpy(np.float32),
                    "ticker": df["ticker"].to_numpy(np.int32),
                }
                yield index, df[list(self.names)].to_numpy(np.float32)


@dataclasses.dataclass(frozen=True)
class SampleFile:
    """The samples' features (float32, row-major) and labels on local disk, in the pooled
    matrix's row order. Small and picklable: it travels to the search workers, who read it
    a chunk at a time (`read`) or rebuild it where the driver's disk is not visible (`local`)."""

    dir: Path
    rows: int
    rule: SampleRule

    @property
    def n_features(self) -> int:
        return len(self.rule.names)

    def _meta(self) -> dict:
        meta = self.dir / "meta.json"
        return json.loads(meta.read_text()) if meta.exists() else {}

    def _complete(self) -> bool:
        return self._meta().get("rows") == self.rows

    def _here(self) -> bool:
        """Complete and written on this node (a path of another node's disk may exist here
        too, on one machine or a shared mount: the node it was written on decides)."""
        meta = self._meta()
        return meta.get("rows") == self.rows and meta.get("node", "") in ("", current_node())

    def local(self) -> SampleFile:
        """This file if it was written on this node, else the same samples rebuilt from the
        feature store into the run's scratch on this node (once per node and run: the name is
        the rule's key)."""
        if self._here():
            return self
        other = dataclasses.replace(self, dir=scratch_root() / f"vpt-samples-{self.rule.key()}")
        if not other._here():
            written = write_samples(self.rule, other.dir)[1]
            if written.rows != self.rows:
                raise RuntimeError(
                    f"{other.dir}: rebuilt {written.rows} samples from the feature store, the "
                    f"driver has {self.rows}: was the store rewritten during the search?"
                )
        return other

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Features of rows [lo, hi): a plain read (no memory map), so nothing stays resident."""
        f = self.n_features
        X = np.fromfile(self.dir / "X.f32", np.float32, count=(hi - lo) * f, offset=lo * f * 4)
        return X.reshape(hi - lo, f)

    def column(self, name: str) -> np.ndarray:
        """A per-sample column of the file (`COLUMNS`: label, forward return, position)."""
        return np.fromfile(self.dir / f"{name}.bin", COLUMNS[name])


def current_node() -> str:
    """Ray's id of this process's node; "" outside Ray."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def scratch_root() -> Path:
    """Where a node keeps its copy: the run's node scratch (`node_memory.node_scratch`, removed
    when the run ends on every node), or the temp dir outside Ray."""
    return node_scratch() if ray.is_initialized() else Path(tempfile.gettempdir())


def write_samples(rule: SampleRule, out_dir: Path) -> tuple[dict[str, np.ndarray], SampleFile]:
    """Write the samples' features to `out_dir` (temp names, `meta.json` last: a reader never
    takes a half-written file for complete). Returns the index columns and the file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, list[np.ndarray]] = {k: [] for k in INDEX}
    names = ["X.f32", *(f"{c}.bin" for c in COLUMNS)]
    tmp = {name: out_dir / f".{name}.{os.getpid()}.tmp" for name in names}
    files = {name: open(path, "wb") for name, path in tmp.items()}  # noqa: SIM115 - closed below
    try:
        for cols, X in rule.month_batches():
            for k in INDEX:
                index[k].append(cols[k])
            files["X.f32"].write(X.tobytes())
            for c, dtype in COLUMNS.items():
                files[f"{c}.bin"].write(cols[c].astype(dtype).tobytes())
    finally:
        for fh in files.values():
            fh.close()
    for name, path in tmp.items():
        path.replace(out_dir / name)
    joined = {
        k: np.concatenate(v) if v else np.empty(0, np.float32 if k in ("y", "fwd_ret") else int)
        for k, v in index.items()
    }
    rows = len(joined["y"])
    meta = {"rows": rows, "features": list(rule.names), "key": rule.key(), "node": current_node()}
    meta_tmp = out_dir / f".meta.{os.getpid()}.tmp"
    meta_tmp.write_text(json.dumps(meta))
    meta_tmp.replace(out_dir / "meta.json")
    return joined, SampleFile(out_dir, rows, rule)


def row_chunks(
    samples: SampleFile, rows: np.ndarray, columns: list[int] | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row ids, float32 features) of the sorted sample rows `rows`, one chunk of the file at a
    time (only `columns` when given)."""
    first, last = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
    for lo in range(first, last, CHUNK_ROWS):
        hi = min(last, lo + CHUNK_ROWS)
        a, b = np.searchsorted(rows, [lo, hi])
        if b > a:
            ids = rows[a:b]
            X = samples.read(lo, hi)[ids - lo]
            yield ids, (X if columns is None else X[:, columns])


def read_rows(
    samples: SampleFile, rows: np.ndarray, columns: list[int] | None = None
) -> np.ndarray:
    """The features of the sorted sample rows `rows` (only `columns` when given), in memory."""
    parts = [X for _, X in row_chunks(samples, rows, columns)]
    width = samples.n_features if columns is None else len(columns)
    return np.concatenate(parts) if parts else np.empty((0, width), np.float32)


class RowBatches(xgb.DataIter):
    """Batches of the sample file's rows `rows` (sorted ids) for `QuantileDMatrix`, one chunk of
    the file at a time (only `columns` when given); XGBoost reads the iterator several times,
    every pass the same batches."""

    def __init__(
        self,
        samples: SampleFile,
        rows: np.ndarray,
        labels: np.ndarray,
        columns: list[int] | None = None,
    ):
        super().__init__(release_data=True)
        self._s, self._rows, self._y, self._cols = samples, rows, labels, columns
        names = list(samples.rule.names)
        self._names = names if columns is None else [names[j] for j in columns]
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] | None = None

    def next(self, input_data: Callable) -> bool:
        if self._it is None:
            self._it = row_chunks(self._s, self._rows, self._cols)
        batch = next(self._it, None)
        if batch is None:
            return False
        ids, X = batch
        input_data(data=X, label=self._y[ids], feature_names=self._names)
        return True

    def reset(self) -> None:
        self._it = None


def fold_dmatrix(
    samples: SampleFile,
    rows: np.ndarray,
    labels: np.ndarray,
    max_bin: int,
    ref: xgb.QuantileDMatrix | None = None,
    nthread: int | None = None,
    columns: list[int] | None = None,
) -> xgb.QuantileDMatrix:
    """A `QuantileDMatrix` of the sample rows `rows` (any order: they are sorted, which is the
    pooled matrix's time order), built a chunk at a time (only `columns` when given); with
    `ref`, binned on its cuts."""
    batches = RowBatches(samples, np.sort(rows), labels, columns)
    return xgb.QuantileDMatrix(batches, max_bin=max_bin, ref=ref)
