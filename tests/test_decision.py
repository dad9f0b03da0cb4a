"""Decision rules: each verdict, the rule that fired and its figures."""

from __future__ import annotations

from vpt_ray.config import DecisionConfig, HardwareConfig
from vpt_ray.decision import decide

RULES, HW = DecisionConfig(), HardwareConfig()
GOOD = dict(
    oos_accuracy=0.55, sharpe=2.0, train_val_gap=0.01, peak_memory_gb=2.0, pbo=0.1, dsr=0.99
)


def test_advance_needs_accuracy_sharpe_and_deflated_sharpe():
    d = decide(RULES, HW, **GOOD)
    assert d["verdict"] == "advance"
    assert "0.5500 > 0.52" in d["reasons"][0] and "deflated Sharpe 0.990" in d["reasons"][0]
    assert decide(RULES, HW, **{**GOOD, "dsr": 0.6})["verdict"] == "hold"
    assert decide(RULES, HW, **{**GOOD, "dsr": None})["verdict"] == "hold"
    assert decide(RULES, HW, **{**GOOD, "oos_accuracy": 0.52})["verdict"] == "hold"
    assert decide(RULES, HW, **{**GOOD, "sharpe": 0.9})["verdict"] == "hold"
    d = decide(RULES, HW, **{**GOOD, "sharpe": None})  # fewer than two days: no Sharpe
    assert d["verdict"] == "hold" and "Sharpe n/a" in d["reasons"][0]


def test_stop_rules_win():
    d = decide(RULES, HW, **{**GOOD, "peak_memory_gb": 33.0})
    assert d["verdict"] == "stop" and "peak memory 33.00 GB > limit 32 GB" in d["reasons"][0]
    d = decide(RULES, HW, **{**GOOD, "train_val_gap": 0.2})
    assert d["verdict"] == "stop" and "gap 0.2000 > 0.05" in d["reasons"][0]
    d = decide(RULES, HW, **{**GOOD, "pbo": 0.7})
    assert d["verdict"] == "stop" and "probability of backtest overfitting 0.700" in d["reasons"][0]


def test_degradation_against_previous_phase_optimizes():
    prev = {"phase": 1, "run_id": "r1", "accuracy": 0.56, "sharpe": 1.5}
    d = decide(RULES, HW, **GOOD, previous=prev)
    assert d["verdict"] == "optimize"
    assert "OOS accuracy 0.5500 fell below phase 1's 0.5600" in d["reasons"][0]
    better = {**prev, "accuracy": 0.54}
    assert decide(RULES, HW, **GOOD, previous=better)["verdict"] == "advance"
