"""Where the PnL went and what was at risk (`vpt_ray.backtest.attribution`, `.exposure` and the
portfolio's net exposure and per-ticker PnL), checked on a real pooled simulation against
brute-force recomputations from its trades and bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_backtest_engine import random_market
from vpt_ray.backtest import attribution, exposure
from vpt_ray.backtest.engine import SimSettings
from vpt_ray.backtest.plans import plan_trades
from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
from vpt_ray.backtest.portfolio_stats import cost_section

CAPITAL = 200_000.0


@pytest.fixture(scope="module")
def book():
    """Three tickers, long and short, with slippage, spread and commissions, over 3 sessions."""
    s = SimSettings(hold_bars=5, slippage_bps=1.0, half_spread=True, max_volume_fraction=0.01)
    plans = {}
    for t, seed in (("A", 6), ("B", 7), ("C", 8)):
        bars = random_market(seed, n_days=3)
        bars["volume"] = 1e6
        plans[t] = plan_trades(bars, np.random.default_rng(seed).uniform(0.4, 0.6, len(bars)), s)
    return plans, simulate_portfolio(plans, PortfolioSettings(capital=CAPITAL))


def test_costs_per_trade_add_up_to_the_net_pnl(book):
    _, r = book
    t = r.trades
    c = attribution.trade_costs(t)
    assert (t["side"] == 1).any() and (t["side"] == -1).any()
    assert c["net"].to_numpy() == pytest.approx(c["gross"] - c["slippage"] - c["commissions"])
    # the net, written out: side x shares x (exit fill - entry fill) - both commissions
    direct = t["side"] * t["shares"] * (t["exit_price"] - t["entry_price"]) - t["commission"]
    assert c["net"].to_numpy() == pytest.approx(direct.to_numpy(), abs=1e-9)
    assert (c["slippage"] > 0).all()  # slippage and the half spread cost on every fill
    sides = attribution.pnl_by_side(t).set_index("side")
    total = cost_section(r)
    a = sides.loc["all"]
    assert a["gross"] == pytest.approx(total["gross_pnl"])
    assert a["net"] == pytest.approx(total["net_pnl"]) == pytest.approx(t["pnl"].sum())
    assert a["slippage"] == pytest.approx(total["slippage"])
    assert a["commissions"] == pytest.approx(total["commissions"])
    for k in ("trades", *attribution.COMPONENTS):
        assert sides.loc["long", k] + sides.loc["short", k] == pytest.approx(a[k])
    assert sides.loc["long", "trades"] == (t["side"] == 1).sum()


def test_cumulative_pnl_by_exit_session_ends_at_the_totals(book):
    _, r = book
    curves = attribution.cumulative_pnl(r.trades, r.daily_equity.index)
    assert list(curves.index) == list(r.daily_equity.index)
    last = curves.iloc[-1]
    assert last["net"] == pytest.approx(r.trades["pnl"].sum())
    assert last["gross"] == pytest.approx(cost_section(r)["gross_pnl"])
    assert (np.diff(curves["commissions"]) >= 0).all()
    # intraday and flat at the close: realized PnL by session is the equity's daily change
    assert CAPITAL + curves["net"].to_numpy() == pytest.approx(r.daily_equity.to_numpy())
    empty = attribution.cumulative_pnl(r.trades.iloc[:0], r.daily_equity.index)
    assert (empty.to_numpy() == 0).all()


def test_ticker_pnl_sums_to_the_equity_and_ticker_equity_keeps_the_extremes(book):
    _, r = book
    assert CAPITAL + r.ticker_pnl.sum(axis=1).to_numpy() == pytest.approx(
        r.daily_equity.to_numpy(), rel=1e-12
    )
    contrib = attribution.ticker_equity(r.ticker_pnl, CAPITAL, top=1)
    final = r.ticker_pnl.iloc[-1]
    best, worst = final.idxmax(), final.idxmin()
    assert list(contrib.columns) == [best, worst, "other 1 tickers"]
    assert contrib.sum(axis=1).to_numpy() == pytest.approx(
        (r.ticker_pnl.sum(axis=1) / CAPITAL).to_numpy()
    )
    everyone = attribution.ticker_equity(r.ticker_pnl, CAPITAL)
    assert set(everyone.columns) == set(r.ticker_pnl.columns)  # few tickers: each shown


def _brute_exposure(plans: dict, r) -> tuple[np.ndarray, np.ndarray]:
    """Gross and net notional at every clock step from the trades and each ticker's last close:
    a position counts from its entry step until the step it exits (exits happen before the
    step's marks), at its ticker's latest close."""
    clock = r.bar_equity.index
    gross, net = np.zeros(len(clock)), np.zeros(len(clock))
    for name, p in plans.items():
        ts = pd.DatetimeIndex(p.timestamp.view("datetime64[ns]")).tz_localize("UTC")
        close = pd.Series(p.close, index=ts).reindex(clock).ffill().to_numpy()
        for tr in r.trades[r.trades["ticker"] == name].itertuples():
            held = (clock >= tr.entry_time) & (clock < tr.exit_time)
            gross[held] += tr.shares * close[held]
            net[held] += tr.side * tr.shares * close[held]
    return gross, net


def test_net_and_gross_exposure_equal_a_brute_force_book(book):
    plans, r = book
    gross, net = _brute_exposure(plans, r)
    eq = r.bar_equity.to_numpy()
    assert r.gross.to_numpy() == pytest.approx(gross / eq, abs=1e-9)
    assert r.net.to_numpy() == pytest.approx(net / eq, abs=1e-9)
    assert (r.net.to_numpy() < 0).any() and (r.net.to_numpy() > 0).any()
    assert (np.abs(r.net.to_numpy()) <= r.gross.to_numpy() + 1e-12).all()


def test_session_exposure_groups_bars_by_their_new_york_session(book):
    _, r = book
    bars = pd.DataFrame({"timestamp": r.bar_equity.index, "gross_exposure": r.gross.to_numpy(),
                         "net_exposure": r.net.to_numpy()})  # fmt: skip
    daily = exposure.session_exposure(bars)
    assert list(daily.index) == list(r.daily_equity.index)
    first = bars[bars["timestamp"].dt.tz_convert("America/New_York").dt.date
                 == daily.index[0].date()]  # fmt: skip
    assert daily["gross_mean"].iloc[0] == pytest.approx(first["gross_exposure"].mean())
    assert daily["gross_max"].iloc[0] == pytest.approx(first["gross_exposure"].max())
    long_minus_short = daily["long_mean"] - daily["short_mean"]
    assert long_minus_short.to_numpy() == pytest.approx(daily["net_mean"].to_numpy())
    assert (daily["short_mean"] >= -1e-12).all() and (daily["long_mean"] >= -1e-12).all()
    s = exposure.exposure_summary(bars)
    assert s["gross_mean"] == pytest.approx(bars["gross_exposure"].mean())
    assert s["in_market"] == pytest.approx((bars["gross_exposure"] > 0).mean())
    # 20:00 New York on Jan 2 is 01:00 UTC on Jan 3: it belongs to the Jan 2 session
    late = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-03 01:00"], utc=True),
                         "gross_exposure": [0.5], "net_exposure": [0.1]})  # fmt: skip
    assert list(exposure.session_exposure(late).index) == [pd.Timestamp("2024-01-02")]
    with pytest.raises(ValueError, match="net_exposure"):
        exposure.session_exposure(bars.drop(columns="net_exposure"))
