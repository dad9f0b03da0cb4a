"""The search's time budget from the phase's time limit, and ASHA's trials sized to fit it."""

from __future__ import annotations

import pytest

from vpt_ray.core.config import load_config
from vpt_ray.model import budget


def _cfg(*extra: str):
    return load_config(1, overrides=list(extra))


def test_fifo_fits_every_fold_and_asha_halves_the_trials_at_each_rung():
    assert budget.fold_fits(16, 4, _cfg()) == [16, 16, 16, 16]
    asha = _cfg("search.scheduler=asha", "search.grace_folds=1", "search.reduction_factor=2")
    # rungs after fold 1 and fold 2: 16 fit fold 1, 8 fold 2, 4 folds 3 and 4
    assert budget.fold_fits(16, 4, asha) == [16, 8, 4, 4]
    grace2 = _cfg("search.scheduler=asha", "search.grace_folds=2")
    assert budget.fold_fits(16, 4, grace2) == [16, 16, 8, 8]
    assert budget.fold_fits(2, 4, asha) == [2, 1, 1, 1]  # at least one trial goes the distance


def test_budget_is_the_time_limit_less_the_other_stages_and_trials_are_cut_to_fit():
    cfg = _cfg("hardware.max_hours=0.5", "search.num_samples=16", "search.cpus_per_trial=1")
    bars = 10_000_000
    folds = [1_000_000, 1_500_000, 2_000_000, 2_500_000]  # training + validation samples
    p = budget.plan(cfg, bars, folds, num_cpus=2)
    others = budget.FIXED_S + budget.OTHER_S_PER_M_BARS * 10
    assert p["source"] == "hardware.max_hours"
    assert p["other_stages_expected_s"] == pytest.approx(others)
    assert p["time_budget_s"] == pytest.approx(1800 - budget.SAFETY * others, abs=0.1)
    # FIFO: each trial fits 7 M samples x 40 us = 280 CPU s; 2 at a time on 2 CPUs
    per_trial = sum(folds) * budget.FIT_CPU_S_PER_SAMPLE
    assert p["trials_planned"] == int(p["time_budget_s"] // (per_trial / 2))
    assert p["trials_planned"] < 16 and p["search_expected_s"] <= p["time_budget_s"]
    new, _ = budget.resolve(cfg, bars, folds, 2)
    assert new.search.num_samples == p["trials_planned"]
    assert new.search.time_budget_s == p["time_budget_s"]
    # ASHA's rungs cost less than full trials: more of them fit the same budget
    asha = _cfg("hardware.max_hours=0.5", "search.num_samples=16", "search.scheduler=asha")
    assert budget.plan(asha, bars, folds, 2)["trials_planned"] > p["trials_planned"]


def test_an_explicit_budget_wins_and_a_small_phase_keeps_all_its_trials():
    p = budget.plan(_cfg("search.time_budget_s=120"), 500_000, [50_000] * 4, 2)
    assert p["source"] == "config" and p["time_budget_s"] == 120
    assert p["trials_planned"] == p["trials_requested"] == 8
