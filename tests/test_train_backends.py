"""The final fit's two backends against the in-memory fit they replace.

Local: the streaming fit (`train.fit_final`, a `QuantileDMatrix` fed ticker by ticker from the
feature store) trains on exactly `load_matrix`'s rows. Distributed: Ray Train's `XGBoostTrainer`
with 2 workers reading Ray Data shards gives a booster as accurate as the local one, and a phase
run with it publishes a model the backtest uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xgboost as xgb

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.data.chain import ensure_synthetic
from vpt_ray.features.store import ticker_features
from vpt_ray.model.distributed import plan_workers
from vpt_ray.model.train import (
    MODEL_FILE,
    SpilledBatches,
    fit_final,
    fit_matrix,
    load_model,
    training_rows,
)
from vpt_ray.pipeline.phase import run_phase
from vpt_ray.pipeline.stages import make_folds

HP = {
    "max_depth": 4,
    "learning_rate": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 1.0,
    "reg_alpha": 0.01,
    "reg_lambda": 1.0,
}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """2 synthetic tickers x 2 months of features, built without Ray (plain `ticker_features`)."""
    ws = tmp_path_factory.mktemp("backends")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    cfg = load_config(1, overrides=tiny_overrides(ws, "synthetic.signal_strength=3.0"))
    store = {}
    for t in cfg.data.tickers:
        td = ensure_synthetic(cfg, t, cfg.data.start, cfg.backtest.end)
        store[t] = ticker_features(cfg, td, ws / "features" / f"{t}.parquet")
    return ws, cfg, store


def _accuracy(booster: xgb.Booster, X: np.ndarray, y: np.ndarray, names: list[str]) -> float:
    return float(((booster.predict(xgb.DMatrix(X, feature_names=names)) > 0.5) == y).mean())


@pytest.mark.parametrize("sample_days", [None, 10])
def test_streaming_fit_reads_the_in_memory_rows(tiny_store, sample_days):
    ws, cfg, store = tiny_store
    if sample_days:
        cfg = load_config(1, overrides=tiny_overrides(ws, f"cv.sample_days={sample_days}"))
    m, _ = make_folds(cfg, store)
    rows = training_rows(cfg, store)
    assert rows.n_rows == len(m) and rows.names == tuple(m.feature_names)
    # the stream is the matrix's rows, ticker by ticker instead of time-sorted
    parts = [rows.read(i) for i in range(len(rows.paths))]
    order = np.lexsort((m.pos, m.ticker))
    np.testing.assert_array_equal(np.concatenate([X for X, _ in parts]), m.X[order])
    np.testing.assert_array_equal(np.concatenate([y for _, y in parts]), m.y[order])


def test_streaming_fit_equals_the_in_memory_fit_on_the_same_row_order(tiny_store):
    _, cfg, store = tiny_store
    m, _ = make_folds(cfg, store)
    rows = training_rows(cfg, store)
    streamed = fit_final(cfg, rows, HP, 40, nthread=2)
    order = np.lexsort((m.pos, m.ticker))
    same_order = fit_matrix(cfg, dataclasses.replace(m, X=m.X[order], y=m.y[order]), HP, 40, 2)
    time_sorted = fit_matrix(cfg, m, HP, 40, nthread=2)
    d = xgb.DMatrix(m.X, feature_names=m.feature_names)
    np.testing.assert_array_equal(streamed.predict(d), same_order.predict(d))
    # time-sorted rows: other quantile cuts and subsample draws, the same fit within noise
    p_s, p_t = streamed.predict(d), time_sorted.predict(d)
    assert np.corrcoef(p_s, p_t)[0, 1] > 0.9
    acc_s, acc_t = (_accuracy(b, m.X, m.y, m.feature_names) for b in (streamed, time_sorted))
    assert abs(acc_s - acc_t) < 0.015
    assert streamed.feature_names == m.feature_names


def test_spilled_batches_read_the_source_once(tmp_path):
    rng = np.random.default_rng(0)
    parts = [(rng.normal(size=(50, 3)).astype(np.float32), np.ones(50, np.float32)) for _ in "ab"]
    calls = []

    def source():
        calls.append(1)
        return iter(parts)

    it = SpilledBatches(source, ["a", "b", "c"], tmp_path)
    d = xgb.QuantileDMatrix(it, max_bin=16)
    assert len(calls) == 1 and it.rows == d.num_row() == 100  # XGBoost made 4 passes
    (tmp_path / "e").mkdir()
    empty = xgb.QuantileDMatrix(SpilledBatches(lambda: iter([]), ["a", "b", "c"], tmp_path / "e"))
    assert (empty.num_row(), empty.num_col()) == (0, 3)  # an empty shard still joins


def test_worker_plan_clamps_to_cpus_and_files():
    plan = plan_workers(4, cpus=2, files=10)
    assert plan.workers == 2 and plan.notes
    assert plan.workers * plan.cpus_per_worker + plan.data_cpus == pytest.approx(2)
    assert plan_workers(4, cpus=8, files=3).workers == 3
    assert plan_workers(2, cpus=8, files=10).notes == ()
    with pytest.raises(ValueError, match="at least 2 CPUs"):
        plan_workers(1, cpus=1, files=10)


def test_phase_with_distributed_backend_matches_the_local_fit(ray_session, tiny_store, workspace):
    """One Ray Train run (its start-up dominates): a tiny phase with 2 workers publishes a model
    in the native format, backtests with it, and is as accurate as the local fit on the same
    rows (the phase's market is `tiny_store`'s: same overrides, same synthetic seed)."""
    _, cfg, store = tiny_store
    over = tiny_overrides(workspace, "synthetic.signal_strength=3.0", "model.backend=distributed")
    metrics = run_phase(load_config(1, overrides=over), run_id="dist")
    model_dir = workspace / "artifacts" / "models" / "dist"
    booster, meta = load_model(model_dir)  # model.ubj, XGBoost's native format
    assert (model_dir / MODEL_FILE).exists()
    assert meta["final_fit"]["backend"] == "distributed" and meta["final_fit"]["workers"] == 2
    assert sorted(metrics["backtest"]["per_ticker"]) == ["AAA", "BBB"]  # backtested with it
    m, _ = make_folds(cfg, store)
    rows = training_rows(cfg, store)
    assert meta["final_fit"]["samples"] == rows.n_rows == metrics["cv"]["samples"]
    assert booster.feature_names == m.feature_names == meta["feature_names"]
    local = fit_final(cfg, rows, meta["params"], meta["rounds"], nthread=2)
    assert booster.num_boosted_rounds() == local.num_boosted_rounds() == meta["rounds"]
    acc_d, acc_l = (_accuracy(b, m.X, m.y, m.feature_names) for b in (booster, local))
    assert abs(acc_d - acc_l) < 0.015
