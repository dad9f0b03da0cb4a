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
    skill=0.03,
    skill_se=0.006,
    naive_accuracy=0.52,
    naive_direction="up",
    oos_effective_samples=15_000.0,
    trades=5_000,
    oos_sessions=120,
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


def test_advance_needs_every_lower_bound_to_clear_its_threshold():
    d = _decide(overfitting=DECISIVE)
    assert d["verdict"] == "advance"
    lead = d["reasons"][0]
    assert (
        "OOS accuracy 0.5500 (SE 0.0040): lower bound 0.5500 - 1.645 x 0.0040 = 0.5434 > 0.52"
        in lead
    )
    assert "Sharpe 2.000 (SE 0.500): lower bound 2.000 - 1.645 x 0.500 = 1.177 > 1" in lead
    assert (
        "skill over the naive predictor (always up, the training majority: accuracy 0.5200) "
        in lead
    )
    assert "deflated Sharpe 0.990 >= 0.95" in lead
    acc = _check(d, "OOS accuracy")
    assert acc["bound"] == pytest.approx(0.55 - 1.645 * 0.004) and acc["threshold"] == 0.52
    assert _decide(dsr=0.6)["verdict"] == "hold"
    assert _decide(dsr=None)["verdict"] == "hold"
    assert _decide(oos_accuracy=0.52)["verdict"] == "hold"
    assert _decide(sharpe=0.9)["verdict"] == "hold"
    d = _decide(sharpe=None)  # fewer than two days: no Sharpe
    assert d["verdict"] == "hold" and "Sharpe n/a" in d["reasons"][0]
    assert _decide(skill=None)["verdict"] == "hold"  # no naive baseline: no advance


def test_a_point_estimate_above_the_threshold_is_not_enough_the_bound_must_clear_it():
    """Sharpe 1.3 > 1 passes the seed's literal rule; with SE 0.5 its bound 0.478 does not."""
    d = _decide(sharpe=1.3, sharpe_se=0.5)
    assert d["verdict"] == "hold"
    lead = d["reasons"][0]
    assert lead.startswith("hold: not enough evidence: Sharpe 1.300 (SE 0.500): lower bound")
    assert "= 0.478 <= 1" in lead
    # power: the SE shrinks as 1/sqrt(sessions): 120 x (1.645 x 0.5 / 0.3)^2 = 902.0 sessions
    assert "at this Sharpe, about 903 OOS sessions (now 120) would clear it" in lead
    assert d["summary"] == "hold: not enough evidence (Sharpe (daily, annualized))"  # tracker
    seed = _check(d, "seed rule: Sharpe > 1 (point estimate)")
    assert seed["effect"] == "note" and seed["fired"]  # shown: the literal rule passes
    assert (
        "seed rule on the point estimate (shown, not applied): Sharpe 1.300 > 1: pass"
        in (seed["line"])
    )
    # the passing gates are still listed after the lead, each once
    assert sum("OOS accuracy 0.5500 (SE 0.0040): lower bound" in r for r in d["reasons"]) == 1


def test_real_goog_daily_holds_naming_the_naive_predictor_and_the_bound():
    """Issue 26's case: OOS accuracy 0.6347 (SE 0.1133) on 271 labels that went up 68.6% of the
    time, 19 trades, Sharpe 1.89 (SE 1.03): it advanced on point estimates."""
    d = _decide(
        oos_accuracy=0.6347, oos_accuracy_se=0.1133, sharpe=1.89, sharpe_se=1.03, dsr=0.96,
        skill=0.6347 - 0.6863, skill_se=0.07, naive_accuracy=0.6863, trades=19,
        oos_effective_samples=271 / 15, oos_sessions=285,
    )  # fmt: skip
    assert d["verdict"] == "hold"
    lead = d["reasons"][0]
    assert "skill over the naive predictor (always up, the training majority: accuracy 0.6863)" in (
        lead
    )
    assert "-0.0516 (SE 0.0700): lower bound" in lead and "<= 0" in lead
    assert "<= 0: the model does not beat the naive predictor; more data at this skill cannot " in (
        lead
    )
    assert (
        "OOS accuracy 0.6347 (SE 0.1133): lower bound 0.6347 - 1.645 x 0.1133 = 0.4483 <= 0.52"
        in lead
    )
    assert "19 trades < decision.min_trades 30: too few to judge a Sharpe" in lead
    assert "18 effective OOS samples" in lead and "< decision.min_effective_samples 100" in lead
    seeds = [c for c in d["checks"] if c["rule"].startswith("seed rule")]
    assert len(seeds) == 2 and all(c["fired"] for c in seeds)  # the old rule would advance


def test_minimum_evidence_holds_and_says_how_much_more_would_do():
    d = _decide(trades=12, oos_sessions=60)
    assert d["verdict"] == "hold"
    assert (
        "12 trades < decision.min_trades 30: too few to judge a Sharpe; at this rate about "
        in (d["reasons"][0])
    )
    assert "150 OOS sessions (now 60) would give it" in d["reasons"][0]
    d = _decide(oos_effective_samples=50.0)
    assert d["verdict"] == "hold" and "decision.min_effective_samples 100" in d["reasons"][0]
    loose = DecisionConfig(min_trades=10, min_effective_samples=40)
    kw = {**GOOD, "trades": 12, "oos_effective_samples": 50.0, "overfitting": DECISIVE}
    assert decide(loose, HW, **kw)["verdict"] == "advance"


def test_decision_z_sets_the_confidence_of_every_bound():
    """Accuracy 0.5293 (SE 0.0040), phase 1 as shipped: bound 0.5227 at z 1.645, 0.5190 at 2.33."""
    d = _decide(oos_accuracy=0.5293, oos_accuracy_se=0.004, overfitting=DECISIVE)
    assert d["verdict"] == "advance" and "= 0.5227 > 0.52" in d["reasons"][0]
    strict = DecisionConfig(z=2.33)
    d = decide(strict, HW, **{**GOOD, "oos_accuracy": 0.5293, "overfitting": DECISIVE})
    assert d["verdict"] == "hold" and "0.5293 - 2.33 x 0.0040 = 0.5200 <= 0.52" in d["reasons"][0]


def test_robustness_lines_inform_and_never_decide():
    rob = {
        "sharpe_at_cost": {"2": 0.8, "3": -0.4},
        "excess_return": -0.2159,
        "excess_return_se": 0.05,
        "benchmark_return": 0.2802,
    }
    d = _decide(overfitting=DECISIVE, robustness=rob)
    assert d["verdict"] == "advance"  # information, not rules
    two = _check(d, "Sharpe at 2x costs")
    assert two["effect"] == "note" and not two["fired"]
    assert "robustness (information): Sharpe at 2x the configured costs 0.800 <= 1" in two["line"]
    ex = _check(d, "excess return over buy-and-hold")
    assert (
        "excess return over equal-weight buy-and-hold -21.59% (SE 5.00% from the daily "
        in (ex["line"])
    )
    assert "buy-and-hold 28.02%): lower bound -29.82% <= 0" in ex["line"]
    assert ex["bound"] == pytest.approx(-0.2159 - 1.645 * 0.05)
    assert any(r.startswith("robustness (information): Sharpe at 3x") for r in d["reasons"])


def test_concentration_at_a_threshold_of_one_is_not_applied():
    from vpt_ray.validation.decision import apply_concentration

    d = _decide(overfitting=DECISIVE)
    out = apply_concentration(d, RULES_CFG, {"top_ticker": "GOOGL", "top_ticker_share": 0.947})
    assert out["verdict"] == "advance"
    assert out["reasons"][-1] == (
        "concentration: not applied (decision.max_top_ticker_share 100%); top ticker GOOGL makes "
        "94.7% of the net PnL (information)"
    )
    assert "<=" not in out["reasons"][-1]  # never shown as a pass


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
    # phase 5 backtests on the $10-20 universe, phase 4 on its training tickers: other stocks
    # and costs, so a lower Sharpe there is not a regression and the rule is not applied
    p4 = {**prev, "phase": 4, "accuracy": 0.5340, "sharpe": 20.26, "sharpe_se": 1.74}
    d = _decide(sharpe=8.83, sharpe_se=1.5, previous=p4, backtest_on="the $10-20 universe")
    assert d["verdict"] != "optimize"
    note = _check(d, "vs previous phase")
    assert note["effect"] == "note" and not note["fired"]
    assert (
        "not compared (this run is backtested on the $10-20 universe, phase 4 on " in (note["line"])
    )
    # a later phase 5 run against an earlier phase 5 row would compare (same universe)
    same = {**p4, "backtest_on": "the $10-20 universe"}
    d = _decide(sharpe=8.83, sharpe_se=1.5, previous=same, backtest_on="the $10-20 universe")
    assert d["verdict"] == "optimize"


def test_every_statistical_line_shows_figure_se_and_threshold():
    prev = {"phase": 1, "run_id": "r1", "accuracy": 0.55, "accuracy_se": 0.004, "sharpe": 2.0}
    d = _decide(overfitting=DECISIVE, previous=prev)
    for c in d["checks"]:
        if c["rule"] in ("overfitting", "peak memory (GB)", "deflated Sharpe (probability)"):
            continue  # a summary; a measurement; a probability
        if c["effect"] == "note" or c["rule"].startswith("minimum evidence"):
            continue  # the seed's literal rule on point estimates; counts
        if c["effect"] == "advance":
            assert "lower bound" in c["line"] and c["bound"] is not None, c
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
