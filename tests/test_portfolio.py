"""The portfolio: one pool of capital, every ticker's planned trades sized on one clock.

Hand-computed cases per sizing rule on hand-made plans, agreement with the one-ticker engine when
the pool holds one ticker, causality (later bars never move earlier equity), the statistics that
come out of it (intraday drawdown, contribution, concentration, costs, the capital check), the
concentration rule of the decision, and the known-truth scaling test: on a market with a fixed
edge per ticker, more tickers must not lower the portfolio's Sharpe, and a market with no edge
never advances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_backtest_engine import random_market
from vpt_ray.backtest.engine import EXIT_HOLD, EXIT_SESSION, SimSettings, simulate
from vpt_ray.backtest.plans import TradePlan, plan_trades, trailing_vol
from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
from vpt_ray.backtest.portfolio_stats import (
    concentration,
    cost_check,
    cost_section,
    cost_warning,
    per_ticker_stats,
    portfolio_stats,
)
from vpt_ray.backtest.stats import trading_stats
from vpt_ray.core.config import DecisionConfig, HardwareConfig
from vpt_ray.validation.decision import apply_concentration, decide

FREE = dict(commission_per_share=0.0, min_commission=0.0)
T0 = pd.Timestamp("2024-01-02 09:30", tz="America/New_York").tz_convert("UTC").value
MINUTE = 60 * 10**9


def plan(closes: list[float], trades: list[tuple], minutes: list[int] | None = None) -> TradePlan:
    """A hand-made plan: bars one minute apart from 09:30 New York on 2024-01-02 (or at
    `minutes`), trades as (entry_bar, exit_bar, side, entry_price, exit_price, at_close[,
    max_shares])."""
    minutes = list(range(len(closes))) if minutes is None else minutes
    rows = [(*t, 1e12) if len(t) == 6 else t for t in trades]
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 7
    at_close = np.array(cols[5], bool)
    return TradePlan(
        timestamp=np.array([T0 + m * MINUTE for m in minutes], np.int64),
        close=np.array(closes, float),
        entry_bar=np.array(cols[0], np.int64),
        exit_bar=np.array(cols[1], np.int64),
        side=np.array(cols[2], np.int8),
        entry_price=np.array(cols[3], float),
        exit_price=np.array(cols[4], float),
        entry_ref=np.array(cols[3], float),
        exit_ref=np.array(cols[4], float),
        exit_at_close=at_close,
        exit_reason=np.where(at_close, EXIT_SESSION, EXIT_HOLD).astype(np.int8),
        max_shares=np.array(cols[6], float),
    )


def pool(**kw) -> PortfolioSettings:
    base = {"capital": 10_000.0, "max_ticker_weight": 0.5, "sizing": "equal", **FREE}
    return PortfolioSettings(**{**base, **kw})


# --- sizing rules, worked out by hand -------------------------------------------------------


def test_entries_are_sized_from_the_current_equity_with_equal_weight_across_open_positions():
    plans = {
        # A: long 10 -> out at 12 (bar 3's open); B: short 20 -> covered at 18 (bar 4's close)
        "A": plan([10, 10, 11, 12, 12], [(1, 3, 1, 10.0, 12.0, False)]),
        "B": plan([20, 20, 19, 19, 18], [(1, 4, -1, 20.0, 18.0, True)]),
        # C enters at bar 3's open, after A's exit: equity then is 10000 + 1000 (A) + 250 (B
        # marked at bar 2's close 19), two positions open after it -> weight 0.5 -> $5625
        "C": plan([50, 50, 50, 50, 51], [(3, 4, 1, 50.0, 51.0, True)]),
    }
    r = simulate_portfolio(plans, pool())
    t = r.trades.set_index("ticker")
    # bar 1: two entries, n_active 2 -> weight min(0.5, 1/2): $5000 each
    assert t.loc["A", "shares"] == 500 and t.loc["B", "shares"] == 250
    assert t.loc["C", "shares"] == 112  # floor(5625 / 50)
    assert t.loc["C", "weight"] == pytest.approx(112 * 50 / 11_250)
    assert list(t["pnl"]) == pytest.approx([1000.0, 500.0, 112.0])
    assert t.loc["A", "return"] == pytest.approx(1000 / 5000)
    # equity at each bar's close: marks at the tickers' closes
    assert list(r.bar_equity) == pytest.approx([10_000, 10_000, 10_750, 11_250, 11_612])
    assert r.daily_equity.iloc[-1] == pytest.approx(11_612)
    assert r.gross.iloc[1] == pytest.approx(1.0)  # $5000 long + $5000 short on $10000


def test_entries_of_one_step_share_the_room_left_under_the_gross_cap_and_open_ones_stay():
    plans = {
        "A": plan([10] * 4, [(1, 3, 1, 10.0, 10.0, True)]),  # alone: weight min(0.5, 1) = 0.5
        "B": plan([10] * 4, [(2, 3, 1, 10.0, 10.0, True)]),
        "C": plan([10] * 4, [(2, 3, 1, 10.0, 10.0, True)]),
    }
    r = simulate_portfolio(plans, pool())
    t = r.trades.set_index("ticker")
    assert t.loc["A", "shares"] == 500  # not resized when B and C come in
    # B and C: weight 1/3 each ($3333) but only $5000 of room under gross 1.0: $2500 each
    assert t.loc["B", "shares"] == 250 and t.loc["C", "shares"] == 250
    assert r.gross.max() == pytest.approx(1.0)


def test_volatility_sizing_gives_equal_risk_around_the_tickers_reference_vol():
    a = plan([10] * 3, [(1, 2, 1, 10.0, 10.0, True)])
    b = plan([20] * 3, [(1, 2, 1, 20.0, 20.0, True)])
    a.vol, b.vol = np.array([0.01]), np.array([0.04])  # reference: geometric mean 0.02
    r = simulate_portfolio({"A": a, "B": b}, pool(max_ticker_weight=0.8, sizing="volatility"))
    t = r.trades.set_index("ticker")
    # equal weight 0.5 each, scaled by 0.02 / vol: A 1.0 -> capped at 0.8, B 0.25; together
    # 1.05 of the equity for 1.0 of room: both scaled by 1 / 1.05
    assert t.loc["A", "shares"] == int(8000 / 1.05 / 10)
    assert t.loc["B", "shares"] == int(2500 / 1.05 / 20)
    # an unknown volatility (too few bars yet) keeps the equal weight
    a.vol = np.array([np.nan])
    r = simulate_portfolio({"A": a, "B": b}, pool(max_ticker_weight=0.8, sizing="volatility"))
    assert list(r.trades["shares"]) == [500, 250]  # B alone sets the reference: factor 1


def test_trailing_vol_uses_only_returns_up_to_each_bar():
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.001, 200)))
    v = trailing_vol(close, 50)
    assert np.isnan(v[:30]).all() and np.isfinite(v[30:]).all()
    r = np.diff(np.log(close))
    assert v[120] == pytest.approx(np.std(r[70:120], ddof=1))  # returns into bars 71..120
    changed = close.copy()
    changed[121:] *= 3.0
    assert trailing_vol(changed, 50)[120] == v[120]


def test_position_fraction_and_the_ticker_cap_scale_the_target_weight():
    plans = {"A": plan([10] * 3, [(1, 2, 1, 10.0, 10.0, True)])}
    assert simulate_portfolio(plans, pool()).trades["shares"].iloc[0] == 500
    assert simulate_portfolio(plans, pool(position_fraction=0.5)).trades["shares"][0] == 250
    lev = pool(max_ticker_weight=1.0, max_gross_exposure=2.0)
    assert simulate_portfolio(plans, lev).trades["shares"].iloc[0] == 1000  # min(1.0, 2/1)


def test_commission_minimum_volume_cap_and_a_skipped_trade_leave_the_next_one_alone():
    plans = {
        "A": plan(
            [10] * 6,
            [
                (1, 2, 1, 10.0, 11.0, True, 3.0),  # capped at 3 shares by the volume limit
                (3, 4, 1, 10.0, 11.0, True),
            ],
        )
    }
    r = simulate_portfolio(plans, pool(commission_per_share=0.01, min_commission=1.0))
    t = r.trades
    assert list(t["shares"]) == [3, 499]  # floor(min((5000.0 - 1) / 10, 5000 / 10.01))
    assert t["commission"].iloc[0] == pytest.approx(2.0)  # the minimum, twice
    assert t["commission"].iloc[1] == pytest.approx(2 * 4.99)
    assert t["pnl"].iloc[0] == pytest.approx(3 * 1.0 - 2.0)
    # a budget below one share skips the planned trade; the ticker's next trade still fills
    tiny = {"A": plan([10] * 6, [(1, 2, 1, 10.0, 11.0, True), (3, 4, 1, 1.0, 2.0, True)])}
    r = simulate_portfolio(tiny, pool(capital=20.0, min_commission=1.0))  # $10 budget
    assert list(r.trades["entry_bar"]) == [3] and r.skipped == {"A": 1}
    assert portfolio_stats(r)["trades_skipped"] == 1


def test_bars_of_tickers_on_different_minutes_share_one_clock():
    plans = {
        "A": plan([10, 11, 12], [(0, 2, 1, 10.0, 12.0, True)], minutes=[0, 2, 4]),
        "B": plan([5, 5, 5], [], minutes=[1, 2, 3]),
    }
    r = simulate_portfolio(plans, pool())
    assert len(r.bar_equity) == 5  # minutes 0..4
    # A marked at its own closes; in between it keeps its last mark
    assert list(r.bar_equity) == pytest.approx([10_000, 10_000, 10_500, 10_500, 11_000])


# --- agreement and causality --------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [dict(seed=1), dict(seed=2, half_spread=True,
                                                         exit_on_reversal=True)])  # fmt: skip
def test_one_ticker_with_the_whole_pool_is_the_one_ticker_engine(scenario):
    seed = scenario.pop("seed")
    bars = random_market(seed, n_days=4)
    rng = np.random.default_rng(seed)
    bars["volume"] = rng.uniform(1e5, 2e6, len(bars))
    proba = rng.uniform(0.4, 0.6, len(bars))
    s = SimSettings(capital=50_000.0, hold_bars=7, slippage_bps=1.0, max_volume_fraction=0.002,
                    **scenario)  # fmt: skip
    ref = simulate(bars, proba, s)
    whole = PortfolioSettings(capital=50_000.0, max_ticker_weight=1.0)
    r = simulate_portfolio({"X": plan_trades(bars, proba, s)}, whole)
    assert len(r.trades) == len(ref.trades) > 50
    np.testing.assert_allclose(r.bar_equity.to_numpy(), ref.equity.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(r.trades["pnl"], ref.trades["pnl"], rtol=1e-9, atol=1e-9)
    assert (r.trades["shares"].to_numpy() == ref.trades["shares"].to_numpy()).all()
    pd.testing.assert_series_equal(r.daily_equity, ref.daily_equity, check_freq=False)


def test_later_bars_of_any_ticker_never_move_earlier_portfolio_equity():
    s = SimSettings(hold_bars=5, max_volume_fraction=0.01)
    markets = {t: random_market(seed, n_days=2) for t, seed in (("A", 3), ("B", 4), ("C", 5))}
    probas = {t: np.random.default_rng(i).uniform(0.4, 0.6, len(b))
              for i, (t, b) in enumerate(markets.items())}  # fmt: skip
    base = simulate_portfolio({t: plan_trades(markets[t], probas[t], s) for t in markets}, pool())
    k = 500  # B's bars from k on become garbage, and so do its probabilities
    bad = markets["B"].copy()
    cols = ["open", "high", "low", "close"]
    bad.loc[k:, cols] = bad.loc[k:, cols] * np.random.default_rng(9).uniform(
        0.5, 2, (len(bad) - k, 1)
    )
    bad.loc[k:, "high"] = bad.loc[k:, cols].max(axis=1)
    bad.loc[k:, "low"] = bad.loc[k:, cols].min(axis=1)
    p_bad = probas["B"].copy()
    p_bad[k:] = np.random.default_rng(10).uniform(0, 1, len(p_bad) - k)
    plans = {t: plan_trades(markets[t], probas[t], s) for t in markets}
    plans["B"] = plan_trades(bad, p_bad, s)
    moved = simulate_portfolio(plans, pool())
    cut = moved.bar_equity.index.get_loc(bad["timestamp"].iloc[k])
    pd.testing.assert_series_equal(moved.bar_equity.iloc[:cut], base.bar_equity.iloc[:cut])
    assert not np.allclose(moved.bar_equity.iloc[cut:], base.bar_equity.iloc[cut:])


# --- statistics ---------------------------------------------------------------------------------


def test_intraday_drawdown_comes_from_the_bars_and_the_daily_one_is_kept():
    days = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"])
    daily = pd.Series([100.0, 104.0, 102.0], index=days)
    # -10% inside day 1 (never seen at a close), the close-to-close drawdown is day 3's
    bars = np.array([100.0, 90.0, 100.0, 97.5, 104.0, 103.0, 102.0])
    none = pd.DataFrame({"pnl": [], "return": [], "commission": []})
    s = trading_stats(daily, none, initial_equity=100.0, bar_equity=bars)
    assert s["max_drawdown"] == pytest.approx(-0.10)
    assert s["max_drawdown_daily"] == pytest.approx(102 / 104 - 1)
    # everything else stays on the daily closes: Sharpe of the 3 daily returns, x sqrt(252)
    daily_only = trading_stats(daily, none, initial_equity=100.0)
    assert daily_only["max_drawdown"] == daily_only["max_drawdown_daily"] == s["max_drawdown_daily"]
    r = np.array([0.0, 0.04, 102 / 104 - 1])
    assert s["sharpe"] == daily_only["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * 252**0.5)


def test_accounting_contribution_and_costs_add_up():
    s = SimSettings(hold_bars=5, slippage_bps=1.0, half_spread=True, max_volume_fraction=0.01)
    plans = {}
    for t, seed in (("A", 6), ("B", 7), ("C", 8)):
        bars = random_market(seed, n_days=3)
        bars["volume"] = 1e6
        plans[t] = plan_trades(bars, np.random.default_rng(seed).uniform(0.4, 0.6, len(bars)), s)
    r = simulate_portfolio(plans, PortfolioSettings(capital=200_000.0))
    pnl = r.trades["pnl"].sum()
    assert r.bar_equity.iloc[-1] == pytest.approx(200_000 + pnl, rel=1e-12)
    assert r.ticker_pnl.iloc[-1].sum() == pytest.approx(pnl)
    per = per_ticker_stats(r)
    assert sum(v["pnl"] for v in per.values()) == pytest.approx(pnl)
    for v in per.values():
        assert v["total_return"] == pytest.approx(v["pnl"] / 200_000)
    c = cost_section(r)
    assert c["gross_pnl"] - c["commissions"] - c["slippage"] == pytest.approx(c["net_pnl"])
    assert c["net_pnl"] == pytest.approx(pnl) and c["slippage"] > 0
    st = portfolio_stats(r)
    assert st["max_drawdown"] <= st["max_drawdown_daily"] <= 0
    assert st["tickers"] == 3 and 0 < st["exposure"] <= 1.0


def test_concentration_names_the_top_ticker_and_its_share():
    rows = (("A", 600.0, 3.0), ("B", 300.0, 1.0), ("C", 200.0, 0.5), ("D", -100.0, -1.0))
    per = {t: {"pnl": p, "sharpe": s} for t, p, s in rows}
    c = concentration(per)
    assert c["top_ticker"] == "A" and c["top_ticker_share"] == pytest.approx(0.6)
    assert c["top5_share"] == pytest.approx(1.0) and c["tickers_profitable_share"] == 0.75
    assert c["median_ticker_sharpe"] == pytest.approx(0.75)
    per["A"]["pnl"] = -1000.0  # no net profit: nothing to attribute
    assert concentration(per)["top_ticker_share"] is None


def test_cost_check_names_the_capital_that_fixes_the_minimum_commission():
    # issue 21's case: $100k over 120 tickers, $0.35 minimum: $833 positions, 4.2 bps a fill
    settings = PortfolioSettings(capital=100_000.0)
    check = cost_check(settings, 120, 2.0, {"X": 50.0, "Y": 100.0})
    assert check["warn"] and check["expected_position"] == pytest.approx(100_000 / 120)
    assert check["expected_commission_bps"] == pytest.approx(0.35 / (100_000 / 120) * 1e4)
    assert check["capital_needed"] == 210_000.0
    fixed = cost_check(PortfolioSettings(capital=210_000.0), 120, 2.0, {"X": 50.0, "Y": 100.0})
    assert not fixed["warn"] and fixed["capital_needed"] is None
    assert "backtest.capital >= 210,000" in cost_warning(check, 100_000.0)
    # a $10 stock pays 3.5 bps a fill per share alone: no capital fixes that
    cheap = cost_check(PortfolioSettings(capital=1e7), 5, 2.0, {"X": 10.0})
    assert cheap["per_share_over"] == ["X"] and cheap["capital_needed"] is None
    assert "capital cannot fix it" in cost_warning(cheap, 1e7)


def test_settings_reject_bad_values_by_name():
    with pytest.raises(ValueError, match="max_ticker_weight"):
        PortfolioSettings(max_ticker_weight=0.0)
    with pytest.raises(ValueError, match="min_commission"):
        PortfolioSettings(min_commission=-1.0)
    with pytest.raises(ValueError, match="no ticker plans"):
        simulate_portfolio({}, PortfolioSettings())
    with pytest.raises(ValueError, match="overlap"):
        both = [(1, 3, 1, 10.0, 10.0, False), (2, 4, 1, 10.0, 10.0, False)]
        simulate_portfolio({"A": plan([10] * 5, both)}, pool())


# --- the decision's concentration rule ----------------------------------------------------------


def test_one_ticker_making_most_of_the_pnl_does_not_advance():
    rules = DecisionConfig(max_top_ticker_share=0.2)
    advance = {"verdict": "advance", "reasons": ["advance: OOS accuracy 0.53 > 0.52 and ..."]}
    held = apply_concentration(advance, rules, {"top_ticker": "JNJ", "top_ticker_share": 0.4})
    assert held["verdict"] == "hold"
    assert held["reasons"][0].startswith("hold: concentration: ")
    assert held["reasons"][1].startswith("the other rules pass: OOS accuracy")
    assert (
        "JNJ makes 40.0% of the net PnL > decision.max_top_ticker_share 20%" in held["reasons"][0]
    )
    ok = apply_concentration(advance, rules, {"top_ticker": "A", "top_ticker_share": 0.1})
    assert ok["verdict"] == "advance" and "10.0% of the net PnL <= 20%" in ok["reasons"][-1]
    stop = {"verdict": "stop", "reasons": ["stop: memory"]}
    assert apply_concentration(stop, rules, {"top_ticker_share": 0.9})["verdict"] == "stop"
    none = apply_concentration(advance, rules, {"top_ticker": None, "top_ticker_share": None})
    assert none["verdict"] == "advance" and "n/a" in none["reasons"][-1]


# --- known truth: the edge scales with tickers, and no edge never advances ----------------------


def edge_market(seed: int, edge: float, n_days: int = 30, per_day: int = 390):
    """Minute bars whose next 5 bars drift by `edge` x the bar volatility in the direction of a
    signal seen at the close (about one bar in 20), and the probability that says so."""
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    sig = rng.choice([-1, 0, 1], n, p=[0.025, 0.95, 0.025])
    drift = np.zeros(n)
    for lag in range(1, 6):
        drift[lag:] += sig[:-lag]
    vol = 0.001
    ret = vol * (rng.standard_normal(n) + edge * drift)
    close = 30 * np.exp(np.cumsum(ret))
    open_ = np.concatenate(([30.0], close[:-1]))
    ny = "America/New_York"
    stamps = [pd.date_range(d + pd.Timedelta(hours=9.5), periods=per_day, freq="min", tz=ny)
              for d in pd.bdate_range("2024-01-02", periods=n_days)]  # fmt: skip
    bars = pd.DataFrame({"timestamp": stamps[0].append(stamps[1:]).tz_convert("UTC"),
                         "open": open_, "high": np.maximum(open_, close),
                         "low": np.minimum(open_, close), "close": close,
                         "volume": np.full(n, 2e5)})  # fmt: skip
    return bars, 0.5 + 0.06 * sig, sig


def _book(n_tickers: int, edge: float, seed0: int = 100) -> tuple[dict, float]:
    s = SimSettings(hold_bars=5, long_threshold=0.53, short_threshold=0.47)
    plans, hits = {}, []
    for i in range(n_tickers):
        bars, proba, sig = edge_market(seed0 + i, edge)
        plans[f"T{i:03d}"] = plan_trades(bars, proba, s)
        fwd = np.log(bars["close"].shift(-5) / bars["close"]).to_numpy()
        on = (sig != 0) & np.isfinite(fwd)
        hits.append(np.sign(fwd[on]) == sig[on])
    # the phases' rule of capital: $20k a ticker at a full book
    capital = 20_000.0 * n_tickers
    r = simulate_portfolio(plans, PortfolioSettings(capital=capital))
    return {**portfolio_stats(r), "accuracy": float(np.concatenate(hits).mean()),
            "concentration": concentration(per_ticker_stats(r))}, capital  # fmt: skip


def test_known_truth_adding_tickers_at_the_same_edge_does_not_lower_the_sharpe():
    """Phase 3 -> phase 4 shapes scaled down (30 -> 120 tickers becomes 6 -> 24)."""
    few, _ = _book(6, edge=0.1)
    many, _ = _book(24, edge=0.1)
    assert few["sharpe"] > 1.0  # the edge pays after costs
    assert many["sharpe"] >= few["sharpe"], (few["sharpe"], many["sharpe"])
    assert many["concentration"]["top_ticker_share"] < 0.2  # no ticker carries the book


def test_known_truth_no_edge_never_advances():
    null, _ = _book(24, edge=0.0)
    assert abs(null["accuracy"] - 0.5) < 0.02
    verdict = decide(DecisionConfig(), HardwareConfig(), oos_accuracy=null["accuracy"],
                     sharpe=null["sharpe"], train_val_gap=0.0, peak_memory_gb=1.0,
                     dsr=1.0)  # fmt: skip
    verdict = apply_concentration(verdict, DecisionConfig(), null["concentration"])
    assert verdict["verdict"] != "advance", verdict
    assert null["sharpe"] is None or null["sharpe"] < 1.0
