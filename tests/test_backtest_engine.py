"""The one-ticker simulation: one hand-computed case per rule, then agreement with independent
simulations (a transparent pure-Python loop, and vectorbt's `Portfolio.from_signals`)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from numba import njit

from vpt_ray.backtest.engine import SimSettings, TickerResult, session_days, simulate

FREE = dict(commission_per_share=0.0, min_commission=0.0, slippage_bps=0.0, max_volume_fraction=1.0)
NAN = float("nan")


def make_bars(sessions: list[list[tuple]], first_day: str = "2024-01-02") -> pd.DataFrame:
    """Bars from per-session lists of (open, high, low, close[, volume]); one minute apart from
    09:30 New York time, one business day per session."""
    rows, stamps = [], []
    day = pd.Timestamp(first_day)
    for bars in sessions:
        start = (day + pd.Timedelta(hours=9, minutes=30)).tz_localize("America/New_York")
        for i, bar in enumerate(bars):
            o, h, lo, c, *v = bar
            rows.append((o, h, lo, c, v[0] if v else 1e9))
            stamps.append((start + pd.Timedelta(minutes=i)).tz_convert("UTC"))
        day += pd.offsets.BDay()
    df = pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"])
    df.insert(0, "timestamp", pd.DatetimeIndex(stamps, tz="UTC"))
    return df


def flat_bars(opens: list[float], closes: list[float] | None = None) -> list[tuple]:
    closes = closes or opens
    return [(o, max(o, c), min(o, c), c) for o, c in zip(opens, closes, strict=True)]


def run(sessions, proba, **kw) -> TickerResult:
    settings = SimSettings(**{"capital": 1100.0, "hold_bars": 2, **FREE, **kw})
    return simulate(make_bars(sessions), np.asarray(proba, float), settings)


# --- one rule per test, numbers worked out by hand -------------------------------------------


def test_entry_at_next_bar_open_and_hold_exit():
    # signal at bar 0 (close 10.5) -> buy at bar 1's open 11; hold 2 bars -> sell at bar 3's open 13
    r = run([flat_bars([10, 11, 12, 13, 14], [10.5, 11.5, 12.5, 13.5, 14.5])], [0.6] + [NAN] * 4)
    (t,) = r.trades.itertuples()
    assert (t.entry_bar, t.exit_bar, t.side, t.shares) == (1, 3, 1, 100)  # 1100 / 11
    assert (t.entry_price, t.exit_price, t.exit_reason, t.bars_held) == (11, 13, "hold", 2)
    assert t.pnl == pytest.approx(200.0) and t._9 == pytest.approx(200 / 1100)  # return column
    assert list(r.position) == [0, 100, 100, 0, 0]
    np.testing.assert_allclose(r.equity.to_numpy(), [1100, 1150, 1250, 1300, 1300])
    assert r.trades.entry_time.iloc[0] == r.equity.index[1]


def test_signal_on_bar_t_never_fills_on_bar_t():
    # identical bars except the signal bar's close: the fill must not move with it
    a = run([flat_bars([10, 11, 12, 13], [10, 11, 12, 13])], [0.6, NAN, NAN, NAN])
    b = run([flat_bars([10, 11, 12, 13], [50, 11, 12, 13])], [0.6, NAN, NAN, NAN])
    assert a.trades.entry_price.iloc[0] == b.trades.entry_price.iloc[0] == 11


def test_changing_a_probability_changes_nothing_before_the_next_bar():
    rng = np.random.default_rng(3)
    closes = list(10 + np.cumsum(rng.normal(0, 0.05, 40)))
    bars = [flat_bars(closes[:20]), flat_bars(closes[20:])]
    p = rng.uniform(0.4, 0.6, 40)
    q = p.copy()
    q[25] = 1.0 - q[25]
    a, b = run(bars, p, hold_bars=3), run(bars, q, hold_bars=3)
    np.testing.assert_array_equal(a.equity.to_numpy()[:26], b.equity.to_numpy()[:26])
    np.testing.assert_array_equal(a.position[:26], b.position[:26])


def test_thresholds_not_met_means_no_trade():
    p = [0.52999, 0.47001, 0.5, NAN, 0.5]
    r = run([flat_bars([10, 11, 12, 13, 14])], p)
    assert r.trades.empty and not r.position.any()
    assert (r.equity == 1100).all() and list(r.daily_equity) == [1100]


def test_threshold_is_inclusive_on_both_sides():
    long_ = run([flat_bars([10, 11, 12, 13])], [0.53, NAN, NAN, NAN])
    short = run([flat_bars([10, 11, 12, 13])], [0.47, NAN, NAN, NAN])
    assert list(long_.trades.side) == [1] and list(short.trades.side) == [-1]
    tie = run([flat_bars([10, 11, 12, 13])], [0.5, NAN, NAN, NAN], long_threshold=0.5,
              short_threshold=0.5)  # fmt: skip
    assert list(tie.trades.side) == [1]  # equal thresholds: long wins


def test_short_pnl_and_allow_short_false():
    # short at 11 (100 shares), cover at 9 -> +200
    r = run([flat_bars([10, 11, 10, 9, 8])], [0.4, NAN, NAN, NAN, NAN])
    (t,) = r.trades.itertuples()
    assert (t.side, t.shares, t.entry_price, t.exit_price) == (-1, 100, 11, 9)
    assert t.pnl == pytest.approx(200.0)
    np.testing.assert_allclose(r.equity.to_numpy(), [1100, 1100, 1200, 1300, 1300])
    assert list(r.position) == [0, -100, -100, 0, 0]
    off = run([flat_bars([10, 11, 10, 9, 8])], [0.4, NAN, NAN, NAN, NAN], allow_short=False)
    assert off.trades.empty


def test_commission_minimum_and_per_share():
    # 1000 capital at 10: shares = floor(min((1000 - 1) / 10, 1000 / 10.005)) = 99;
    # 99 * 0.005 = 0.495 < 1.0 -> the minimum applies on both orders
    r = run([flat_bars([10, 10, 10, 10])], [0.6, NAN, NAN, NAN], capital=1000.0,
            commission_per_share=0.005, min_commission=1.0)  # fmt: skip
    (t,) = r.trades.itertuples()
    assert t.shares == 99 and t.commission == pytest.approx(2.0) and t.pnl == pytest.approx(-2.0)
    assert r.equity.iloc[1] == pytest.approx(1000 - 1.0)  # entry commission paid at the fill
    # 10000 capital: shares = floor(min(9999 / 10, 10000 / 10.005)) = 999; 999 * 0.005 = 4.995
    r = run([flat_bars([10, 10, 10, 10])], [0.6, NAN, NAN, NAN], capital=10_000.0,
            commission_per_share=0.005, min_commission=1.0)  # fmt: skip
    (t,) = r.trades.itertuples()
    assert t.shares == 999 and t.commission == pytest.approx(2 * 4.995)
    assert 999 * 10 + 4.995 <= 10_000 < 1000 * 10 + 5.0  # sized to afford its commission


@pytest.mark.parametrize("side", [1, -1])
def test_slippage_is_adverse_for_longs_and_shorts(side):
    p = 0.6 if side == 1 else 0.4
    r = run([flat_bars([10, 11, 12, 13])], [p, NAN, NAN, NAN], capital=100_000.0,
            slippage_bps=10.0)  # fmt: skip
    (t,) = r.trades.itertuples()
    # buy fills 10 bps above the open, sell 10 bps below
    buy, sell = (11 * 1.001, 13 * 0.999) if side == 1 else (13 * 1.001, 11 * 0.999)
    entry, exit_ = (buy, sell) if side == 1 else (sell, buy)
    assert t.entry_price == pytest.approx(entry, rel=1e-15)
    assert t.exit_price == pytest.approx(exit_, rel=1e-15)
    assert t.pnl == pytest.approx(side * t.shares * (exit_ - entry))
    assert t.pnl < side * t.shares * (13 - 11)  # costs always hurt


@pytest.mark.parametrize("side", [1, -1])
def test_half_spread_uses_only_ranges_known_at_the_fill(side):
    # entry at bar 1's open: bar 0's range (0.4 -> 0.2) is the last one known; the hold exit at
    # bar 3's open knows bar 2's range (0.6 -> 0.3). The fill bars' own ranges are never used.
    bars = [(10, 10.2, 9.8, 10), (11, 19.0, 1.0, 11), (12, 12.3, 11.7, 12), (13, 19.0, 1.0, 13)]
    r = run([bars], [0.6 if side == 1 else 0.4, NAN, NAN, NAN], capital=100_000.0,
            slippage_bps=10.0, half_spread=True)  # fmt: skip
    (t,) = r.trades.itertuples()
    assert t.entry_price == pytest.approx(11 + side * (11 * 0.001 + 0.2), rel=1e-15)
    assert t.exit_price == pytest.approx(13 - side * (13 * 0.001 + 0.3), rel=1e-15)


def test_volume_cap_uses_the_signal_bar_never_the_fill_bar():
    # the fill bar's volume is not known at its open: the cap comes from the signal bar (57)
    bars = [(10, 10, 10, 10, 57), (11, 11, 11, 11, 1e6), (12, 12, 12, 12, 1e6), (13, 13, 13, 13, 1)]
    r = run([bars], [0.6, NAN, NAN, NAN], capital=100_000.0, max_volume_fraction=0.1)
    assert list(r.trades.shares) == [5]  # floor(0.1 * 57)
    tiny = [(10, 10, 10, 10, 9), (11, 11, 11, 11, 1e6)]
    assert run([tiny], [0.6, NAN], max_volume_fraction=0.1).trades.empty  # < 1 share: no trade


def test_position_fraction_sizes_on_current_equity():
    # half of 1100 at 11 -> 50 shares, sold at 13 -> 1200; then half of 1200 at 13 -> 46 shares
    p = [0.6, NAN, NAN, 0.6, NAN, NAN, NAN]
    r = run([flat_bars([10, 11, 12, 13, 13, 14, 15])], p, position_fraction=0.5)
    assert list(r.trades.shares) == [50, 46]
    # all of it: 100 shares at 11 -> 1300; then 1300 / 13 -> 100 shares, +2 each
    r = run([flat_bars([10, 11, 12, 13, 13, 14, 15])], p)
    assert list(r.trades.shares) == [100, 100]
    assert r.trades["return"].iloc[1] == pytest.approx(100 * 2 / 1300)


def test_close_out_at_session_end_and_no_overnight_holding():
    # hold 3 would end on the next day: the position is sold at bar 2's CLOSE (12.5) instead
    s1 = flat_bars([10, 11, 12], [10.5, 11.5, 12.5])
    s2 = flat_bars([20, 21, 22])
    r = run([s1, s2], [0.6, NAN, NAN, NAN, NAN, NAN], hold_bars=3)
    (t,) = r.trades.itertuples()
    assert (t.entry_bar, t.exit_bar, t.exit_price, t.exit_reason, t.bars_held) == (
        1, 2, 12.5, "session_close", 2)  # fmt: skip
    assert list(r.position) == [0, 100, 100, 0, 0, 0]
    assert list(r.daily_equity) == [1250, 1250]
    assert list(r.daily_equity.index) == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")]


def test_signal_on_a_sessions_last_bar_does_not_enter_next_session():
    r = run([flat_bars([10, 11]), flat_bars([20, 21])], [NAN, 0.6, NAN, NAN])
    assert r.trades.empty
    # ... but it does when overnight positions are allowed
    r = run([flat_bars([10, 11]), flat_bars([20, 21, 22])], [NAN, 0.6, NAN, NAN, NAN],
            flat_at_close=False)  # fmt: skip
    (t,) = r.trades.itertuples()
    assert (t.entry_bar, t.exit_bar, t.entry_price, t.exit_price) == (2, 4, 20, 22)


def test_overnight_hold_exits_at_open_of_entry_plus_hold_bars():
    r = run([flat_bars([10, 11, 12]), flat_bars([20, 21, 22, 23])], [0.6] + [NAN] * 6,
            hold_bars=3, flat_at_close=False)  # fmt: skip
    (t,) = r.trades.itertuples()
    assert (t.entry_bar, t.exit_bar, t.exit_price, t.exit_reason) == (1, 4, 21, "hold")
    assert list(r.daily_equity) == [1100 + 100 * 1, 1100 + 100 * 10]


def test_end_of_data_closes_an_open_position_at_the_last_close():
    r = run([flat_bars([10, 11, 12], [10, 11, 12.5])], [0.6, NAN, NAN], hold_bars=10,
            flat_at_close=False)  # fmt: skip
    (t,) = r.trades.itertuples()
    assert (t.exit_bar, t.exit_price, t.exit_reason) == (2, 12.5, "end_of_data")


def test_no_new_entry_while_a_position_is_open():
    # long from bar 1; the signals at bars 1 and 2 are ignored; the one at bar 2 is seen at
    # bar 3's open where the hold exit happens first, so it re-enters there
    r = run([flat_bars([10, 11, 12, 13, 14, 15, 16])], [0.6, 0.6, 0.4, NAN, NAN, NAN, NAN])
    assert list(r.trades.entry_bar) == [1, 3] and list(r.trades.exit_bar) == [3, 5]
    assert list(r.trades.side) == [1, -1]


def test_exit_on_reversal_flips_and_ignores_hold_bars():
    p = [0.6, 0.5, 0.6, 0.5, 0.4, 0.5, 0.5, NAN]
    r = run([flat_bars([10, 11, 12, 13, 14, 15, 16, 17])], p, hold_bars=1, exit_on_reversal=True)
    # long at bar 1; same-side signal at 2 is ignored; short signal at bar 4 -> exit and flip at
    # bar 5's open; short held until the session-end close-out at bar 7's close
    assert list(r.trades.entry_bar) == [1, 5] and list(r.trades.exit_bar) == [5, 7]
    assert list(r.trades.exit_reason) == ["reversal", "session_close"]
    assert list(r.trades.side) == [1, -1]
    # with shorts disabled, the bearish signal still closes the long but opens nothing
    r = run([flat_bars([10, 11, 12, 13, 14, 15, 16, 17])], p, hold_bars=1, exit_on_reversal=True,
            allow_short=False)  # fmt: skip
    assert list(r.trades.entry_bar) == [1] and list(r.trades.exit_reason) == ["reversal"]


def test_session_is_the_new_york_date():
    # 18:59 and 19:59 New York on 2024-01-02 are 23:59 UTC and 00:59 UTC (next day): one session
    ts = pd.DatetimeIndex(["2024-01-02 23:59", "2024-01-03 00:59", "2024-01-03 05:01",
                           "2024-07-01 03:59", "2024-07-01 04:00"], tz="UTC")  # fmt: skip
    days = session_days(ts).astype("datetime64[D]").astype(str).tolist()
    assert days == ["2024-01-02", "2024-01-02", "2024-01-03", "2024-06-30", "2024-07-01"]
    # the lookup per UTC hour agrees with a per-bar conversion across both DST switches
    ts = pd.date_range("2024-03-09", "2024-11-04", freq="7min", tz="UTC")
    ref = (ts.tz_convert("America/New_York").tz_localize(None).normalize() - pd.Timestamp(0)).days
    np.testing.assert_array_equal(session_days(ts), ref)


def test_empty_and_single_bar_inputs():
    r = simulate(make_bars([[]]), np.array([]), SimSettings())
    assert r.trades.empty and len(r.equity) == 0 and len(r.daily_equity) == 0
    r = simulate(make_bars([[(10, 10, 10, 10)]]), np.array([0.9]), SimSettings())
    assert r.trades.empty and list(r.equity) == [100_000.0]


@pytest.mark.parametrize(
    ("field", "value"),
    [("capital", 0.0), ("long_threshold", 1.5), ("short_threshold", 0.6), ("hold_bars", 0),
     ("hold_bars", 2.5), ("slippage_bps", -1.0), ("position_fraction", 0.0),
     ("max_volume_fraction", 1.5), ("min_commission", float("nan"))],
)  # fmt: skip
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"SimSettings.{field}"):
        SimSettings(**{field: value})


def test_bad_inputs_are_rejected_with_the_rule():
    bars = make_bars([flat_bars([10, 11, 12])])
    with pytest.raises(ValueError, match="one probability per bar"):
        simulate(bars, np.array([0.5, 0.5]), SimSettings())
    with pytest.raises(ValueError, match=r"proba must lie in \[0, 1\].*index 1"):
        simulate(bars, np.array([0.5, 1.5, 0.5]), SimSettings())
    with pytest.raises(ValueError, match="missing column"):
        simulate(bars.drop(columns="volume"), np.full(3, 0.5), SimSettings())
    with pytest.raises(ValueError, match="strictly increasing; row 2"):
        simulate(bars.iloc[[0, 2, 1]], np.full(3, 0.5), SimSettings())
    naive = bars.assign(timestamp=bars.timestamp.dt.tz_localize(None))
    with pytest.raises(ValueError, match="timezone-aware"):
        simulate(naive, np.full(3, 0.5), SimSettings())
    with pytest.raises(ValueError, match=r"bars.close must be finite and > 0; row 1"):
        simulate(bars.assign(close=[10, np.nan, 12]), np.full(3, 0.5), SimSettings())
    with pytest.raises(ValueError, match=r"bars.high must be finite and > 0; row 2"):
        simulate(bars.assign(high=[10, 11, np.inf]), np.full(3, 0.5), SimSettings())
    with pytest.raises(ValueError, match=r"bars.volume must be finite and >= 0; row 0"):
        simulate(bars.assign(volume=[-1.0, 1, 1]), np.full(3, 0.5), SimSettings())
    with pytest.raises(ValueError, match=r"proba must lie in \[0, 1\].*index 2 has -inf"):
        simulate(bars, np.array([0.5, np.nan, -np.inf]), SimSettings())
    with pytest.raises(TypeError, match="SimSettings"):
        simulate(bars, np.full(3, 0.5), {"capital": 1.0})


def test_from_config_maps_the_backtest_section():
    from vpt_ray.core.config import BacktestConfig

    bt = BacktestConfig(start="2024-07-08", end="2024-12-31", slippage_bps=2.0, allow_short=False)
    s = SimSettings.from_config(bt, capital=2500.0, hold_bars=7)
    assert (s.capital, s.hold_bars, s.slippage_bps, s.allow_short) == (2500.0, 7, 2.0, False)
    assert s.long_threshold == bt.long_threshold and s.flat_at_close == bt.flat_at_close


def test_accounting_identities_on_random_data():
    rng = np.random.default_rng(11)
    sessions = [flat_bars(list(20 + np.cumsum(rng.normal(0, 0.05, 60)))) for _ in range(5)]
    settings = dict(capital=50_000.0, commission_per_share=0.0035, min_commission=0.35,
                    slippage_bps=1.0, hold_bars=4, max_volume_fraction=0.05)  # fmt: skip
    r = run(sessions, rng.uniform(0.4, 0.6, 300), **settings)
    t = r.trades
    assert len(t) > 20
    assert r.equity.iloc[-1] == pytest.approx(50_000 + t.pnl.sum(), rel=1e-12)
    assert not math.isclose(t.pnl.sum(), 0.0)
    # every trade opens and closes in one session
    assert (t.entry_time.dt.tz_convert("America/New_York").dt.date
            == t.exit_time.dt.tz_convert("America/New_York").dt.date).all()  # fmt: skip
    assert list(r.daily_equity) == list(r.equity.iloc[[59, 119, 179, 239, 299]])
    assert (t.bars_held <= 4).all() and (t.shares >= 1).all()


# --- agreement with independent simulations ---------------------------------------------------


def random_market(seed: int, n_days: int = 6, per_day: int = 390) -> pd.DataFrame:
    """Random-walk minute bars over `n_days` regular sessions (09:30-16:00 New York)."""
    rng = np.random.default_rng(seed)
    ny = "America/New_York"
    stamps = [
        pd.date_range(d + pd.Timedelta(hours=9.5), periods=per_day, freq="min", tz=ny)
        for d in pd.bdate_range("2024-03-06", periods=n_days)  # spans the March DST switch
    ]
    n = n_days * per_day
    close = 15 * np.exp(np.cumsum(rng.normal(0, 0.0012, n)))
    open_ = close * np.exp(rng.normal(0, 0.0006, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.0015, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.0015, n))
    return pd.DataFrame({
        "timestamp": stamps[0].append(stamps[1:]).tz_convert("UTC"),
        "open": open_, "high": high, "low": low, "close": close,
        "volume": rng.integers(500, 40_000, n).astype(float),
    })  # fmt: skip


def random_proba(seed: int, n: int) -> np.ndarray:
    p = np.random.default_rng(seed).uniform(0.40, 0.60, n)
    p[::17] = np.nan  # some bars have no prediction
    return p


def reference_simulation(bars: pd.DataFrame, proba: np.ndarray, s: SimSettings):
    """The rules restated as a plain Python loop over bars, written independently of the kernel
    (shares found by search, sessions from pandas' own tz conversion). Returns (trades, equity)."""
    o, h, lo, c, v = (bars[k].tolist() for k in ("open", "high", "low", "close", "volume"))
    day = bars.timestamp.dt.tz_convert("America/New_York").dt.date.tolist()
    n, slip = len(o), s.slippage_bps / 10_000

    def signal(j: int) -> int:
        p = proba[j]
        return (
            0
            if math.isnan(p)
            else 1
            if p >= s.long_threshold
            else -1
            if p <= s.short_threshold
            else 0
        )

    def fill(ref: float, j: int, buy: bool) -> float:
        cost = ref * slip + ((h[j] - lo[j]) / 2 if s.half_spread else 0.0)
        return ref + cost if buy else ref - cost

    def fee(shares: int) -> float:
        return max(s.min_commission, shares * s.commission_per_share)

    cash, pos, trades, equity = s.capital, None, [], []

    def close_out(j: int, ref: float, reason: str) -> None:
        nonlocal cash, pos
        px = fill(ref, j if reason in ("session_close", "end_of_data") else j - 1,
                  buy=pos["side"] < 0)  # fmt: skip
        cash += pos["side"] * pos["shares"] * px - fee(pos["shares"])
        pnl = pos["side"] * pos["shares"] * (px - pos["px"]) - pos["fee"] - fee(pos["shares"])
        trades.append(dict(entry_bar=pos["bar"], exit_bar=j, side=pos["side"], shares=pos["shares"],
                           entry_price=pos["px"], exit_price=px, pnl=pnl, exit_reason=reason,
                           commission=pos["fee"] + fee(pos["shares"])))  # fmt: skip
        pos = None

    for j in range(n):
        prev = signal(j - 1) if j else 0
        if pos is not None:
            if s.exit_on_reversal and prev == -pos["side"]:
                close_out(j, o[j], "reversal")
            elif not s.exit_on_reversal and j - pos["bar"] == s.hold_bars:
                close_out(j, o[j], "hold")
        wants = prev == 1 or (prev == -1 and s.allow_short)
        if pos is None and wants and (not s.flat_at_close or day[j] == day[j - 1]):
            px = fill(o[j], j - 1, buy=prev == 1)  # at the open only bar j - 1 is known
            budget = s.position_fraction * cash
            shares = min(int(budget // px), int(s.max_volume_fraction * v[j - 1]))
            while shares > 0 and shares * px + fee(shares) > budget:
                shares -= 1
            if shares >= 1 and px > 0:
                cash -= prev * shares * px + fee(shares)
                pos = dict(side=prev, shares=shares, bar=j, px=px, fee=fee(shares))
        session_end = j == n - 1 or day[j + 1] != day[j]
        if pos is not None and (j == n - 1 or (s.flat_at_close and session_end)):
            close_out(j, c[j], "session_close" if s.flat_at_close else "end_of_data")
        equity.append(cash + (pos["side"] * pos["shares"] * c[j] if pos else 0.0))
    return pd.DataFrame(trades), np.array(equity)


SCENARIOS = {
    "defaults": dict(),
    "costly_small_account": dict(capital=3_000.0, commission_per_share=0.01, min_commission=1.5,
                                 slippage_bps=2.0, half_spread=True),
    "reversal_overnight": dict(exit_on_reversal=True, flat_at_close=False, hold_bars=3),
    "long_only_fraction": dict(allow_short=False, position_fraction=0.4, hold_bars=30,
                               max_volume_fraction=1.0),
    "volume_bound": dict(capital=5_000_000.0, max_volume_fraction=0.002, hold_bars=5),
    "wide_band_overnight": dict(long_threshold=0.58, short_threshold=0.42, flat_at_close=False,
                                hold_bars=400),
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_agrees_with_a_plain_python_reference_loop(scenario):
    settings = SimSettings(**{"capital": 100_000.0, "hold_bars": 15, **SCENARIOS[scenario]})
    for ticker in range(3):  # multi-ticker, multi-day
        bars = random_market(100 + ticker)
        proba = random_proba(200 + ticker, len(bars))
        got = simulate(bars, proba, settings)
        ref_trades, ref_equity = reference_simulation(bars, proba, settings)
        assert len(got.trades) == len(ref_trades) > 0
        for col in ("entry_bar", "exit_bar", "side", "shares", "exit_reason"):
            assert got.trades[col].tolist() == ref_trades[col].tolist(), col
        for col in ("entry_price", "exit_price", "pnl", "commission"):
            np.testing.assert_allclose(got.trades[col], ref_trades[col], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(got.equity.to_numpy(), ref_equity, rtol=1e-12)
        total = got.equity.iloc[-1] / settings.capital - 1
        assert total == pytest.approx(ref_equity[-1] / settings.capital - 1, rel=1e-9)


@njit
def _rules_signal_nb(c, sig, same_session, last_bar, entry_bar, hold_bars, exit_on_reversal,
                     allow_short, flat_at_close):  # fmt: skip
    """vectorbt signal function on a time axis of 3 steps per bar: 0 = exits at the open,
    1 = entry at the open, 2 = the close (session-end exit). Position state is vectorbt's own."""
    j, phase, col = c.i // 3, c.i % 3, c.col
    side = 1 if c.position_now > 0 else -1 if c.position_now < 0 else 0
    if phase == 0 and side != 0:
        reversal = sig[j - 1, col] == -side
        if reversal if exit_on_reversal else j - entry_bar[col] >= hold_bars:
            return False, side == 1, False, side == -1
    elif phase == 1 and side == 0 and j > 0 and (same_session[j, col] or not flat_at_close):
        if sig[j - 1, col] == 1:
            entry_bar[col] = j
            return True, False, False, False
        if sig[j - 1, col] == -1 and allow_short:
            entry_bar[col] = j
            return False, False, True, False
    elif (
        phase == 2 and side != 0 and (j == sig.shape[0] - 1 or (flat_at_close and last_bar[j, col]))
    ):
        return False, side == 1, False, side == -1
    return False, False, False, False


def vectorbt_simulation(bars: list[pd.DataFrame], proba: list[np.ndarray], s: SimSettings):
    """The same signals, fills and costs through vectorbt's `Portfolio.from_signals`: one column
    per ticker, 3 steps per bar (see `_rules_signal_nb`); vectorbt does all the accounting
    (slippage, fees, cash, positions, value). What it cannot express is kept out of the scenarios:
    sizes are the volume cap (capital large enough), and commission is either a flat minimum
    per order (`commission_per_share` 0) or per share without a minimum (long only, so each step's
    order side is known and a per-share fee becomes a fee rate)."""
    import vectorbt as vbt

    n, k = len(bars[0]), len(bars)

    def stack(f):
        return np.column_stack([f(b) for b in bars])

    o, c, vol = (stack(lambda b, col=col: b[col].to_numpy()) for col in ("open", "close", "volume"))
    half = stack(lambda b: (b.high - b.low).to_numpy() / 2) if s.half_spread else np.zeros((n, k))
    day = stack(lambda b: b.timestamp.dt.tz_convert("America/New_York").dt.strftime("%Y%m%d"))
    same = np.vstack([np.zeros((1, k), bool), day[1:] == day[:-1]])  # bar j in bar j-1's session
    last = np.vstack([day[1:] != day[:-1], np.ones((1, k), bool)])  # bar j ends its session
    p = np.column_stack(proba)
    sig = np.where(p >= s.long_threshold, 1, np.where(p <= s.short_threshold, -1, 0))
    price = np.stack([o, o, c], axis=1).reshape(3 * n, k)
    # fills at the open know bar j - 1 (range, volume); the close step knows bar j
    prev = lambda a: np.vstack([np.zeros((1, k)), a[:-1]])  # noqa: E731
    half_steps = np.stack([prev(half), prev(half), half], axis=1).reshape(3 * n, k)
    slippage = s.slippage_bps / 1e4 + half_steps / price
    if s.commission_per_share:
        if s.allow_short or s.min_commission:
            raise ValueError("per-share fees map to vectorbt only long-only and without a minimum")
        buy_step = (np.arange(3 * n) % 3 == 1)[:, None]
        adj = np.where(buy_step, price * (1 + slippage), price * (1 - slippage))
        fees, fixed_fees = s.commission_per_share / adj, np.zeros_like(price)
    else:  # arrays in both branches: one numba compilation of vectorbt's simulator
        fees, fixed_fees = np.zeros_like(price), np.full_like(price, s.min_commission)
    return vbt.Portfolio.from_signals(
        price,
        signal_func_nb=_rules_signal_nb,
        signal_args=(
            sig,
            same,
            last,
            np.full(k, -1),
            s.hold_bars,
            s.exit_on_reversal,
            s.allow_short,
            s.flat_at_close,
        ),  # fmt: skip
        size=np.repeat(np.floor(s.max_volume_fraction * prev(vol)), 3, axis=0),
        price=price,
        fees=fees,
        fixed_fees=fixed_fees,
        slippage=slippage,
        init_cash=s.capital,
        freq="20s",
    )


VBT_SCENARIOS = {
    "long_short_hold_min_fee": dict(min_commission=1.0, slippage_bps=1.0, half_spread=True),
    "long_only_per_share": dict(allow_short=False, commission_per_share=0.005, min_commission=0.0,
                                slippage_bps=2.0, hold_bars=7),
    "reversal_overnight": dict(exit_on_reversal=True, flat_at_close=False, min_commission=0.35),
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(VBT_SCENARIOS))
def test_agrees_with_vectorbt_from_signals(scenario):
    pytest.importorskip("vectorbt")
    from vpt_ray.backtest.sleeves import combine

    kw = {"commission_per_share": 0.0, "hold_bars": 15, **VBT_SCENARIOS[scenario]}
    s = SimSettings(capital=1_000_000.0, max_volume_fraction=0.01, **kw)
    tickers = ["AAA", "BBB", "CCC"]
    bars = [random_market(300 + i) for i in range(len(tickers))]
    proba = [random_proba(400 + i, len(bars[0])) for i in range(len(tickers))]
    pf = vectorbt_simulation(bars, proba, s)
    ours = {t: simulate(b, p, s) for t, b, p in zip(tickers, bars, proba, strict=True)}
    vbt_trades = pf.trades.count().to_numpy()
    vbt_value = pf.value().to_numpy()[2::3]  # value at each bar's close
    for i, (t, r) in enumerate(ours.items()):
        volume_cap = np.floor(0.01 * bars[i].volume.to_numpy()[r.trades.entry_bar - 1])
        assert (r.trades.shares == volume_cap).all()  # the regime vectorbt can express
        assert len(r.trades) == vbt_trades[i] > 50, t
        ret = r.equity.iloc[-1] / s.capital - 1
        assert ret == pytest.approx(pf.total_return().iloc[i], rel=1e-9, abs=0), t
        np.testing.assert_allclose(r.equity.to_numpy(), vbt_value[:, i], rtol=1e-12)
    # the multi-ticker roll-up: same total return as vectorbt's columns summed
    equity, stats = combine(ours, s.capital * len(tickers))
    assert stats["trades"] == vbt_trades.sum()
    vbt_total = vbt_value[-1].sum() / (s.capital * len(tickers)) - 1
    assert stats["total_return"] == pytest.approx(vbt_total, rel=1e-9, abs=0)


def daily(opens: list[float], first_day: str = "2024-01-02") -> pd.DataFrame:
    """Daily bars stamped like Polygon's (midnight New York time), one session each."""
    days = pd.bdate_range(first_day, periods=len(opens))
    ts = days.tz_localize("America/New_York").tz_convert("UTC")
    o = np.asarray(opens, float)
    return pd.DataFrame({"timestamp": ts, "open": o, "high": o + 1, "low": o - 1, "close": o + 0.5,
                         "volume": 1e9})  # fmt: skip


def test_daily_bars_hold_across_sessions_and_flat_at_close_is_refused():
    # signal at day 0's close -> buy at day 1's open (11); hold 2 bars -> sell at day 3's open (13)
    bars, p = daily([10, 11, 12, 13, 14]), [0.6, NAN, NAN, NAN, NAN]
    with pytest.raises(ValueError, match="one bar a session .* can never trade"):
        simulate(bars, np.asarray(p), SimSettings(capital=1100.0, hold_bars=2, **FREE))
    from vpt_ray.core.config import load_config

    bt = load_config(1).backtest.model_copy(update={"commission_per_share": 0.0,
        "min_commission": 0.0, "slippage_bps": 0.0, "max_volume_fraction": 1.0})  # fmt: skip
    assert bt.flat_at_close  # the default stays on for intraday bars ...
    settings = SimSettings.from_config(bt, capital=1100.0, hold_bars=2, daily=True)
    assert not settings.flat_at_close  # ... and does not apply to whole-session bars
    r = simulate(bars, np.asarray(p), settings)
    (t,) = r.trades.itertuples()
    assert (t.entry_bar, t.exit_bar, t.entry_price, t.exit_price) == (1, 3, 11, 13)
    assert (t.exit_reason, t.bars_held, t.shares) == ("hold", 2, 100)
    assert t.exit_time.tz_convert("America/New_York").date() == dt.date(2024, 1, 5)
    np.testing.assert_allclose(r.daily_equity.to_numpy(), [1100, 1150, 1250, 1300, 1300])
    # held to the data's end: closed at the last bar's close
    r = simulate(bars, np.asarray([NAN, NAN, NAN, 0.6, NAN]), settings)
    (t,) = r.trades.itertuples()
    assert (t.entry_bar, t.exit_bar, t.exit_price, t.exit_reason) == (4, 4, 14.5, "end_of_data")
