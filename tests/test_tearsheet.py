"""The report's tearsheet figures (vpt_ray.backtest.tearsheet) on hand-made series: benchmark,
rolling Sharpe (against empyrical), worst drawdowns (against a brute-force walk) and turnover."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vpt_ray.backtest import tearsheet
from vpt_ray.backtest.stats import trading_stats

DAYS = pd.DatetimeIndex(pd.bdate_range("2024-07-08", periods=8), name="session")


def test_buy_and_hold_splits_capital_equally_at_the_first_open():
    closes = pd.DataFrame({"A": [11, 12, 10, 10, 13, 13, 14, 15.0], "B": [50.0] * 8}, index=DAYS)
    closes.loc[DAYS[2], "B"] = np.nan  # no bar that session: the last close carries over
    opens = pd.Series({"A": 10.0, "B": 50.0})
    eq = tearsheet.buy_and_hold(closes, opens, 1000.0)
    # 500 in A at 10 (50 shares), 500 in B at 50 (10 shares)
    assert eq.iloc[0] == pytest.approx(50 * 11 + 10 * 50)
    assert eq.iloc[2] == pytest.approx(50 * 10 + 10 * 50)
    assert eq.iloc[-1] == pytest.approx(50 * 15 + 500)
    with pytest.raises(ValueError, match="no first open for"):
        tearsheet.buy_and_hold(closes, pd.Series({"A": 10.0}), 1000.0)
    with pytest.raises(ValueError, match="positive prices"):
        tearsheet.buy_and_hold(closes, pd.Series({"A": 0.0, "B": 50.0}), 1000.0)


def test_benchmark_section_states_the_excess_return():
    strategy = pd.Series([1010.0, 1030, 1020, 1050, 1040, 1060, 1080, 1100], index=DAYS)
    bench = pd.Series([1000.0, 1005, 1010, 1000, 1020, 1030, 1040, 1050], index=DAYS)
    stats = trading_stats(strategy, pd.DataFrame(columns=["pnl", "return", "commission"]),
                          initial_equity=1000.0)  # fmt: skip
    b = tearsheet.benchmark_section(strategy, bench, 1000.0, stats)
    assert b["total_return"] == pytest.approx(0.05)
    assert b["excess_return"] == pytest.approx(0.10 - 0.05)
    assert b["max_drawdown"] == pytest.approx(1000 / 1010 - 1)


def test_rolling_sharpe_matches_empyrical():
    empyrical = pytest.importorskip("empyrical")
    rng = np.random.default_rng(3)
    days = pd.bdate_range("2024-01-02", periods=120)
    rets = pd.Series(rng.normal(0.001, 0.01, len(days)), index=days)
    equity = 1e5 * (1 + rets).cumprod()
    ours = tearsheet.rolling_sharpe(equity, 1e5, 21)
    ref = empyrical.roll_sharpe_ratio(rets, window=21)
    assert ours.iloc[:20].isna().all()
    np.testing.assert_allclose(ours.iloc[20:].to_numpy(), np.asarray(ref)[-100:], rtol=1e-9)
    with pytest.raises(ValueError, match="window"):
        tearsheet.rolling_sharpe(equity, 1e5, 1)


def brute_drawdowns(path: np.ndarray) -> list[tuple[float, int, int, int | None]]:
    """(depth, peak index, trough index, recovery index) of every under-water period, by
    walking the path one point at a time (index 0 = the starting capital)."""
    out, peak_i, trough_i, in_dd = [], 0, 0, False
    for i in range(1, len(path)):
        if path[i] >= path[peak_i]:
            if in_dd:
                out.append((path[trough_i] / path[peak_i] - 1, peak_i, trough_i, i))
                in_dd = False
            peak_i = i
        else:
            if not in_dd or path[i] < path[trough_i]:
                trough_i = i if (not in_dd or path[i] < path[trough_i]) else trough_i
            in_dd = True
    if in_dd:
        out.append((path[trough_i] / path[peak_i] - 1, peak_i, trough_i, None))
    return sorted(out)


def test_worst_drawdowns_equal_a_brute_force_walk():
    rng = np.random.default_rng(11)
    days = pd.bdate_range("2024-01-02", periods=200)
    equity = pd.Series(1e5 * np.cumprod(1 + rng.normal(0.0005, 0.012, len(days))), index=days)
    table = tearsheet.worst_drawdowns(equity, 1e5, n=5)
    path = np.concatenate(([1e5], equity.to_numpy()))
    ref = brute_drawdowns(path)[:5]
    assert len(table) == 5 and list(table["depth"]) == pytest.approx([r[0] for r in ref])
    dates = [None, *days]
    assert list(table["trough"]) == [dates[r[2]] for r in ref]
    assert [None if pd.isna(v) else v for v in table["peak"]] == [dates[r[1]] for r in ref]
    recovery = [None if pd.isna(v) else v for v in table["recovery"]]
    assert recovery == [dates[r[3]] if r[3] else None for r in ref]
    stats = trading_stats(equity, pd.DataFrame(columns=["pnl", "return", "commission"]),
                          initial_equity=1e5)  # fmt: skip
    assert table["depth"].iloc[0] == pytest.approx(stats["max_drawdown"])


def test_drawdown_from_the_starting_capital_and_never_recovered():
    equity = pd.Series([990.0, 980, 995, 1001, 1000], index=DAYS[:5])
    table = tearsheet.worst_drawdowns(equity, 1000.0)
    first = table.iloc[0]
    assert pd.isna(first["peak"]) and first["trough"] == DAYS[1]
    assert first["recovery"] == DAYS[3] and first["depth"] == pytest.approx(-0.02)
    last = table.iloc[1]  # 1001 -> 1000, still under water at the end
    assert pd.isna(last["recovery"]) and math.isnan(last["recovery_sessions"])
    assert tearsheet.worst_drawdowns(pd.Series([1001.0, 1002], index=DAYS[:2]), 1000).empty


def test_turnover_counts_entries_and_exits_on_their_sessions():
    t = pd.Timestamp
    trades = pd.DataFrame(
        {
            "entry_time": [t("2024-07-08 14:00", tz="UTC"), t("2024-07-09 19:00", tz="UTC")],
            "exit_time": [t("2024-07-08 15:00", tz="UTC"), t("2024-07-10 14:00", tz="UTC")],
            "shares": [10, -5],
            "entry_price": [100.0, 200.0],
            "exit_price": [101.0, 190.0],
        }
    )
    equity = pd.Series([1000.0, 1010.0, 1020.0], index=DAYS[:3])
    out = tearsheet.daily_turnover(trades, equity, 1000.0)
    assert list(out) == pytest.approx([(1000 + 1010) / 1000, 1000 / 1000, 950 / 1010])
