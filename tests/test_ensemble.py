"""Phase 5 ensembles: weights chosen on out-of-fold predictions, members from the search's best
configurations, a model directory that saves and loads it, and a phase that reports it against the
best single model and backtests it through the same Ray tasks.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.model.ensemble import (
    EnsembleModel,
    _log_loss,
    candidates,
    greedy_weights,
    load_ensemble,
    save_ensemble,
)


def _labels(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < 0.5).astype(np.float64)


def test_greedy_weights_prefer_the_informative_member_and_never_lose_to_it():
    rng = np.random.default_rng(1)
    y = _labels(4000)
    good = np.clip(0.5 + 0.15 * (2 * y - 1) + rng.normal(0, 0.1, len(y)), 0.01, 0.99)
    noise = np.clip(0.5 + rng.normal(0, 0.2, len(y)), 0.01, 0.99)
    w = greedy_weights(np.stack([noise, good]), y, rounds=20)
    assert w.sum() == pytest.approx(1.0) and w[1] > w[0]
    ens = w[0] * noise + w[1] * good
    assert _log_loss(y, ens) <= _log_loss(y, good) + 1e-12


def test_greedy_weights_mix_complementary_members():
    rng = np.random.default_rng(2)
    y = _labels(6000, seed=3)
    signal = 0.12 * (2 * y - 1)
    a = np.clip(0.5 + signal + rng.normal(0, 0.15, len(y)), 0.01, 0.99)
    b = np.clip(0.5 + signal + rng.normal(0, 0.15, len(y)), 0.01, 0.99)  # independent errors
    w = greedy_weights(np.stack([a, b]), y, rounds=20)
    assert 0.2 < w[0] < 0.8  # both used: averaging independent errors lowers the loss
    assert _log_loss(y, w[0] * a + w[1] * b) < min(_log_loss(y, a), _log_loss(y, b))


def test_greedy_weights_reject_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        greedy_weights(np.zeros((2, 5)), np.zeros(4), rounds=3)
    with pytest.raises(ValueError, match="rounds"):
        greedy_weights(np.full((2, 4), 0.5), np.zeros(4), rounds=0)


def test_candidates_take_top_k_configs_times_seeds_with_seeded_feature_subsets(workspace):
    cfg = load_config(
        5,
        overrides=tiny_overrides(
            workspace,
            "model.ensemble.top_k=2",
            "model.ensemble.seeds=[3,4]",
            "model.ensemble.feature_fraction=0.5",
        ),
    )
    keys = ["max_depth", "learning_rate", "subsample", "colsample_bytree"]
    keys += ["min_child_weight", "reg_alpha", "reg_lambda"]
    trials = pd.DataFrame([{k: float(i + 1) for k in keys} for i in range(3)])
    names = [f"f{i}" for i in range(10)]
    members = candidates(cfg, trials, names)
    assert [(m.rank, m.seed) for m in members] == [(0, 3), (0, 4), (1, 3), (1, 4)]
    assert members[0].features == tuple(names)  # the best config, first seed: every feature
    assert all(len(m.features) == 5 and set(m.features) < set(names) for m in members[1:])
    assert members == candidates(cfg, trials, names)  # seeded
    assert members[1].params == {k: 1.0 for k in keys}


def _booster(X: np.ndarray, y: np.ndarray, names: list[str], seed: int) -> xgb.Booster:
    d = xgb.DMatrix(X, y, feature_names=names)
    params = {"objective": "binary:logistic", "max_depth": 2, "seed": seed, "nthread": 1}
    return xgb.train(params, d, num_boost_round=5)


def test_ensemble_saves_loads_and_predicts_the_weighted_average(tmp_path):
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    X = rng.normal(size=(500, 3)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 2] + rng.normal(0, 1, 500) > 0).astype(np.float32)
    full = _booster(X, y, names, 0)
    sub = _booster(X[:, [0, 2]], y, ["a", "c"], 1)
    model = EnsembleModel([full, sub], [3.0, 1.0], [names, ["a", "c"]], info={"k": 1})
    assert model.weights == [0.75, 0.25]  # normalized
    expected = 0.75 * full.predict(xgb.DMatrix(X, feature_names=names)) + 0.25 * sub.predict(
        xgb.DMatrix(X[:, [0, 2]], feature_names=["a", "c"])
    )
    np.testing.assert_allclose(model.predict_proba(X, names), expected, rtol=1e-6)
    save_ensemble(tmp_path, model)
    spec = json.loads((tmp_path / "ensemble" / "ensemble.json").read_text())
    assert [m["file"] for m in spec["members"]] == ["member_0.ubj", "member_1.ubj"]
    loaded = load_ensemble(tmp_path)
    np.testing.assert_allclose(loaded.predict_proba(X, names), expected, rtol=1e-6)
    assert loaded.info == {"k": 1}
    assert load_ensemble(tmp_path / "nowhere") is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind
    with pytest.raises(ValueError, match="not among the inputs"):
        loaded.predict_proba(X[:, :2], ["a", "b"])
    with pytest.raises(ValueError, match="same number"):
        EnsembleModel([full], [0.5, 0.5], [names])
    with pytest.raises(ValueError, match=">= 0"):
        EnsembleModel([full, sub], [1.0, -1.0], [names, ["a", "c"]])


@pytest.mark.slow
def test_phase_reports_the_ensemble_against_the_best_single_model(ray_session, workspace):
    from vpt_ray.backtest.run import pooled_predictions, run_backtests
    from vpt_ray.data.local import ticker_path
    from vpt_ray.model.metrics import classification
    from vpt_ray.pipeline.phase import run_phase

    cfg = load_config(
        1,
        overrides=tiny_overrides(
            workspace,
            "search.num_samples=3",
            "model.ensemble.enabled=true",
            "model.ensemble.top_k=2",
            "model.ensemble.seeds=[0,1]",
            "model.ensemble.feature_fraction=0.7",
        ),
    )
    m = run_phase(cfg, run_id="ens")
    e = m["ensemble"]
    assert e["candidates"] == 4 and 1 <= e["used"] <= 4
    assert sum(x["weight"] for x in e["members"]) == pytest.approx(1.0)
    assert e["cv"]["ensemble"]["log_loss"] <= e["cv"]["single"]["log_loss"] + 1e-9
    assert e["oos"]["single"]["accuracy"] == m["oos"]["accuracy"]  # the run's single model
    assert e["backtest"]["single"]["sharpe"] == m["backtest"]["sharpe"]
    assert e["oos"]["ensemble"]["samples"] == m["oos"]["samples"]
    for k in ("cv_log_loss", "oos_accuracy", "sharpe"):
        assert k in e["improvement"]
    d = e["differences"]  # paired on the same bars: the difference and its SE
    assert d["oos_accuracy"] == pytest.approx(e["improvement"]["oos_accuracy"])
    assert d["oos_accuracy_se"] >= 0 and d["sharpe_se"] >= 0
    # member 0 is the search's best trial (its seed, every feature): its folds came from the
    # trial cache, and if it got a weight, the single final model was reused for it
    first = e["members"][0]
    assert first["folds_from_cache"] == cfg.cv.n_splits
    assert all(x["folds_from_cache"] == 0 for x in e["members"][1:])
    assert [x["rounds"] is not None for x in e["members"]] == [
        x["weight"] > 0 for x in e["members"]
    ]
    assert e["final_fits"] == e["used"] - (first["weight"] > 0)
    assert {"ensemble", "backtest_ensemble"} <= set(m["resources"]["stages"])
    arts = workspace / "artifacts"
    on_disk = json.loads((arts / "reports" / "ens" / "metrics.json").read_text())
    assert on_disk["ensemble"]["used"] == e["used"]
    assert "Ensemble (" in (arts / "reports" / "ens" / "summary.md").read_text()

    # the saved ensemble reloads and the backtest tasks reproduce the reported OOS figures
    model = load_ensemble(arts / "models" / "ens")
    assert model is not None and len(model.boosters) == e["used"]
    store = arts / "runs" / "ens" / "features"
    bars = {t: str(ticker_path(cfg.data.dir, t, synthetic=True)) for t in ("AAA", "BBB")}
    feats = {t: str(store / f"{t}.parquet") for t in bars}
    res = run_backtests(cfg, model, bars, feats, m["features"]["names"])
    y, p = pooled_predictions(res)
    assert classification(y, p)["accuracy"] == pytest.approx(e["oos"]["ensemble"]["accuracy"])

    # a rerun (any run id) takes the ensemble from the resume cache: same members, same figures
    assert m["resume"]["ensemble_from_cache"] is False
    again = run_phase(cfg, run_id="ens-again")
    assert again["resume"]["ensemble_from_cache"] is True
    assert again["ensemble"]["cv"] == e["cv"] and again["ensemble"]["oos"] == e["oos"]
    assert again["ensemble"]["members"] == e["members"]


def test_paired_differences_of_a_model_with_itself_are_zero_and_see_correlation():
    from vpt_ray.model.metrics import paired_accuracy_difference, sharpe_difference

    rng = np.random.default_rng(1)
    y = (rng.random(2000) > 0.5).astype(float)
    p = rng.random(2000)
    assert paired_accuracy_difference(y, p, p, 200) == (0.0, 0.0)
    r = rng.normal(0.001, 0.01, 250)
    assert sharpe_difference(r, r) == (0.0, 0.0)
    # two strategies sharing most of their daily noise: the difference's SE is far below the SE
    # of either Sharpe alone (~1 annualized for 250 days)
    other = r + rng.normal(0.0, 0.001, 250)
    _, se = sharpe_difference(r, other)
    assert 0 < se < 0.3
