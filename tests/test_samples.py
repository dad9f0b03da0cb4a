"""The sample file (`vpt_ray.features.samples`): the search's features on disk instead of in memory.

It must hold exactly the training samples of the old whole-window rule, in the same time order;
a fold's `QuantileDMatrix` read from it a chunk at a time must be the matrix the in-memory path
builds; a worker that cannot see the driver's disk rebuilds the same bytes; and an interrupted
write never looks complete.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.features import samples
from vpt_ray.features.causal import clock_slots, feature_names
from vpt_ray.features.samples import SampleFile, fold_dmatrix
from vpt_ray.features.store import build_store, load_matrix, load_samples
from vpt_ray.pipeline import stages


@pytest.fixture(scope="module")
def built(ray_session, tmp_path_factory):
    ws = tmp_path_factory.mktemp("samples")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    cfg = load_config(1, overrides=tiny_overrides(ws))
    store = build_store(cfg, stages.load_data(cfg).tickers, ws / "features")
    names = feature_names(cfg.features.windows)
    window = (store, names, cfg.data.start, cfg.data.end, cfg.labels.stride)
    slots = clock_slots(cfg.data.bar_minutes)
    m = load_samples(*window, slots, ws / "samples")
    return cfg, store, names, window, slots, m, ws


def _whole_window_rule(store, names, start, end, stride, slots) -> pd.DataFrame:
    """The rule written out on whole ticker windows with pandas, independently of the month
    merge: labelled, label ends by the ticker's last labelled session, strided, complete."""
    parts = []
    for code, s in enumerate(store.values()):
        df = pd.read_parquet(s["path"])
        df = df[(df["session"].dt.date >= start) & (df["session"].dt.date <= end)]
        df = df[df["y"].notna()]
        df = df[df["label_end"] // slots <= df["pos"].max() // slots]
        df = df[df["pos"] % stride == 0]
        parts.append(df.assign(_ticker=code))
    df = pd.concat(parts).sort_values(["pos", "_ticker"], kind="stable")
    return df


def test_sample_file_holds_the_rule_rows_in_time_order_without_warm_up_rows(built):
    cfg, store, names, window, slots, m, _ = built
    ref = _whole_window_rule(*window, slots)
    incomplete = ref[names].isna().any(axis=1)
    assert incomplete.sum() > 0  # the tiny market has warm-up rows in the training window
    ref = ref[~incomplete]
    assert m.X is None and m.samples is not None and m.samples.rows == len(ref) == len(m)
    np.testing.assert_array_equal(m.pos, ref["pos"].to_numpy())
    np.testing.assert_array_equal(m.ticker, ref["_ticker"].to_numpy())
    np.testing.assert_array_equal(m.y, ref["y"].to_numpy(np.float32))
    np.testing.assert_array_equal(m.features(), ref[names].to_numpy(np.float32))
    np.testing.assert_array_equal(m.samples.column("fwd_ret"), m.fwd_ret)
    # the in-memory loader gives the same samples and features
    mem = load_matrix(*window, slots)
    np.testing.assert_array_equal(mem.X, m.features())
    np.testing.assert_array_equal(mem.label_end, m.label_end)
    assert not np.isnan(mem.X).any()


def test_subset_reads_its_rows_from_the_file(built):
    *_, m, _ = built
    keep = np.zeros(len(m), dtype=bool)
    keep[::3] = True
    sub = stages.subset_matrix(m, keep)
    assert sub.X is None and len(sub) == keep.sum()
    np.testing.assert_array_equal(sub.sample_rows(), np.flatnonzero(keep))
    np.testing.assert_array_equal(sub.features(), m.features()[keep])


def test_fold_matrix_from_the_file_is_the_in_memory_one(built, monkeypatch):
    *_, m, _ = built
    X, y, names = m.features(), m.y, m.feature_names
    rows = np.arange(len(m) // 5, len(m) - 7)  # a block that starts mid-chunk
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_bin": 64, "nthread": 1}

    def fit(d: xgb.DMatrix) -> np.ndarray:
        return xgb.train(params, d, 8).predict(xgb.DMatrix(X[:500], feature_names=names))

    in_memory = fit(xgb.QuantileDMatrix(X[rows], y[rows], max_bin=64, feature_names=names))
    one_chunk = fold_dmatrix(m.samples, rows, y, max_bin=64)
    assert one_chunk.num_row() == len(rows)
    np.testing.assert_array_equal(one_chunk.get_label(), y[rows])
    np.testing.assert_array_equal(fit(one_chunk), in_memory)  # same rows, one batch: identical
    # many chunks: the same rows and labels; the cuts come from merged per-batch sketches
    monkeypatch.setattr(samples, "CHUNK_ROWS", 999)
    chunked = fold_dmatrix(m.samples, rows[::-1].copy(), y, max_bin=64)  # any order in
    np.testing.assert_array_equal(chunked.get_label(), y[rows])
    assert np.abs(fit(chunked) - in_memory).max() < 0.05
    val = fold_dmatrix(m.samples, np.arange(len(m) // 5), y, max_bin=64, ref=chunked)
    assert val.num_row() == len(m) // 5


def test_a_worker_without_the_driver_disk_rebuilds_the_same_file(built, tmp_path, monkeypatch):
    *_, m, _ = built
    monkeypatch.setattr(samples, "scratch_root", lambda: tmp_path)  # the node's run scratch
    moved = pickle.loads(pickle.dumps(m.samples))  # what a trial receives
    elsewhere = SampleFile(tmp_path / "not-on-this-node", moved.rows, moved.rule)
    local = elsewhere.local()
    assert local.dir.parent == tmp_path and local.dir != m.samples.dir
    for name in ("X.f32", "y.bin", "fwd_ret.bin", "pos.bin"):
        assert (local.dir / name).read_bytes() == (m.samples.dir / name).read_bytes()
    assert m.samples.local() is m.samples  # written on this node: the file itself
    # A complete file that another node wrote (visible here: one machine, a shared mount) is
    # not read across: this node uses its own copy.
    meta = m.samples.dir / "meta.json"
    original = meta.read_text()
    meta.write_text(original.replace(samples.current_node(), "another-node"))
    try:
        assert m.samples.local().dir == local.dir
    finally:
        meta.write_text(original)


def test_an_interrupted_write_never_looks_complete(built, tmp_path, monkeypatch):
    *_, m, _ = built
    rule = m.samples.rule

    original = samples.SampleRule.month_batches

    def crash_after_one_month(self):
        gen = original(self)
        yield next(gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(samples.SampleRule, "month_batches", crash_after_one_month)
    with pytest.raises(KeyboardInterrupt):
        samples.write_samples(rule, tmp_path / "s")
    assert not (tmp_path / "s" / "meta.json").exists()
    assert not (tmp_path / "s" / "X.f32").exists()  # only the temp names were written
    partial = SampleFile(tmp_path / "s", m.samples.rows, rule)
    assert not partial._complete()


def test_fold_cache_keeps_folds_within_its_budget_and_forgets_another_search(built):
    *_, m, _ = built
    from vpt_ray.core.resources import xgb_matrix_bytes
    from vpt_ray.model.folds import FoldCache

    y = m.y
    small = (
        fold_dmatrix(m.samples, np.arange(100), y, 64),
        fold_dmatrix(m.samples, np.arange(100, 120), y, 64),
    )
    big = (
        fold_dmatrix(m.samples, np.arange(2000), y, 64),
        fold_dmatrix(m.samples, np.arange(2000, 2400), y, 64),
    )
    size = sum(xgb_matrix_bytes(d.num_row(), d.num_col()) for d in small)
    cache = FoldCache()
    assert cache.get("search-a", 0) is None
    cache.offer(0, small, budget=size)  # fits exactly
    cache.offer(1, big, budget=size)  # would pass the budget: rebuilt per fit instead
    assert cache.get("search-a", 0) is small and cache.get("search-a", 1) is None
    assert cache.bytes == size
    assert cache.get("search-b", 0) is None and cache.bytes == 0  # another search's token
    cache.offer(0, small, budget=0)  # fold_cache_mb = 0: nothing is kept
    assert cache.get("search-b", 0) is None
