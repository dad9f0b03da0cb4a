"""The baselines, on hand-made labels and plans (no Ray): the naive predictor's figures and
their SEs, the CV aggregation, the excess over buy-and-hold, the same plans at k x costs, and
the drift-only synthetic market."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from vpt_ray.model.metrics import majority_direction, versus_naive
from vpt_ray.validation.baseline import cv_naive_figures, excess_over_benchmark, naive_figures


def test_the_naive_predictor_is_the_training_majority():
    assert majority_direction(np.array([1, 1, 0, np.nan])) == 1
    assert majority_direction(np.array([0, 0, 1])) == 0
    assert majority_direction(np.array([0, 1])) == 1  # a tie goes to up
    with pytest.raises(ValueError, match="no training labels"):
        majority_direction(np.array([np.nan]))


def test_naive_figures_by_hand():
    # 10 labels, 7 up; the model says up on 8, right on 7 of them... by construction:
    y = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=float)
    p = np.array([0.6, 0.6, 0.6, 0.6, 0.6, 0.4, 0.4, 0.6, 0.4, 0.4])
    f = naive_figures(y, p, majority=1, overlap=0.5)
    assert f["accuracy"] == pytest.approx(0.7)  # 5 ups right + 2 downs right
    assert f["naive_direction"] == "up" and f["naive_accuracy"] == pytest.approx(0.7)
    assert f["skill"] == pytest.approx(0.0)
    # d = +1 on the 2 downs called right, -1 on the 2 ups called down, 0 elsewhere
    d = np.array([0, 0, 0, 0, 0, -1, -1, 0, 1, 1], dtype=float)
    assert f["skill_se"] == pytest.approx(d.std(ddof=1) / math.sqrt(5))  # n_eff = 10 x 0.5
    assert f["effective_samples"] == 5.0
    assert f["accuracy_se"] == pytest.approx(math.sqrt(0.7 * 0.3 / 5))
    # balanced accuracy: recall of ups 5/7, of downs 2/3
    assert f["balanced_accuracy"] == pytest.approx(0.5 * (5 / 7 + 2 / 3))
    se = 0.5 * math.sqrt((5 / 7) * (2 / 7) / 3.5 + (2 / 3) * (1 / 3) / 1.5)
    assert f["balanced_accuracy_se"] == pytest.approx(se)
    assert f["up_rate"] == pytest.approx(0.7)


def test_a_model_equal_to_the_naive_predictor_has_no_skill_and_no_spread():
    y = np.array([1, 0, 1, 1, 0, 1], dtype=float)
    f = naive_figures(y, np.full(6, 0.9), majority=1, overlap=1.0)
    assert f["skill"] == 0.0 and f["skill_se"] == 0.0  # lower bound 0: not above 0
    assert f["accuracy"] == f["naive_accuracy"] == pytest.approx(4 / 6)
    assert f["balanced_accuracy"] == pytest.approx(0.5)  # all of one class right, none of other
    with pytest.raises(ValueError, match="overlap"):
        naive_figures(y, np.full(6, 0.9), majority=1, overlap=0.0)


def test_paired_skill_se_is_far_below_the_two_accuracies_combined():
    """Both accuracies are scored on the same labels: their difference's SE is the paired one."""
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.55).astype(float)
    p = np.where(rng.random(20_000) < 0.9, 0.6, 0.4)  # the majority 90% of the time
    f = naive_figures(y, p, majority=1, overlap=1 / 15)
    unpaired = math.hypot(f["accuracy_se"], f["naive_accuracy_se"])
    assert f["skill_se"] < 0.7 * unpaired
    assert abs(f["skill"]) < 3 * f["skill_se"]  # no skill in random calls


def test_cv_figures_average_the_folds_and_combine_their_ses():
    rng = np.random.default_rng(1)
    folds = []
    for k in range(3):
        y = (rng.random(3000) < 0.5 + 0.02 * k).astype(float)
        p = np.where(rng.random(3000) < 0.7, 0.6, 0.4)
        rec = {f"val_{key}": v for key, v in versus_naive(y, p, 1).items()}
        folds.append({"val_samples": 3000, **rec})
    cv = cv_naive_figures(folds, overlap=1 / 3)
    assert cv["skill"] == pytest.approx(np.mean([f["val_skill"] for f in folds]))
    per_fold = [f["val_skill_sd"] / math.sqrt(1000) for f in folds]
    assert cv["skill_se"] == pytest.approx(math.sqrt(sum(s * s for s in per_fold)) / 3)
    assert cv["naive_directions"] == ["up", "up", "up"]
    assert cv_naive_figures([{"val_samples": 10}], 1.0) == {}  # an older search: no figures


def test_excess_over_buy_and_hold_and_its_se():
    days = pd.date_range("2024-01-02", periods=5, freq="B")
    strat = pd.Series([101.0, 102.0, 101.0, 103.0, 104.0], index=days)
    bench = pd.Series([100.5, 101.0, 102.0, 102.5, 103.0], index=days)
    out = excess_over_benchmark(strat, bench, 100.0)
    assert out["excess_return"] == pytest.approx(0.04 - 0.03)
    rs = np.array([101, 102, 101, 103, 104]) / np.array([100, 101, 102, 101, 103]) - 1
    rb = np.array([100.5, 101, 102, 102.5, 103]) / np.array([100, 100.5, 101, 102, 102.5]) - 1
    assert out["excess_return_se"] == pytest.approx(np.std(rs - rb, ddof=1) * math.sqrt(5))
    assert excess_over_benchmark(strat.iloc[:0], bench, 100.0)["excess_return"] is None


def test_the_same_plans_at_k_times_costs():
    """Costs x 1 reproduce the pool exactly; x 2 doubles every fill's offset and commission;
    x 0 is the gross result."""
    from vpt_ray.backtest.cost_stress import cost_stress, with_costs
    from vpt_ray.backtest.engine import SimSettings
    from vpt_ray.backtest.plans import plan_trades
    from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
    from vpt_ray.backtest.portfolio_stats import cost_section, portfolio_stats

    rng = np.random.default_rng(3)
    ts = pd.date_range("2024-03-04 14:30", periods=390, freq="1min", tz="UTC")
    close = 50 * np.exp(np.cumsum(rng.normal(0, 1e-3, 390)))
    bars = pd.DataFrame({"timestamp": ts, "open": np.r_[50.0, close[:-1]], "high": close * 1.001,
                         "low": close * 0.999, "close": close, "volume": 1e6})  # fmt: skip
    proba = rng.uniform(0.4, 0.6, 390)
    plan = plan_trades(bars, proba, SimSettings(hold_bars=5, slippage_bps=2.0), 60)
    plans, settings = {"AAA": plan}, PortfolioSettings(max_ticker_weight=1.0)
    base = simulate_portfolio(plans, settings)
    same = simulate_portfolio(*with_costs(plans, settings, 1.0))
    assert np.allclose(base.bar_equity, same.bar_equity, rtol=0, atol=1e-9)
    double_plans, double = with_costs(plans, settings, 2.0)
    offset = plan.entry_price - plan.entry_ref
    assert np.allclose(double_plans["AAA"].entry_price - plan.entry_ref, 2 * offset)
    assert double.min_commission == 2 * settings.min_commission
    gross = simulate_portfolio(*with_costs(plans, settings, 0.0))
    assert cost_section(gross)["total"] == pytest.approx(0.0, abs=1e-9)
    out = cost_stress(plans, settings)
    assert set(out) == {"2", "3"} and out["2"]["trades"] == len(base.trades)
    s1 = portfolio_stats(base)["total_return"]
    assert s1 > out["2"]["total_return"] > out["3"]["total_return"]  # costs only subtract


def test_drift_only_market_trends_and_keeps_old_files_valid():
    from vpt_ray.data.synthetic import SyntheticParams, generate_ticker

    flat = SyntheticParams(seed=7, signal_strength=0.0, missing_minute_rate=0.0)
    trend = SyntheticParams(seed=7, signal_strength=0.0, missing_minute_rate=0.0, drift=3.0)
    assert "drift" not in flat.to_json() and '"drift": 3.0' in trend.to_json()
    start, end = dt.date(2024, 1, 2), dt.date(2024, 6, 28)
    a, b = generate_ticker(flat, "AAA", start, end), generate_ticker(trend, "AAA", start, end)
    up = lambda bars: float(np.mean(bars["close"].shift(-15).to_numpy()[:-15]  # noqa: E731
                                    > bars["close"].to_numpy()[:-15]))  # fmt: skip
    assert up(b) > up(a) + 0.02  # 15-minute windows go up more often
    # the trend is intraday: each session gains drift / 252 open to close on average, and the
    # overnight pull gives it back (prices stay in range, any date range is a slice)
    day = b["timestamp"].dt.tz_convert("America/New_York").dt.date
    sessions = b.groupby(day).agg(first=("open", "first"), last=("close", "last"))
    intraday = np.log(sessions["last"] / sessions["first"]).mean()
    assert intraday == pytest.approx(3.0 / 252, abs=0.006)
    overnight = np.log(sessions["first"].shift(-1) / sessions["last"]).mean()
    assert overnight == pytest.approx(-3.0 / 252, abs=0.006)
    assert 1.5 < b["close"].iloc[-1] / a["close"].iloc[-1] < 6  # ~exp(3.0 / 252 / 0.01) = 3.3
