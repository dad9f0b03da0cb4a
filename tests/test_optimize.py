"""Optimize as an action, its pure parts on hand-made inputs: the candidate sizes, the one-SE rule,
permutation importance on a known model, and the comparison that says whether a run recovered.
The whole path (a forced degradation, the reduced config, `--optimize`) runs in
tests/test_known_truth.py."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import xgboost as xgb

from vpt_ray.core.config import load_config
from vpt_ray.features.samples import COLUMNS, SampleFile, SampleRule
from vpt_ray.model.cv import EarlyStopFold
from vpt_ray.pipeline.optimize import CvFit, FoldData, comparison, subset_sizes, within_one_se


def test_subset_sizes_and_the_one_se_rule():
    assert subset_sizes(36) == [5, 6, 9, 12, 18, 27]
    assert subset_sizes(2) == []  # nothing smaller than two features is tried
    assert within_one_se(0.6931, 0.6925, 0.001) and not within_one_se(0.6940, 0.6925, 0.001)
    assert within_one_se(0.69, 0.69, float("nan"))


def _sample_file(tmp_path, X: np.ndarray, y: np.ndarray) -> SampleFile:
    X.astype(np.float32).tofile(tmp_path / "X.f32")
    y.astype(COLUMNS["y"]).tofile(tmp_path / "y.bin")
    np.zeros(len(y), COLUMNS["fwd_ret"]).tofile(tmp_path / "fwd_ret.bin")
    np.arange(len(y), dtype=COLUMNS["pos"]).tofile(tmp_path / "pos.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"rows": len(y)}))
    names = tuple(f"f{i}" for i in range(X.shape[1]))
    rule = SampleRule((), names, dt.date(2024, 1, 2), dt.date(2024, 1, 2), 1, 390)
    return SampleFile(tmp_path, len(y), rule)


def test_permutation_importance_finds_the_feature_the_labels_depend_on(tmp_path):
    """y depends on f1 only: shuffling f1 raises the validation log loss, the others do not."""
    rng = np.random.default_rng(0)
    n = 6000
    X = rng.normal(size=(n, 4))
    y = (X[:, 1] + 0.5 * rng.normal(size=n) > 0).astype(np.float32)
    data = FoldData(
        _sample_file(tmp_path, X, y),
        y,
        [EarlyStopFold(np.arange(0, 3000), np.arange(3000, 4000), np.arange(4000, n))],
        overlap=1.0,
    )
    cfg = load_config(1, overrides=["synthetic.signal_strength=1.0", "model.n_estimators=40"])
    hp = {"max_depth": 3, "learning_rate": 0.2, "subsample": 1.0, "colsample_bytree": 1.0,
          "min_child_weight": 1.0, "reg_alpha": 0.0, "reg_lambda": 1.0}  # fmt: skip
    full = data.fit(hp, [0, 1, 2, 3], 40, cfg, nthread=1, keep=True)
    assert isinstance(full.boosters[0], xgb.Booster) and full.log_loss < 0.5
    ranked = data.permutation_importance(full, seed=0)
    assert ranked[0]["feature"] == "f1" and ranked[0]["importance"] > 0.3
    assert all(abs(r["importance"]) < 0.02 for r in ranked[1:])
    assert ranked[0]["se"] < ranked[0]["importance"] / 10
    # the feature alone does as well as all four: within one SE of the full set
    alone = data.fit(hp, [1], 40, cfg, nthread=1)
    assert within_one_se(alone.log_loss, full.log_loss, full.se)
    without = data.fit(hp, [0, 2, 3], 40, cfg, nthread=1)
    assert not within_one_se(without.log_loss, full.log_loss, full.se)
    assert isinstance(alone, CvFit) and len(alone.losses) == 2000


def _metrics(accuracy, accuracy_se, sharpe, sharpe_se, features, verdict, checks=()):
    return {
        "oos": {"accuracy": accuracy, "accuracy_se": accuracy_se},
        "backtest": {"sharpe": sharpe, "sharpe_se": sharpe_se},
        "features": {"count": features},
        "decision": {"verdict": verdict, "checks": list(checks)},
    }


def test_comparison_says_whether_the_optimized_run_recovered():
    origin = {
        "run_id": "crippled",
        "overlay": {"features": {"include": ["a", "b"]}},
        "metrics": {"accuracy": 0.50, "accuracy_se": 0.004, "sharpe": 0.2, "sharpe_se": 1.0,
                    "features": 2, "verdict": "optimize"},
    }  # fmt: skip
    got = comparison(origin, _metrics(0.54, 0.004, 3.0, 1.0, 9, "advance"))
    assert got["recovered"] and got["verdict_before"] == "optimize"
    assert got["compare"]["accuracy"]["change"] == pytest.approx(0.04)
    assert got["compare"]["accuracy"]["se"] == pytest.approx(0.004 * np.sqrt(2))
    assert got["summary"] == (
        "optimized from crippled: OOS accuracy 0.5000 -> 0.5400 (+0.0400, SE 0.0057), OOS "
        "sharpe 0.20 -> 3.00 (+2.80, SE 1.41), features 2 -> 9: recovered"
    )
    still = comparison(origin, _metrics(0.51, 0.004, 0.5, 1.0, 5, "optimize"))
    assert not still["recovered"] and "its verdict is still optimize" in still["summary"]
    worse = comparison(origin, _metrics(0.49, 0.004, 0.1, 1.0, 5, "hold"))
    assert not worse["recovered"] and "accuracy fell by more than 1 SE" in worse["summary"]
