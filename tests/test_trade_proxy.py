"""The trials' after-cost validation returns (`backtest.proxy`) and the standard errors the
decision uses (`vpt_ray.validation.uncertainty`), on hand-made samples with hand-computed
answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from vpt_ray.backtest.proxy import TradeProxy, round_trip_cost, signals, trade_returns
from vpt_ray.core.config import load_config
from vpt_ray.validation.uncertainty import (
    accuracy_se,
    difference_se,
    effective_samples,
    mean_accuracy_se,
    sharpe_se_annual,
    sharpe_se_per_period,
)


def test_signals_follow_the_engine_thresholds():
    p = np.array([0.6, 0.53, 0.5, 0.47, 0.1, np.nan])
    assert signals(p, 0.53, 0.47, True).tolist() == [1, 1, 0, -1, -1, 0]
    assert signals(p, 0.53, 0.47, False).tolist() == [1, 1, 0, 0, 0, 0]


def test_one_position_per_ticker_for_the_holding_period_net_of_costs():
    # ticker 0 signals at every sample (5 bars apart), ticker 1 once; hold 15 bars
    pos = np.array([0, 0, 5, 10, 15, 20, 30])
    ticker = np.array([0, 1, 0, 0, 0, 0, 0])
    side = np.array([1, -1, 1, -1, -1, 1, 1], dtype=np.int8)
    gross = np.array([0.01, 0.02, 0.5, 0.5, -0.03, 0.5, np.nan])
    cost = np.array([0.001, 0.002])
    out = trade_returns(pos, ticker, side, gross, cost, 15)
    # ticker 0 trades at 0 (free again at 15), at 15 (short: +0.03), then at 30 (NaN: none)
    assert out.tolist() == pytest.approx([0.009, -0.022, 0, 0, 0.029, 0, 0])


def test_daily_returns_sum_trades_into_equal_weight_sleeves_and_keep_flat_days():
    proxy = TradeProxy(
        ticker=np.array([0, 1, 0, 1], dtype=np.int16),
        cost=np.array([0.0, 0.0]),
        long_threshold=0.53,
        short_threshold=0.47,
        allow_short=True,
        hold_bars=15,
        weight=0.5,  # 2 tickers, position_fraction 1
    )
    rows = np.arange(4)
    p = np.array([0.9, 0.1, 0.5, 0.5])  # day 7: AAA long, BBB short; day 8: no signal
    fwd = np.log1p(np.array([0.02, -0.04, 0.1, 0.1]))
    days, ret = proxy.daily_returns(
        rows, p, np.array([0, 0, 390, 390]), fwd, np.array([7, 7, 8, 8])
    )
    assert days.tolist() == [7, 8]
    assert ret.tolist() == pytest.approx([0.5 * 0.02 + 0.5 * 0.04, 0.0])


def test_round_trip_cost_mirrors_the_engine_cost_model():
    cfg = load_config(1, overrides=["synthetic.signal_strength=1.0"])  # 5 tickers, $100k
    notional = 100_000 / 5
    # $10 stock: 0.0035 $/share beats the $0.35 minimum on $20k (2000 shares = $7 > $0.35)
    assert round_trip_cost(cfg, 10.0, 5) == pytest.approx(2 * (0.5e-4 + 0.0035 / 10))
    # $500 stock: 40 shares x 0.0035 = $0.14 < $0.35: the minimum applies
    assert round_trip_cost(cfg, 500.0, 5) == pytest.approx(2 * (0.5e-4 + 0.35 / notional))
    assert round_trip_cost(cfg, None, 5) == pytest.approx(2 * (0.5e-4 + 0.35 / notional))


def test_standard_errors_by_hand():
    # labels 15 bars long, samples every 5 bars: one independent sample in three
    assert effective_samples(30_000, 5, 15) == 10_000
    assert effective_samples(100, 1, 1) == 100  # daily bars, one-day labels
    assert accuracy_se(0.5, 10_000) == pytest.approx(0.005)
    assert mean_accuracy_se([0.5, 0.5], [10_000, 10_000]) == pytest.approx(0.005 / math.sqrt(2))
    assert difference_se(0.003, 0.004) == pytest.approx(0.005)
    assert math.isnan(difference_se(0.003, None))
    # Mertens (2002) by hand on a skewed series: 1 - skew SR + (kurt - 1) / 4 SR^2 over T - 1
    r = np.tile([0.004, 0.003, -0.002, 0.006, -0.015, 0.005, 0.002, 0.001], 20)
    sr = r.mean() / r.std(ddof=1)
    skew = stats.skew(r, bias=False)
    kurt = stats.kurtosis(r, fisher=False, bias=False)
    assert skew < -1  # a left tail: the SE is larger than the normal one
    by_hand = math.sqrt((1 - skew * sr + (kurt - 1) / 4 * sr**2) / (len(r) - 1)) * math.sqrt(252)
    assert sharpe_se_annual(r) == pytest.approx(by_hand, rel=1e-12)
    assert sharpe_se_annual(r) > math.sqrt((1 + sr**2 / 2) / (len(r) - 1)) * math.sqrt(252)
    assert sharpe_se_per_period(0.0, 101) == pytest.approx(0.1)
    assert math.isnan(sharpe_se_annual(np.zeros(10)))
