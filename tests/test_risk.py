"""The daily-return risk figures of the report (`vpt_ray.backtest.risk`) against independent
references: empyrical-reloaded (VaR, CVaR, alpha, beta, excess Sharpe, yearly aggregation) and the
moment formulas written out (skew, kurtosis)."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from vpt_ray.backtest.risk import (
    cagr_note,
    relative_stats,
    return_distribution,
    yearly_table,
)
from vpt_ray.backtest.stats import trading_stats
from vpt_ray.backtest.tearsheet import daily_returns


def _curves(n: int = 400, seed: int = 3) -> tuple[pd.Series, pd.Series, float]:
    """A strategy with beta ~0.4 to a benchmark, fat-tailed (Student-t), over ~1.6 years."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2023-03-01", periods=n)
    b = 0.0003 + 0.01 * rng.standard_t(4, n) / math.sqrt(2)
    r = 0.0008 + 0.4 * b + 0.006 * rng.standard_t(5, n) / math.sqrt(5 / 3)
    capital = 100_000.0
    return (
        pd.Series(capital * np.cumprod(1 + r), index=days),
        pd.Series(capital * np.cumprod(1 + b), index=days),
        capital,
    )


def test_distribution_matches_empyrical_and_the_moment_formulas():
    eq, _, capital = _curves()
    r = daily_returns(eq, capital)
    d = return_distribution(r)
    x = r.to_numpy()
    assert d["sessions"] == len(x)
    assert d["var"] == pytest.approx(empyrical.value_at_risk(x, cutoff=0.05), rel=1e-12)
    assert d["cvar"] == pytest.approx(empyrical.conditional_value_at_risk(x, cutoff=0.05))
    assert d["cvar"] < d["var"] < 0  # the mean of the worst days lies below their bound
    dev = x - x.mean()
    m2, m3, m4 = (np.mean(dev**k) for k in (2, 3, 4))
    assert d["skew"] == pytest.approx(m3 / m2**1.5, rel=1e-10)
    assert d["kurtosis"] == pytest.approx(m4 / m2**2 - 3.0, rel=1e-10)
    assert d["kurtosis"] > 0.5  # Student-t tails: the test data do have fat tails
    assert d["best"] == x.max() and d["worst"] == x.min()
    assert d["up_share"] == pytest.approx(np.mean(x > 0))
    assert d["std"] == pytest.approx(x.std(ddof=1))


def test_distribution_of_too_few_days_is_none_not_nan():
    d = return_distribution(pd.Series([0.01, -0.02]))
    assert d["skew"] is None and d["kurtosis"] is None and d["std"] is not None
    empty = return_distribution(pd.Series([], dtype=float))
    assert empty["sessions"] == 0 and all(empty[k] is None for k in ("var", "cvar", "mean"))
    with pytest.raises(ValueError, match="cutoff"):
        return_distribution(pd.Series([0.01]), cutoff=1.5)


def test_beta_alpha_and_information_ratio_match_empyrical():
    eq, bench, capital = _curves()
    r, b = daily_returns(eq, capital), daily_returns(bench, capital)
    s = relative_stats(r, b)
    alpha, beta = empyrical.alpha_beta(r, b)
    assert s["beta"] == pytest.approx(beta, rel=1e-10)
    assert 0.3 < s["beta"] < 0.5  # the curves were built with beta 0.4
    assert s["alpha"] == pytest.approx(alpha, rel=1e-10)
    ir = empyrical.excess_sharpe(r.to_numpy(), b.to_numpy()) * math.sqrt(252)
    assert s["information_ratio"] == pytest.approx(ir, rel=1e-10)
    assert s["tracking_error"] == pytest.approx((r - b).std(ddof=1) * math.sqrt(252))
    assert s["correlation"] == pytest.approx(np.corrcoef(r, b)[0, 1])
    # sessions only one side has are left out, not filled
    s2 = relative_stats(r, b.iloc[10:])
    assert s2["sessions"] == len(r) - 10
    assert s2["beta"] == pytest.approx(empyrical.beta(r.iloc[10:], b.iloc[10:]), rel=1e-10)


def test_a_flat_benchmark_has_no_beta():
    eq, _, capital = _curves(50)
    r = daily_returns(eq, capital)
    s = relative_stats(r, pd.Series(0.0, index=r.index))
    assert s["beta"] is None and s["alpha"] is None and s["information_ratio"] is not None


def test_yearly_table_compounds_to_the_total_and_matches_empyrical():
    eq, bench, capital = _curves()
    t = yearly_table(eq, capital, bench).set_index("year")
    r = daily_returns(eq, capital)
    ref = empyrical.aggregate_returns(r, "yearly")
    assert list(t.index) == list(ref.index) == [2023, 2024]
    assert t["return"].to_numpy() == pytest.approx(ref.to_numpy(), rel=1e-10)
    assert np.prod(1 + t["return"]) - 1 == pytest.approx(eq.iloc[-1] / capital - 1, rel=1e-10)
    assert int(t["sessions"].sum()) == len(eq)
    rb = daily_returns(bench, capital)
    ref_b = empyrical.aggregate_returns(rb, "yearly")
    assert t["benchmark"].to_numpy() == pytest.approx(ref_b.to_numpy(), rel=1e-10)
    assert (t["excess"] == t["return"] - t["benchmark"]).all()
    # each year's Sharpe and drawdown are trading_stats' on that year, from its opening equity
    y2 = eq[eq.index.year == 2024]
    opening = float(eq[eq.index.year == 2023].iloc[-1])
    none = pd.DataFrame({"pnl": [], "return": [], "commission": []})
    ref_s = trading_stats(y2, none, initial_equity=opening)
    assert t.loc[2024, "sharpe"] == pytest.approx(ref_s["sharpe"], rel=1e-10)
    assert t.loc[2024, "max_drawdown"] == pytest.approx(ref_s["max_drawdown"], rel=1e-10)


def test_cagr_from_less_than_a_year_carries_a_note():
    assert "124 sessions" in cagr_note(124) and "extrapolation" in cagr_note(124)
    assert cagr_note(252) is None and cagr_note(None) is None
