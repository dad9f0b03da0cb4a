"""Trading statistics and the equal-weight roll-up: hand-computed cases, agreement with
empyrical-reloaded on the same daily returns, and JSON safety."""

from __future__ import annotations

import json
import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from vpt_ray.backtest.engine import SimSettings, TickerResult, simulate
from vpt_ray.backtest.sleeves import combine, daily_equity_frame, per_ticker_table
from vpt_ray.backtest.stats import STAT_KEYS, summarize, trading_stats


def days(n: int, start: str = "2024-01-02") -> pd.DatetimeIndex:
    return pd.bdate_range(start, periods=n, name="session")


def trades_of(pnl: list[float], ret: list[float] | None = None, comm: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pnl": pnl,
            "return": ret if ret is not None else [p / 100 for p in pnl],
            "commission": [comm] * len(pnl),
        }  # fmt: skip
    )


def test_hand_computed_curve():
    # 100 -> 110 -> 99 -> 108.9: +10 %, -10 %, +10 %
    eq = pd.Series([110.0, 99.0, 108.9], index=days(3))
    s = trading_stats(eq, trades_of([10, -5, 20, -5]), exposure=0.25, turnover=3.0,
                      initial_equity=100.0)  # fmt: skip
    assert s["total_return"] == pytest.approx(0.089)
    assert s["max_drawdown"] == pytest.approx(99 / 110 - 1)
    assert s["max_drawdown_duration_days"] == 2  # 99 and 108.9 are both below the 110 high
    assert s["cagr"] == pytest.approx(1.089 ** (252 / 3) - 1)
    r = np.array([0.1, -0.1, 0.1])
    assert s["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert s["sortino"] == pytest.approx(r.mean() * 252 / (math.sqrt(0.01 / 3) * math.sqrt(252)))
    assert (s["trades"], s["win_rate"], s["profit_factor"]) == (4, 0.5, 3.0)  # 30 / 10
    assert s["avg_trade_pnl"] == 5.0 and s["avg_trade"] == pytest.approx(0.05)
    assert (s["commissions"], s["exposure"], s["turnover"]) == (4.0, 0.25, 3.0)
    assert (s["days"], s["final_equity"]) == (3, 108.9)
    assert set(s) == set(STAT_KEYS)


def test_without_initial_equity_the_curve_starts_at_its_first_close():
    eq = pd.Series([110.0, 99.0, 108.9], index=days(3))
    s = trading_stats(eq, trades_of([]))
    assert s["total_return"] == pytest.approx(108.9 / 110 - 1)
    assert s["sharpe"] == pytest.approx(
        np.mean([-0.1, 0.1]) / np.std([-0.1, 0.1], ddof=1) * math.sqrt(252)
    )


def test_drawdown_duration_counts_the_longest_spell_under_water():
    eq = pd.Series([101, 100, 99, 102, 101, 103, 100, 100, 100, 100.0], index=days(10))
    s = trading_stats(eq, trades_of([]), initial_equity=100.0)
    assert s["max_drawdown_duration_days"] == 4  # the last four sessions below 103
    assert s["max_drawdown"] == pytest.approx(100 / 103 - 1)


def test_degenerate_cases_are_json_safe():
    flat = pd.Series([100.0] * 5, index=days(5))
    s = trading_stats(flat, trades_of([]), initial_equity=100.0)
    assert (s["sharpe"], s["sortino"], s["total_return"], s["max_drawdown"]) == (0.0, 0.0, 0.0, 0.0)
    assert s["win_rate"] is s["profit_factor"] is s["avg_trade"] is None
    assert s["exposure"] is s["turnover"] is None
    only_wins = trading_stats(flat, trades_of([1.0, 2.0]), initial_equity=100.0)
    assert only_wins["profit_factor"] is None and only_wins["win_rate"] == 1.0
    up = pd.Series([101.0, 102.0, 103.0], index=days(3))
    s = trading_stats(up, trades_of([]), initial_equity=100.0)
    assert s["sortino"] is None and s["sharpe"] > 0  # no down day: sortino would be infinite
    assert trading_stats(pd.Series([105.0], index=days(1)), trades_of([]))["total_return"] == 0.0
    empty = trading_stats(pd.Series([], dtype=float), trades_of([]))
    assert empty["total_return"] is None and empty["days"] == 0
    ruin = trading_stats(pd.Series([50.0, -1.0], index=days(2)), trades_of([-101.0]),
                         initial_equity=100.0)  # fmt: skip
    assert ruin["cagr"] == -1.0
    for stats in (s, empty, ruin, only_wins):
        json.dumps(stats, allow_nan=False)


def test_bad_inputs_name_the_problem():
    eq = pd.Series([100.0, np.nan], index=days(2))
    with pytest.raises(ValueError, match="NaN"):
        trading_stats(eq, trades_of([]))
    with pytest.raises(ValueError, match="missing column 'commission'"):
        trading_stats(eq.fillna(1.0), pd.DataFrame({"pnl": [1.0], "return": [0.1]}))
    with pytest.raises(ValueError, match="initial_equity"):
        trading_stats(eq.fillna(1.0), trades_of([]), initial_equity=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_empyrical_on_the_same_returns(seed):
    rng = np.random.default_rng(seed)
    rets = rng.normal(0.0004, 0.012, 600)
    equity = 250_000.0 * np.cumprod(1 + rets)
    s = trading_stats(pd.Series(equity, index=days(600)), trades_of([]), initial_equity=250_000.0)
    r = pd.Series(rets, index=days(600))
    assert s["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-10)
    assert s["sortino"] == pytest.approx(empyrical.sortino_ratio(r), rel=1e-10)
    assert s["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r), rel=1e-10)
    assert s["max_drawdown_daily"] == s["max_drawdown"]  # no bar equity given: the daily one
    assert s["cagr"] == pytest.approx(empyrical.cagr(r), rel=1e-10)
    assert s["total_return"] == pytest.approx(empyrical.cum_returns_final(r), rel=1e-10)


def _random_market(seed: int, n_days: int = 8, per_day: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ny = "America/New_York"
    stamps = [
        pd.date_range(d + pd.Timedelta(hours=9.5), periods=per_day, freq="min", tz=ny)
        for d in pd.bdate_range("2024-03-04", periods=n_days)
    ]
    ts = stamps[0].append(stamps[1:]).tz_convert("UTC")
    n = len(ts)
    close = 15 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = close * np.exp(rng.normal(0, 0.0005, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.001, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.001, n))
    vol = rng.integers(2_000, 50_000, n).astype(float)
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": vol})  # fmt: skip


def test_ticker_summary_agrees_with_empyrical_on_a_simulated_curve():
    bars = _random_market(5)
    proba = np.random.default_rng(6).uniform(0.42, 0.58, len(bars))
    res = simulate(bars, proba, SimSettings(capital=40_000.0, hold_bars=10))
    s = summarize(res)
    path = np.concatenate(([40_000.0], res.daily_equity.to_numpy()))
    r = pd.Series(path[1:] / path[:-1] - 1, index=res.daily_equity.index)
    assert s["trades"] == len(res.trades) > 10
    assert s["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-10)
    assert s["sortino"] == pytest.approx(empyrical.sortino_ratio(r), rel=1e-10)
    assert s["max_drawdown_daily"] == pytest.approx(empyrical.max_drawdown(r), rel=1e-10)
    # the reported one is intraday: the engine's bar equity, initial capital as the first peak
    bar_path = np.concatenate(([40_000.0], res.equity.to_numpy()))
    intraday = (bar_path / np.maximum.accumulate(bar_path) - 1).min()
    assert s["max_drawdown"] == pytest.approx(intraday, rel=1e-12)
    assert s["max_drawdown"] < s["max_drawdown_daily"]
    assert s["cagr"] == pytest.approx(empyrical.cagr(r), rel=1e-10)
    assert s["total_return"] == pytest.approx(res.trades.pnl.sum() / 40_000.0, rel=1e-9)
    assert s["commissions"] == pytest.approx(res.trades.commission.sum())
    assert s["exposure"] == pytest.approx(np.mean(res.position != 0))
    assert 0 < s["exposure"] < 1
    json.dumps(s, allow_nan=False)


def _result(equity: list[float], index: pd.DatetimeIndex, capital: float, pnl=(), position=(1, 0)):
    trades = trades_of(list(pnl)).assign(shares=10, entry_price=10.0, exit_price=10.0)
    return TickerResult(trades, pd.Series(equity, index=index), pd.Series(equity, index=index),
                        np.asarray(position, float), capital)  # fmt: skip


def test_combine_is_the_sum_of_equal_sleeves_on_the_union_of_sessions():
    a = _result([510.0, 520.0, 505.0], days(3), 500.0, pnl=[10, 10, -15], position=(1, 1, 0, 0))
    # b has no bar on the first and the third session
    b = _result([490.0, 495.0], days(4)[[1, 3]], 500.0, pnl=[-10, 5], position=(0, 0, 0, 1))
    frame = daily_equity_frame({"A": a, "B": b}, 1000.0)
    assert frame.to_dict("list") == {"A": [510, 520, 505, 505], "B": [500, 490, 490, 495]}
    equity, s = combine({"A": a, "B": b}, 1000.0)
    assert list(equity) == [1010, 1010, 995, 1000]
    assert s["total_return"] == 0.0 and s["trades"] == 5 and s["tickers"] == 2
    assert s["max_drawdown"] == pytest.approx(995 / 1010 - 1)
    assert s["win_rate"] == pytest.approx(3 / 5) and s["profit_factor"] == pytest.approx(25 / 25)
    assert s["exposure"] == pytest.approx((0.5 + 0.25) / 2)
    assert s["turnover"] == pytest.approx(5 * 10 * 20 / 1000)
    assert s["commissions"] == 5.0
    table = per_ticker_table({"A": a, "B": b})
    assert list(table.index) == ["A", "B"] and table.loc["A", "total_return"] == pytest.approx(0.01)
    json.dumps(s, allow_nan=False)


def test_combine_rejects_unequal_sleeves_and_nothing():
    a = _result([510.0], days(1), 600.0)
    with pytest.raises(ValueError, match="A was simulated with capital 600.0.*gives 1000.0"):
        combine({"A": a}, 1000.0)
    with pytest.raises(ValueError, match="no ticker results"):
        combine({}, 1000.0)


def test_combine_of_simulated_tickers_matches_their_pnl():
    results = {}
    for i, t in enumerate(["AAA", "BBB", "CCC"]):
        bars = _random_market(10 + i, n_days=6 - i)  # different session counts
        proba = np.random.default_rng(20 + i).uniform(0.42, 0.58, len(bars))
        results[t] = simulate(bars, proba, SimSettings(capital=30_000.0, hold_bars=7))
    equity, s = combine(results, 90_000.0)
    pnl = sum(r.trades.pnl.sum() for r in results.values())
    assert equity.iloc[-1] == pytest.approx(90_000.0 + pnl, rel=1e-12)
    assert s["trades"] == sum(len(r.trades) for r in results.values())
    r = equity / np.concatenate(([90_000.0], equity.to_numpy()[:-1])) - 1
    assert s["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-10)
    assert len(per_ticker_table(results)) == 3
