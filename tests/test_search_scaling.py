"""Search that scales: ASHA racing over the purged folds, the search on sampled sessions with the
final fit on every training row, and a time budget that ends the search and says so.

One tiny real matrix (2 synthetic tickers x 2 months, 4 purged folds) serves the direct
`run_search` tests; one tiny phase checks the wiring (metrics.json, summary.md, final model).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.core.config_sections import SEARCH_PARAMS
from vpt_ray.core.memory_sampler import MemoryLimitExceeded, MemorySampler
from vpt_ray.model.cv import early_stopping_folds
from vpt_ray.model.folds import fit_folds
from vpt_ray.model.metrics import VAL_LOG_LOSS
from vpt_ray.model.search import run_search
from vpt_ray.model.search_result import COMPLETED, STOPPED_BY_BUDGET, STOPPED_EARLY
from vpt_ray.model.train import final_rounds
from vpt_ray.pipeline import stages
from vpt_ray.pipeline.audit import split_audit
from vpt_ray.pipeline.phase import run_phase
from vpt_ray.pipeline.resume import search_key
from vpt_ray.validation.honesty import overfitting_section

pytestmark = pytest.mark.slow
FAST = ("cv.n_splits=4", "model.n_estimators=40", "model.early_stopping_rounds=10")


@pytest.fixture(scope="module")
def tiny(ray_session, tmp_path_factory):
    """(workspace, data, matrix, folds) of a tiny synthetic training period."""
    ws = tmp_path_factory.mktemp("scaling")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    cfg = load_config(1, overrides=tiny_overrides(ws, *FAST))
    data = stages.load_data(cfg)
    store = stages.build_features(cfg, data, ws / "features")
    m, folds = stages.make_folds(cfg, store, samples_dir=ws / "samples")
    return ws, data, m, folds


@pytest.fixture(scope="module")
def fifo(tiny, tmp_path_factory):
    """A FIFO search of 2 trials: (config, result, Tune storage). Its wall time also measures
    this machine's pace (actor start-up included) for the budget test."""
    ws, _, m, folds = tiny
    cfg = _cfg(ws, "search.num_samples=2")
    storage = tmp_path_factory.mktemp("fifo")
    return cfg, run_search(cfg, m, folds, storage, 2), storage


def _cfg(ws: Path, *extra: str):
    return load_config(1, overrides=tiny_overrides(ws, *FAST, *extra))


def _es_folds(cfg, m, folds):
    """The folds as the search fits them: each training part split for early stopping."""
    return early_stopping_folds(
        folds, m.pos, m.label_end, m.slots, cfg.cv.early_stopping_fraction, cfg.embargo_bars
    )


def _settings(cfg) -> dict:
    return {
        "n_estimators": cfg.model.n_estimators,
        "early_stopping_rounds": cfg.model.early_stopping_rounds,
        "max_bin": cfg.model.max_bin,
        "nthread": cfg.search.cpus_per_trial,
        "overlap": min(1.0, cfg.labels.stride / cfg.labels.horizon),  # the log loss SE's n_eff
    }


def _reports(storage: Path, trial_id: str) -> int:
    """How many results the trial reported to Tune (one JSON line each in result.json)."""
    path = storage / "search" / trial_id / "result.json"
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _equity(n: int = 60) -> pd.Series:
    r = np.random.default_rng(0).normal(0.001, 0.01, n)
    return pd.Series(100_000 * np.cumprod(1 + r), index=pd.bdate_range("2024-03-01", periods=n))


def _warnings(name: str) -> tuple[logging.Logger, logging.Handler, list[str]]:
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    return logger, handler, records


def test_asha_races_the_folds_and_a_time_budget_ends_the_search_with_a_report(tiny, fifo, tmp_path):
    """One ASHA search of many trials cut by its budget (a Tune run costs seconds of actor
    start-up, so one run serves both): poor trials stop early, the best fitted every fold, the
    budget's end is reported and the search goes on with the completed trials. The budget is
    2.5 x the 2-trial FIFO search's wall time, so a loaded machine gets a longer one."""
    ws, _, m, folds = tiny
    budget = round(max(8.0, 2.5 * fifo[1].info["elapsed_s"]), 1)
    cfg = _cfg(
        ws, "search.scheduler=asha", "search.num_samples=400", f"search.time_budget_s={budget}"
    )
    logger, handler, records = _warnings("vpt_ray.search")
    try:
        res = run_search(cfg, m, folds, tmp_path, 2)  # 400 trials take minutes here
    finally:
        logger.removeHandler(handler)
    t, info, n = res.trials, res.info, len(folds)

    assert info["scheduler"] == "asha" and info["folds"] == n == 4
    assert info["stopped_by_budget"] and info["elapsed_s"] >= budget
    assert any("time budget" in r and "goes on with the" in r for r in records), records
    assert info["trials_completed"] >= 1 and info["trials_stopped_early"] >= 1
    counts = t["status"].value_counts().to_dict()
    assert counts.get(COMPLETED, 0) == info["trials_completed"]
    assert counts.get(STOPPED_EARLY, 0) == info["trials_stopped_early"]
    assert counts.get(STOPPED_BY_BUDGET, 0) == info["trials_stopped_by_budget"]
    assert len(t) + info["trials_not_reported"] == 400
    # completed trials first (best first), then the stopped ones with the folds they fitted
    done = t["status"] == COMPLETED
    assert done.iloc[: done.sum()].all() and (t.loc[done, "folds_fitted"] == n).all()
    assert t.loc[done, VAL_LOG_LOSS].is_monotonic_increasing
    stopped = t[~done]
    assert stopped["folds_fitted"].between(1, n - 1).all()
    assert stopped[VAL_LOG_LOSS].isna().all() and stopped["partial_val_log_loss"].notna().all()
    assert (t["cpu_time_s"] > 0).all()  # every trial's CPU time, a load-robust cost measure
    # the chosen trial fitted every fold; PBO / stability inputs cover the completed trials only
    assert res.best_params == {k: t.iloc[0][k] for k in SEARCH_PARAMS}
    assert len(res.best["folds"]) == n
    assert res.fold_scores.shape == (n, done.sum()) and res.daily_perf.shape[1] == done.sum()
    assert (res.completed_trials["status"] == COMPLETED).all()
    # racing reports once per fold; a stopped trial reported exactly the folds it fitted
    for _, row in t.iterrows():
        assert _reports(tmp_path, row["trial_id"]) == row["folds_fitted"]
    # the final figures of a completed trial are those of fitting its folds outright
    plain = fit_folds(
        res.best_params, m.features(), m.y, _es_folds(cfg, m, folds), **_settings(cfg)
    )
    assert res.best[VAL_LOG_LOSS] == pytest.approx(plain[VAL_LOG_LOSS], rel=1e-9)
    assert [f["rounds"] for f in res.best["folds"]] == [f["rounds"] for f in plain["folds"]]
    # honesty: every configuration tried counts in the DSR; PBO uses the completed ones
    over = overfitting_section(res, _equity())
    assert over["n_trials"] == len(t) and over["n_trials_completed"] == done.sum()
    assert "count in the deflated Sharpe" in over["trials_note"]


def test_fifo_fits_every_fold_of_every_trial_once_and_no_result_in_budget_fails_clearly(
    tiny, fifo, tmp_path
):
    ws, _, m, folds = tiny
    cfg, res, storage = fifo
    assert cfg.search.scheduler == "fifo"
    t = res.trials
    assert (t["status"] == COMPLETED).all() and (t["folds_fitted"] == len(folds)).all()
    assert res.info["trials_completed"] == 2 and res.info["trials_stopped_early"] == 0
    assert not res.info["stopped_by_budget"]
    assert all(_reports(storage, tid) == 1 for tid in t["trial_id"])  # one, at the end
    assert (t[VAL_LOG_LOSS] == t["partial_val_log_loss"]).all()
    plain = fit_folds(
        res.best_params, m.features(), m.y, _es_folds(cfg, m, folds), **_settings(cfg)
    )
    assert res.best["folds"] == plain["folds"]
    assert "trials_note" not in overfitting_section(res, _equity())
    with pytest.raises(RuntimeError, match="no search trial fitted all 4 folds within search"):
        run_search(_cfg(ws, "search.time_budget_s=0.01"), m, folds, tmp_path, 2)


def test_memory_stop_ends_a_racing_search_cleanly(tiny, tmp_path):
    """MemoryStop still ends the whole search under ASHA, and the search raises the clean stop."""
    ws, _, m, folds = tiny
    cfg = _cfg(ws, "search.scheduler=asha", "search.num_samples=400")
    with (
        MemorySampler(interval_s=0.1, warn_gb=None, limit_gb=0.05),
        pytest.raises(MemoryLimitExceeded, match="search") as stop,
    ):
        run_search(cfg, m, folds, tmp_path, 2)
    assert stop.value.cause == "memory_limit"
    trial_dirs = [d for d in (tmp_path / "search").iterdir() if d.is_dir()]
    assert len(trial_dirs) < 400  # the search ended instead of running every trial


def test_search_sample_days_restricts_purged_folds_to_the_sampled_sessions(tiny):
    ws, _, m, folds = tiny
    cfg = _cfg(ws, "search.sample_days=12")
    sub, sub_folds = stages.search_sample(cfg, m, folds)
    assert len(np.unique(sub.pos // sub.slots)) == 12 and len(sub) < len(m)
    assert split_audit(cfg, sub, sub_folds).passed  # still purged and embargoed
    keep = np.isin(m.pos // m.slots, np.unique(sub.pos // sub.slots))
    for (tr, va), (s_tr, s_va) in zip(folds, sub_folds, strict=True):
        for col in ("pos", "ticker", "y"):  # the fold's sampled rows, same order
            full, part = getattr(m, col), getattr(sub, col)
            assert np.array_equal(part[s_tr], full[tr][keep[tr]])
            assert np.array_equal(part[s_va], full[va][keep[va]])
    # the resume key follows the search sampling and the scheduler
    fk = {"AAA": "a", "BBB": "b"}
    keys = {search_key(_cfg(ws, *x), fk) for x in [(), ("search.sample_days=12",)]}
    keys.add(search_key(_cfg(ws, "search.scheduler=asha"), fk))
    assert len(keys) == 3


def test_phase_searches_on_sampled_days_and_fits_the_final_model_on_all(ray_session, workspace):
    cfg = load_config(
        1,
        overrides=tiny_overrides(
            workspace,
            *FAST,
            "search.sample_days=15",
            "search.scheduler=asha",
            "search.num_samples=6",
        ),
    )
    metrics = run_phase(cfg, run_id="sd")
    s, cv = metrics["search"], metrics["cv"]
    assert s["sample_days"] == 15 and s["sessions"] == 15
    assert s["samples"] < cv["samples"]  # searched on a sample, the final fit sees every row
    assert max(f["train_samples"] for f in cv["folds"]) < cv["samples"]
    assert s["trials"] == s["trials_completed"] + s["trials_stopped_early"] == 6
    assert metrics["overfitting"]["n_trials"] == 6
    model_dir = Path(metrics["model_dir"])
    meta = json.loads((model_dir / "meta.json").read_text())
    # rounds scaled from the sampled folds' sizes to the full training set
    expected = final_rounds(
        [f["rounds"] for f in cv["folds"]], [f["train_samples"] for f in cv["folds"]], cv["samples"]
    )
    assert meta["rounds"] == expected
    # the first tree's root covers every training row: hessian p(1-p) per row x subsample
    booster = xgb.Booster()
    booster.load_model(model_dir / "model.ubj")
    trees = booster.trees_to_dataframe()
    root = float(trees[(trees["Tree"] == 0) & (trees["Node"] == 0)]["Cover"].iloc[0])
    param = json.loads(booster.save_config())["learner"]["learner_model_param"]
    p0 = float(str(param["base_score"]).strip("[]"))  # a probability for binary:logistic
    rows = root / (p0 * (1 - p0) * meta["params"]["subsample"])
    assert abs(rows - cv["samples"]) < 0.1 * cv["samples"], (rows, cv["samples"], s["samples"])
    summary = (Path(metrics["model_dir"].replace("models", "reports")) / "summary.md").read_text()
    assert "searched on 15 sampled sessions" in summary and "whole training set" in summary
    assert "stopped early" in summary
