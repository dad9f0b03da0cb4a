"""Decision rules on hand-made evidence: each verdict, the rule that fired, and every line showing
its figure, standard error and threshold. The overfitting stop needs a sign (a significant gap,
or a decisive PBO) confirmed out of sample; "optimize" needs a drop beyond noise."""

from __future__ import annotations

import pytest

from vpt_ray.core.config import DecisionConfig, HardwareConfig
from vpt_ray.validation.decision import RULES, Check, decide, verdict

RULES_CFG, HW = DecisionConfig(), HardwareConfig()
GOOD = dict(
    oos_accuracy=0.55,
    oos_accuracy_se=0.004,
    sharpe=2.0,
    sharpe_se=0.5,
    train_val_gap=0.01,
    train_val_gap_se=0.004,
    cv_accuracy=0.552,
    cv_accuracy_se=0.003,
    peak_memory_gb=2.0,
    dsr=0.99,
)
# a decisive PBO: enough trials, told apart by more than one Sharpe's noise
DECISIVE = dict(
    pbo=0.2,
    n_trials_completed=12,
    trials_distinct=True,
    trial_sharpe_spread=0.3,
    trial_sharpe_se=0.1,
    selected_oos_rank=0.7,
    prob_oos_loss=0.1,
)


def _decide(**kw):
    return decide(RULES_CFG, HW, **{**GOOD, **kw})


def _check(d: dict, rule: str) -> dict:
    return next(c for c in d["checks"] if c["rule"] == rule)


def test_advance_needs_accuracy_sharpe_and_deflated_sharpe_and_shows_each_se():
    d = _decide(overfitting=DECISIVE)
    assert d["verdict"] == "advance"
    lead = d["reasons"][0]
    assert "OOS accuracy 0.5500 (SE 0.0040) > 0.52" in lead
    assert "Sharpe 2.000 (SE 0.500) > 1" in lead and "deflated Sharpe 0.990 >= 0.95" in lead
    assert _decide(dsr=0.6)["verdict"] == "hold"
    assert _decide(dsr=None)["verdict"] == "hold"
    assert _decide(oos_accuracy=0.52)["verdict"] == "hold"
    assert _decide(sharpe=0.9)["verdict"] == "hold"
    d = _decide(sharpe=None)  # fewer than two days: no Sharpe
    assert d["verdict"] == "hold" and "Sharpe n/a" in d["reasons"][0]


def test_memory_stop_wins_over_everything():
    prev = {"phase": 1, "run_id": "r1", "accuracy": 0.60, "accuracy_se": 0.004, "sharpe": 9.0}
    d = _decide(peak_memory_gb=33.0, previous=prev)
    assert d["verdict"] == "stop"
    assert d["reasons"][0].startswith("stop: peak memory 33.00 GB > limit 32 GB")


def test_a_significant_gap_alone_is_a_sign_not_a_stop():
    d = _decide(train_val_gap=0.12, train_val_gap_se=0.01)
    gap = _check(d, "train - validation accuracy gap")
    assert gap["fired"] and gap["figure"] == 0.12 and gap["se"] == 0.01 and gap["threshold"] == 0.05
    assert "gap 0.1200 (SE 0.0100) > 0.05 + 2 SE = 0.0700: a sign of overfitting" in gap["line"]
    assert d["verdict"] == "advance"  # OOS accuracy held up: the CV figure was honest
    assert any("not confirmed out of sample" in r for r in d["reasons"])


def test_gap_within_two_se_of_the_threshold_is_no_sign():
    d = _decide(train_val_gap=0.06, train_val_gap_se=0.01)  # 0.06 <= 0.05 + 2 x 0.01
    assert not _check(d, "train - validation accuracy gap")["fired"]


def test_gap_confirmed_by_cv_to_oos_degradation_stops():
    d = _decide(train_val_gap=0.12, train_val_gap_se=0.01, cv_accuracy=0.58, cv_accuracy_se=0.003)
    assert d["verdict"] == "stop"
    lead = d["reasons"][0]
    assert lead.startswith("stop: overfitting: train-validation accuracy gap 0.1200 (SE 0.0100)")
    assert "confirmed out of sample: CV accuracy 0.5800 (SE 0.0030) -> OOS accuracy 0.5500" in lead
    assert "drop 0.0300 > 2 SE of the difference (0.0100)" in lead


def test_pbo_from_a_handful_of_near_identical_trials_is_not_decisive():
    """Phase 3 as shipped: 3 completed trials, PBO 0.746, OOS accuracy = CV accuracy, gap 0.003."""
    over = {
        "pbo": 0.746,
        "n_trials_completed": 3,
        "trials_distinct": False,
        "trial_sharpe_spread": 0.004,
        "trial_sharpe_se": 0.05,
        "selected_oos_rank": 0.4,
        "prob_oos_loss": 0.0,
    }
    d = _decide(oos_accuracy=0.5433, cv_accuracy=0.5433, train_val_gap=0.003, overfitting=over)
    assert d["verdict"] == "advance"
    pbo = _check(d, "probability of backtest overfitting")
    assert not pbo["decisive"] and not pbo["fired"]
    assert "not decisive, 3 trials fitted every fold < decision.min_trials_for_pbo 8" in pbo["line"]
    assert "near-identical" in pbo["line"]
    # enough trials but still within noise of each other: not decisive either
    d = _decide(overfitting={**over, "n_trials_completed": 12, "pbo": 0.9, "prob_oos_loss": 0.9})
    assert (
        d["verdict"] == "advance"
        and not _check(d, "probability of backtest overfitting")["decisive"]
    )


def test_decisive_pbo_stops_only_when_the_selection_costs_out_of_sample():
    high = {**DECISIVE, "pbo": 0.7}
    d = _decide(overfitting=high)  # the selected config still ranks above median and wins
    assert d["verdict"] == "advance"
    assert _check(d, "probability of backtest overfitting")["fired"]  # a sign ...
    assert not _check(d, "overfitting")["fired"]  # ... not confirmed
    costly = {**high, "selected_oos_rank": 0.3, "prob_oos_loss": 0.8}
    d = _decide(overfitting=costly)
    assert d["verdict"] == "stop"
    assert "probability of backtest overfitting 0.700 > 0.5 (from 12 trials" in d["reasons"][0]
    assert "out-of-sample rank 0.30 (< 0.5" in d["reasons"][0]
    assert "lose out of sample in 80% of splits (> 50%)" in d["reasons"][0]
    # the same selection record without a PBO sign: no stop
    assert _decide(overfitting={**costly, "pbo": 0.3})["verdict"] == "advance"


def test_optimize_only_on_a_drop_beyond_noise():
    prev = {"phase": 1, "run_id": "r1", "accuracy": 0.5395, "accuracy_se": 0.004, "sharpe": 2.0}
    d = _decide(oos_accuracy=0.5394, previous=prev)  # a drop of 0.0001: noise
    assert d["verdict"] == "advance"
    line = _check(d, "OOS accuracy vs previous phase")["line"]
    assert "drop 0.0001 <= 1 SE of the difference (0.0057): within noise" in line
    d = _decide(oos_accuracy=0.53, previous=prev)
    assert d["verdict"] == "optimize"
    assert d["reasons"][0] == (
        "optimize: OOS accuracy 0.5300 (SE 0.0040) vs phase 1's 0.5395: drop 0.0095 > 1 SE of "
        "the difference (0.0057): degraded beyond noise"
    )
    # an old tracker row without its SE: this run's SE stands in for it, and the line says so
    d = _decide(oos_accuracy=0.53, previous={**prev, "accuracy_se": None})
    assert "taken equal to this run's" in d["reasons"][0]
    # no trade in this run: no Sharpe SE of its own, the previous run's stands in
    d = _decide(sharpe=0.0, sharpe_se=None, previous={**prev, "accuracy": 0.55, "sharpe_se": 0.5})
    assert d["verdict"] == "optimize" and "taken equal to the previous run's" in d["reasons"][0]
    assert "drop 2.00 > 1 SE of the difference (0.71)" in d["reasons"][0]
    # the Sharpe: its own SE
    d = _decide(sharpe=1.2, sharpe_se=0.5, previous={**prev, "accuracy": 0.55, "sharpe_se": 0.5})
    assert d["verdict"] == "optimize" and "Sharpe 1.20 (SE 0.50)" in d["reasons"][0]
    assert "drop 0.80 > 1 SE of the difference (0.71)" in d["reasons"][0]


def test_every_statistical_line_shows_figure_se_and_threshold():
    prev = {"phase": 1, "run_id": "r1", "accuracy": 0.55, "accuracy_se": 0.004, "sharpe": 2.0}
    d = _decide(overfitting=DECISIVE, previous=prev)
    for c in d["checks"]:
        if c["rule"] in ("overfitting", "peak memory (GB)", "deflated Sharpe (probability)"):
            continue  # a summary; a measurement; a probability
        if c["rule"] in ("probability of backtest overfitting", "selection out of sample"):
            assert "no SE" in c["line"] or "rank" in c["line"]
            continue
        assert "SE" in c["line"] and c["threshold"] is not None, c


def test_rules_are_pluggable_functions_of_the_evidence():
    """A new rule (e.g. issue 21's concentration) is one more function in RULES."""
    assert all(callable(r) for r in RULES)
    checks = [Check("extra", "stop", True, "concentration 0.9 > 0.5")]
    assert verdict(checks)["reasons"][0] == "stop: concentration 0.9 > 0.5"
    assert verdict([Check("gate", "advance", True, "ok")])["verdict"] == "advance"
    assert verdict([Check("gate", "advance", False, "no")])["verdict"] == "hold"


@pytest.mark.parametrize("verdict_name", ["optimize", "stop"])
def test_optimize_action_is_wanted_for_optimize_and_overfitting_stops(verdict_name):
    from vpt_ray.pipeline.optimize import wanted

    prev = {"phase": 1, "run_id": "r1", "accuracy": 0.60, "accuracy_se": 0.004, "sharpe": 2.0}
    if verdict_name == "optimize":
        d = _decide(oos_accuracy=0.53, previous=prev)
    else:
        d = _decide(train_val_gap=0.2, cv_accuracy=0.6)
    assert d["verdict"] == verdict_name and wanted(d)
    assert not wanted(_decide(peak_memory_gb=40.0))  # a memory stop: nothing to reduce
    assert not wanted(_decide())
