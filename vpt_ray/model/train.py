"""The final model: fit on the whole training period with the searched configuration, and save it.

A model directory (`artifacts/models/{run_id}/`) holds the booster in XGBoost's native format
(`model.ubj`) plus everything needed to trust and reuse it: the resolved config, the feature list,
the training windows, CV metrics, a data fingerprint, package versions and the git commit. The
directory is assembled under a temp name and renamed into place, so a crash never leaves a model
directory that looks complete.

The final fit streams the feature store: `training_rows` describes which rows it trains on (the
same selection as `store.load_matrix` plus `cv.sample_days`), and `SpilledBatches` hands them to
XGBoost's `QuantileDMatrix` one ticker month (one row group of the store) at a time, so the fit
holds the quantized matrix plus one batch, never a float copy of the training matrix. XGBoost
reads its iterator four times: the first pass reads the store and keeps each batch on local disk,
the other three memory-map those files (reading the store four times made the build ~10x slower
than from an array; bench/bench_final_fit.py). Rows arrive ticker by ticker instead of
time-sorted: a different row order gives slightly different quantile cuts and a different
`subsample` draw (one random number per row, in row order), so the booster is statistically
equivalent to, not bit-identical with, a fit on the time-sorted matrix; on the same rows in the
same order it is identical (tests/test_train_backends.py).
`model.backend: distributed` fits on Ray Train workers instead (`vpt_ray.model.distributed`).

`python -m vpt_ray.train --config config/base.yaml --sample-days 365` runs data -> features ->
search -> final fit (no backtest), as the seed's `scripts/train_model.py` did.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import xgboost as xgb

from vpt_ray.core import storage
from vpt_ray.core.config import Config
from vpt_ray.core.run import atomic_dir, write_json_atomic, write_text_atomic
from vpt_ray.core.storage import ArtifactError
from vpt_ray.features.causal import clock_slots, complete_rows
from vpt_ray.features.samples import batch_windows
from vpt_ray.features.store import Matrix
from vpt_ray.model.cv import sample_days_mask
from vpt_ray.model.folds import xgb_params

MODEL_FILE = "model.ubj"


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingRows:
    """Which feature-store rows the final fit trains on, per ticker file.

    The rule is `store.load_matrix`'s: labelled samples with a session in [start, end] whose
    label ends by the ticker's last labelled session, every `stride`-th bar, every feature
    defined (`features.complete_rows`, applied by `read`); then, with
    `cv.sample_days`, only the sampled `sessions` (what `stages.make_folds` keeps). Kept as
    per-file numbers so it applies to one ticker month (local stream) or one Ray Data block at
    a time.
    """

    paths: tuple[str | storage.GcsPath, ...]  # the store's ticker order (load_matrix's codes)
    last_session: tuple[int, ...]  # per path: session ordinal of its last labelled sample
    rows: tuple[int, ...]  # per path: samples kept
    names: tuple[str, ...]
    start: dt.date
    end: dt.date
    stride: int
    slots: int
    sessions: np.ndarray | None  # sorted session ordinals kept (cv.sample_days); None = all

    @property
    def n_rows(self) -> int:
        return int(sum(self.rows))

    def mask(
        self, pos: np.ndarray, label_end: np.ndarray, y: np.ndarray, last_session: np.ndarray | int
    ) -> np.ndarray:
        """Which of a window's rows are training samples (`last_session` per row or scalar)."""
        keep = ~np.isnan(y) & (label_end // self.slots <= last_session)
        if self.stride > 1:
            keep &= pos % self.stride == 0
        if self.sessions is not None:
            keep &= np.isin(pos // self.slots, self.sessions)
        return keep

    def months(self) -> list[tuple[dt.date, dt.date]]:
        """[start, end] cut at calendar months (years for daily bars): the stream's batches."""
        return batch_windows(self.start, self.end, self.slots)

    def read(
        self, i: int, window: tuple[dt.date, dt.date] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features (float32, rows x features) and labels of file `i`'s training samples in
        `window` (default: all of [start, end]). Arrow straight to one float32 array: no
        pandas copy of the window."""
        lo, hi = window or (self.start, self.end)
        table = storage.read_parquet(
            self.paths[i],
            columns=["pos", "label_end", "y", *self.names],
            filters=[("session", ">=", pd.Timestamp(lo)), ("session", "<=", pd.Timestamp(hi))],
        )
        col = {c: table.column(c).to_numpy() for c in ("pos", "label_end", "y")}
        keep = self.mask(col["pos"], col["label_end"], col["y"], self.last_session[i])
        X, y = _features(table, self.names, keep), col["y"][keep].astype(np.float32)
        ok = complete_rows(X)
        return (X, y) if ok.all() else (X[ok], y[ok])


def _features(table: pa.Table, names: tuple[str, ...] | list[str], keep: np.ndarray) -> np.ndarray:
    """The rows `keep` of `table`'s feature columns as one float32 array (no pandas copy)."""
    X = np.empty((int(keep.sum()), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        X[:, j] = table.column(name).to_numpy()[keep]
    return X


def training_rows(cfg: Config, store: dict[str, dict]) -> TrainingRows:
    """The final fit's rows per store file (one ticker's window at a time: features are read
    to apply `features.complete_rows`, then dropped)."""

    names = cfg.features.model_features()
    slots = clock_slots(cfg.data.bar_minutes)
    rows = TrainingRows(
        paths=tuple(s["path"] for s in store.values()),
        last_session=(),
        rows=(),
        names=tuple(names),
        start=cfg.data.start,
        end=cfg.data.end,
        stride=cfg.labels.stride,
        slots=slots,
        sessions=None,
    )
    last, per_file = [], []  # per file: (kept sessions, samples in each)
    for path in rows.paths:
        table = storage.read_parquet(
            path,
            columns=["pos", "label_end", "y", *names],
            filters=[
                ("session", ">=", pd.Timestamp(rows.start)),
                ("session", "<=", pd.Timestamp(rows.end)),
            ],
        )
        pos, label_end, y = (table.column(c).to_numpy() for c in ("pos", "label_end", "y"))
        labelled = ~np.isnan(y)
        last.append(int(pos[labelled].max() // slots) if labelled.any() else -1)
        keep = rows.mask(pos, label_end, y, last[-1])
        keep[keep] = complete_rows(_features(table, names, keep))
        per_file.append(np.unique(pos[keep] // slots, return_counts=True))
    sessions = None
    if cfg.cv.sample_days and per_file:
        uniq = np.unique(np.concatenate([s for s, _ in per_file]))
        sessions = uniq[sample_days_mask(uniq * slots, slots, cfg.cv.sample_days, cfg.search.seed)]
    counts = [
        int(n[np.isin(s, sessions)].sum() if sessions is not None else n.sum()) for s, n in per_file
    ]
    if not sum(counts):
        raise ValueError(
            f"no labelled samples between {rows.start} and {rows.end}: check the data period"
        )
    return dataclasses.replace(
        rows, last_session=tuple(last), rows=tuple(counts), sessions=sessions
    )


class SpilledBatches(xgb.DataIter):
    """Batches for `QuantileDMatrix` from `source()`, an iterator of (X float32, y), read once.

    XGBoost reads its iterator four times; the first pass pulls each batch from `source` and
    keeps a copy in `spill_dir` (local disk), the later passes memory-map those copies back, so
    the store (or a Ray Data shard) is read once and one batch at a time is in memory. An empty
    source gives one empty batch (a distributed worker with no rows still joins the collective).
    """

    def __init__(
        self,
        source: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
        names: list[str],
        spill_dir: Path,
    ):
        super().__init__(release_data=True)
        self._source, self._names, self._dir = source, names, spill_dir
        self._pulling: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
        self._spilled: list[tuple[Path, Path]] = []
        self._pulled = False  # the pass over `source` is complete
        self._next = 0
        self.rows = 0  # samples the source gave

    def next(self, input_data: Callable) -> bool:
        if self._pulled:
            if self._next == len(self._spilled):
                return False
            X, y = self._spilled[self._next]
            self._next += 1
            input_data(data=np.load(X, mmap_mode="r"), label=np.load(y), feature_names=self._names)
            return True
        if self._pulling is None:
            self._pulling = self._source()  # lazily: XGBoost's collective calls come first
        batch = next(self._pulling, None)
        if batch is None and self._spilled:
            return False
        X, y = batch or (np.empty((0, len(self._names)), np.float32), np.empty(0, np.float32))
        paths = (
            self._dir / f"{len(self._spilled)}.X.npy",
            self._dir / f"{len(self._spilled)}.y.npy",
        )
        np.save(paths[0], X)
        np.save(paths[1], y)
        self._spilled.append(paths)
        self.rows += len(y)
        input_data(data=X, label=y, feature_names=self._names)
        return True

    def reset(self) -> None:
        if self._pulling is not None:
            self._pulled, self._pulling = True, None
        self._next = 0


def store_batches(rows: TrainingRows) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`rows`' samples one ticker month (one row group of the store) at a time."""
    for i, n in enumerate(rows.rows):
        if n:
            for month in rows.months():
                X, y = rows.read(i, month)
                if len(y):
                    yield X, y


def fit_final(
    cfg: Config,
    rows: TrainingRows,
    hp: dict,
    rounds: int,
    nthread: int,
    spill_root: Path | None = None,
    seed: int | None = None,
    columns: tuple[str, ...] | None = None,
) -> xgb.Booster:
    """Fit the chosen configuration on every training sample for `rounds` boosting rounds,
    streaming the store into a `QuantileDMatrix` (memory: the quantized matrix + one batch;
    local disk: the float samples under `spill_root`, default the temp dir, during the build).

    The folds trained on less data than this fit; their median early-stopping round count
    (chosen on each fold's early-stopping slice, never on its validation part: the validation
    data has no say in the final model either) is scaled by the square root of the ratio of
    this fit's rows to the rows the folds were fit on (`final_rounds`).

    `seed` (default `search.seed`) and `columns` (a subset of `rows.names`; the rows stay those
    complete in every feature, as the folds saw them) fit a phase 5 ensemble member.
    """
    if spill_root is not None:
        spill_root.mkdir(parents=True, exist_ok=True)
    names = list(columns or rows.names)
    idx = [list(rows.names).index(c) for c in names]

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for X, y in store_batches(rows):
            yield (X if columns is None else np.ascontiguousarray(X[:, idx])), y

    with tempfile.TemporaryDirectory(prefix="final-fit-", dir=spill_root) as spill:
        it = SpilledBatches(batches, names, Path(spill))
        dtrain = xgb.QuantileDMatrix(it, max_bin=cfg.model.max_bin, nthread=nthread)
    if it.rows != rows.n_rows:
        raise RuntimeError(
            f"final fit: the feature store gave {it.rows} samples, the selection has "
            f"{rows.n_rows}: was the store rewritten during the fit?"
        )
    return _boost(cfg, dtrain, hp, rounds, nthread, seed)


def fit_matrix(cfg: Config, m: Matrix, hp: dict, rounds: int, nthread: int) -> xgb.Booster:
    """The same fit from an in-memory `Matrix`: the reference the streaming fit is checked
    against (tests, bench/bench_final_fit.py)."""
    dtrain = xgb.QuantileDMatrix(m.X, m.y, max_bin=cfg.model.max_bin, feature_names=m.feature_names)
    return _boost(cfg, dtrain, hp, rounds, nthread)


def _boost(
    cfg: Config, dtrain: xgb.DMatrix, hp: dict, rounds: int, nthread: int, seed: int | None = None
) -> xgb.Booster:
    params = xgb_params(
        hp, nthread, cfg.model.max_bin, seed=cfg.search.seed if seed is None else seed
    )
    return xgb.train(params, dtrain, num_boost_round=max(1, rounds), verbose_eval=False)


def final_rounds(fold_rounds: list[int], fold_sizes: list[int], full_size: int) -> int:
    """Rounds for the full fit from the folds' early-stopping rounds (see `fit_final`)."""
    ratio = full_size / max(1.0, float(np.mean(fold_sizes)))
    return int(round(float(np.median(fold_rounds)) * np.sqrt(max(1.0, ratio))))


def save_model(model_dir: Path, booster: xgb.Booster, meta: dict, config_yaml: str) -> Path:
    """Write model + metadata into a temp dir, then rename it to `model_dir`."""
    with atomic_dir(model_dir) as tmp:
        booster.save_model(tmp / MODEL_FILE)
        write_json_atomic(tmp / "meta.json", meta)
        write_text_atomic(tmp / "config.yaml", config_yaml)
    return model_dir


META_KEYS = ("run_id", "feature_names", "train_window")  # what every reader of a model needs


def load_model(model_dir: str | Path) -> tuple[xgb.Booster, dict]:
    """The booster and its metadata; one clear error (`ArtifactError`, naming the file and the
    fix) if the directory is not a complete, readable model, before anything uses it."""
    model_dir = Path(model_dir)
    model_path, meta_path = model_dir / MODEL_FILE, model_dir / "meta.json"
    if not model_path.exists() or not meta_path.exists():
        raise FileNotFoundError(
            f"{model_dir}: not a complete model directory (needs {MODEL_FILE} and meta.json); "
            "models are written by `python -m vpt_ray.phase N` or `python -m vpt_ray.train`"
        )
    fix = (
        "the model directory is damaged: write it again with `python -m vpt_ray.phase N "
        f"--run-id {model_dir.name}` (or `vpt train`), or pass another --model-dir"
    )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{meta_path}: not readable JSON ({exc}); {fix}") from None
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ArtifactError(f"{meta_path}: lacks {', '.join(missing)}; {fix}")
    booster = xgb.Booster()
    try:
        booster.load_model(model_path)
    except xgb.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise ArtifactError(
            f"{model_path}: not a readable XGBoost model ({first}); {fix}"
        ) from None
    if booster.num_features() != len(meta["feature_names"]):
        raise ArtifactError(
            f"{model_path}: has {booster.num_features()} features but {meta_path} lists "
            f"{len(meta['feature_names'])}; {fix}"
        )
    return booster, meta
