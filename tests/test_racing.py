"""The search's statistical race (`search.scheduler: race`) and its trial cache.

The race's rules are checked on hand-made per-fold losses (pure, no Ray): the paired t-test
against scipy's, a clearly worse trial stopped after its grace folds, a flat landscape settling
once enough trials tie, and a clearly better configuration never settling it early. Then one real
raced search on the tiny matrix of `test_search_scaling` (session Ray), and a second search on the
same samples that takes every fold fit from the trial cache and finds the same best trial.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.model.racing import Race, compare
from vpt_ray.model.search import run_search
from vpt_ray.model.search_result import COMPLETED, STOPPED_BY_RACE, STOPPED_EARLY
from vpt_ray.pipeline import stages


def test_compare_is_the_paired_one_sided_t_test():
    rng = np.random.default_rng(3)
    best = list(0.69 + rng.normal(0, 0.004, 4))
    trial = [b + 0.002 + e for b, e in zip(best, rng.normal(0, 0.001, 4), strict=True)]
    c = compare(trial, best, alpha=0.05)
    t, p_two = stats.ttest_rel(trial, best)
    assert c.folds == 4
    assert c.mean_diff / c.se == pytest.approx(t)
    assert c.t_crit == pytest.approx(stats.t.ppf(0.95, 3))
    assert c.worse == (t > 0 and p_two / 2 < 0.05)
    assert not compare(trial[:1], best, 0.05).worse  # one fold: no SE, no verdict


def test_a_clearly_worse_trial_is_stopped_after_its_grace_folds_and_not_before():
    race = Race(n_folds=4, alpha=0.05, min_trials=3, grace_folds=2)
    for f in (0.70, 0.69, 0.68, 0.67):
        race.record("best", f)
    race.record("bad", 0.72)
    assert race.verdict("bad") is None  # one fold: within its grace
    race.record("bad", 0.711)  # +0.020, +0.021: consistently worse
    why = race.verdict("bad")
    assert why is not None and "worse than the best trial on 2 folds" in why
    assert "bad" in race.stopped
    race.record("unsure", 0.72)
    race.record("unsure", 0.69)  # +0.02, then level: the two folds disagree
    race.record("unsure", 0.69)  # +0.01: still not significant at 3 folds
    assert race.verdict("unsure") is None
    assert race.verdict("best") is None  # the best is never raced against itself


def test_a_flat_landscape_settles_once_enough_trials_tie():
    level = np.array([0.70, 0.69, 0.68, 0.67])  # the folds differ; the trials barely do
    wiggle = np.array([1.0, -1.0, 1.0, -1.0]) * 1e-4  # fold to fold, no direction
    race = Race(n_folds=4, alpha=0.05, min_trials=4, grace_folds=2)
    for i in range(3):
        for f in level + (i + 1) * wiggle + i * 1e-5:
            race.record(f"t{i}", f)
    assert race.settle() is None  # 3 ties < 4
    for f in level + 0.01 + wiggle:  # a clearly worse trial does not count as a tie
        race.record("worse", f)
    assert race.settle() is None
    for f in level - 2 * wiggle:
        race.record("t3", f)
    why = race.settle()
    assert why is not None and why.startswith("4 of the 5 trials")
    assert race.settle() == why  # settled once, for good


def test_a_consistent_difference_below_one_scores_noise_is_a_tie():
    """Phase 4's trials differed by 3e-5 to 9e-5 in log loss, consistently enough for the paired
    test, while one score's SE (the folds' sampling noise) was ~5e-5: such trials cannot be told
    apart by any score and count as ties; a difference of several SEs does not."""
    level = np.array([0.68981, 0.68941, 0.68969, 0.68949])
    race = Race(n_folds=4, alpha=0.05, min_trials=4, grace_folds=2)
    fold_se = 1e-4  # each fold's; the mean over 4 folds has SE 5e-5
    for f in level:
        race.record("best", f, fold_se)
    for i, off in enumerate((3e-5, 4e-5, 4.5e-5)):
        for f in level + off + np.array([1e-6, -1e-6, 1e-6, -1e-6]):
            race.record(f"near{i}", f, fold_se)
    assert compare(race.losses["near0"], race.losses["best"], 0.05).worse  # real, but tiny
    assert race.score_se("best") == pytest.approx(5e-5)
    for f in level + 4e-4:  # eight SEs: told apart
        race.record("far", f, fold_se)
    assert sorted(race.ties()) == ["best", "near0", "near1", "near2"]
    why = race.settle()
    assert why is not None and "within the best score's SE 0.00005" in why
    no_se = Race(n_folds=4, alpha=0.05, min_trials=2, grace_folds=2)  # unknown SEs: the test only
    for name, off in (("best", 0.0), ("near", 3e-5)):
        for f in level + off + np.array([1e-6, -1e-6, 1e-6, -1e-6]):
            no_se.record(name, f)
    assert no_se.ties() == ["best"]


def test_one_clearly_better_configuration_keeps_the_search_going():
    level = np.array([0.70, 0.69, 0.68, 0.67])
    race = Race(n_folds=4, alpha=0.05, min_trials=2, grace_folds=2)
    for f in level - 0.01:
        race.record("good", f)
    for i, off in enumerate((0.0, 0.0001, -0.0002)):
        for f in level + off + np.array([0.0, 0.0003, -0.0002, 0.0001]):
            race.record(f"flat{i}", f)
    assert race.best() == "good"
    assert race.settle() is None  # nothing ties with the best: keep sampling


FAST = ("cv.n_splits=4", "model.n_estimators=40", "model.early_stopping_rounds=10")


@pytest.fixture(scope="module")
def matrix(ray_session, tmp_path_factory):
    ws = tmp_path_factory.mktemp("racing")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    cfg = load_config(1, overrides=tiny_overrides(ws, *FAST))
    store = stages.build_features(cfg, stages.load_data(cfg), ws / "features")
    m, folds = stages.make_folds(cfg, store, samples_dir=ws / "samples")
    return ws, m, folds


def test_a_raced_search_and_a_second_search_served_by_the_trial_cache(matrix, tmp_path):
    """A race over 12 trials, one at a time, with `race_min_trials` 3: it stops trials that are
    worse than the best, or settles, and says which; then the same race again on the same
    samples takes every fold fit from the trial cache (no XGBoost fit) and ends the same way."""
    ws, m, folds = matrix
    cfg = load_config(
        1,
        overrides=tiny_overrides(
            ws, *FAST, "search.scheduler=race", "search.num_samples=12",
            "search.race_min_trials=3", "search.cpus_per_trial=2",
        ),
    )  # fmt: skip
    cache = (str(tmp_path / "trials"), "samples-key")
    first = run_search(cfg, m, folds, tmp_path / "a", 2, trial_cache=cache)
    info, t = first.info, first.trials

    assert info["scheduler"] == "race" and info["race_alpha"] == 0.05
    assert set(t["status"]) <= {COMPLETED, STOPPED_EARLY, STOPPED_BY_RACE}
    assert (t["status"] == COMPLETED).sum() == info["trials_completed"] >= 1
    # something was saved by racing: trials stopped early, or the race settled before the end
    assert info["trials_stopped_early"] > 0 or info["race_settled"] is not None
    assert info["fold_fits"] < 12 * len(folds)
    if info["race_settled"] is not None:
        assert info["ended_by"] == "race" and "cannot be told apart" in info["race_settled"]
        assert info["trials_completed"] >= 3
    stopped = t[t["status"] == STOPPED_EARLY]
    assert (stopped["folds_fitted"] >= 2).all()  # never before the grace folds
    assert info["fold_fits_from_cache"] == 0
    assert len(list((tmp_path / "trials").glob("*.json"))) == info["fold_fits"]

    second = run_search(cfg, m, folds, tmp_path / "b", 2, trial_cache=cache)
    assert second.info["fold_fits_from_cache"] == second.info["fold_fits"] > 0
    assert second.best_params == first.best_params
    assert second.best["val_log_loss"] == pytest.approx(first.best["val_log_loss"])
    assert sum(second.trials["cpu_time_s"]) < sum(first.trials["cpu_time_s"])
