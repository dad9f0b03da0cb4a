"""The phase 5 backtest universe: the band rule on hand-made bars, and one synthetic end to end."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from vpt_ray.core.config import ConfigError, UniverseConfig, load_config
from vpt_ray.data.chain import expected_sessions
from vpt_ray.data.local import read_bars, ticker_path
from vpt_ray.data.universe import UniverseError, select_universe, summary_line

START = dt.date(2024, 7, 8)  # backtest start: a Monday
SESSIONS = expected_sessions("XNYS", dt.date(2024, 5, 1), dt.date(2024, 7, 31))
BEFORE = [d for d in SESSIONS if d < START]
AFTER = [d for d in SESSIONS if d >= START]


def bars(closes: dict[dt.date, float], volume: float = 1000.0) -> pd.DataFrame:
    """Two bars per session (10:00 and 15:59 New York); the second carries the session close."""
    rows = []
    for d, c in closes.items():
        for hh, mm, px in ((10, 0, c * 3), (15, 59, c)):  # the first bar's price must not count
            ts = pd.Timestamp(dt.datetime(d.year, d.month, d.day, hh, mm), tz="America/New_York")
            rows.append({"timestamp": ts.tz_convert("UTC"), "close": px, "volume": volume})
    return pd.DataFrame(rows)


def flat(price: float, days: list[dt.date] = BEFORE, volume: float = 1000.0) -> pd.DataFrame:
    return bars(dict.fromkeys(days, price), volume)


def rules(**kw) -> UniverseConfig:
    base = {"lookback_days": 20, "min_tickers": 1, "max_tickers": 100}
    return UniverseConfig(**{**base, **kw})


def test_band_edges_are_inclusive_and_rejections_say_why():
    cands = {"LOW": 9.99, "EDGE10": 10.0, "MID": 15.0, "EDGE20": 20.0, "HIGH": 20.01}
    sel = select_universe({t: flat(p) for t, p in cands.items()}, START, rules())
    assert sel.selected == ["EDGE10", "EDGE20", "MID"]
    assert "below [10, 20]" in sel.rejected["LOW"] and "9.99" in sel.rejected["LOW"]
    assert "above [10, 20]" in sel.rejected["HIGH"]
    assert sel.avg_price["MID"] == pytest.approx(15.0)  # session closes, not the 3x first bar
    section = sel.section()
    assert [r["ticker"] for r in section["selected"]] == ["EDGE10", "EDGE20", "MID"]
    assert section["selected"][0]["reason"] == "average close 10.00 in [10, 20]"
    assert {r["ticker"] for r in section["rejected"]} == {"LOW", "HIGH"}
    assert section["window"] == [str(BEFORE[-20]), str(BEFORE[-1])]
    assert "3 of 5 candidates" in summary_line(section)


def test_prices_after_backtest_start_never_change_the_selection():
    quiet = flat(15.0, BEFORE)
    spiked = pd.concat([quiet, flat(1000.0, AFTER)], ignore_index=True)  # after start: ignored
    crashed = pd.concat([flat(15.0, BEFORE), flat(0.5, AFTER)], ignore_index=True)
    a = select_universe({"X": quiet, "Y": flat(15.0)}, START, rules())
    b = select_universe({"X": spiked, "Y": crashed}, START, rules())
    assert a.selected == b.selected == ["X", "Y"]
    assert a.avg_price == b.avg_price
    # the same spike one session before the start is inside the lookback and does count
    early = bars({**dict.fromkeys(BEFORE, 15.0), BEFORE[-1]: 1000.0})
    c = select_universe({"X": early, "Y": flat(15.0)}, START, rules())
    assert c.selected == ["Y"] and "above" in c.rejected["X"]


def test_only_the_last_lookback_sessions_count():
    old, recent = BEFORE[:-20], BEFORE[-20:]
    df = pd.concat([flat(100.0, old), flat(12.0, recent)], ignore_index=True)
    sel = select_universe({"X": df}, START, rules(lookback_days=20))
    assert sel.selected == ["X"] and sel.avg_price["X"] == pytest.approx(12.0)
    assert sel.sessions["X"] == 20
    with pytest.raises(UniverseError, match="only 0 of 1"):  # a longer lookback sees the $100s
        select_universe({"X": df}, START, rules(lookback_days=len(BEFORE)))


def test_max_tickers_keeps_the_most_liquid_and_lists_the_cut():
    cands = {f"T{i}": flat(15.0, volume=1000.0 * (i + 1)) for i in range(5)}
    sel = select_universe(cands, START, rules(max_tickers=3))
    assert sel.selected == ["T2", "T3", "T4"]  # highest average dollar volume
    assert set(sel.rejected) == {"T0", "T1"}
    assert all("beyond universe.max_tickers (3)" in r for r in sel.rejected.values())
    assert sel.dollar_volume["T4"] == pytest.approx((45.0 + 15.0) * 5000.0)  # both bars, per day


def test_too_few_in_band_is_a_clear_error():
    cands = {"A": flat(15.0), "B": flat(50.0), "C": None, "D": flat(12.0)}
    with pytest.raises(UniverseError) as err:
        select_universe(cands, START, rules(min_tickers=3, max_tickers=10))
    msg = str(err.value)
    assert "only 2 of 4 candidates" in msg and "universe.min_tickers is 3" in msg
    assert "1 without data" in msg


def test_missing_or_short_history_is_rejected_as_no_data():
    empty = flat(15.0).iloc[0:0]
    short = flat(15.0, BEFORE[-5:])  # 5 of 20 sessions: fewer than half
    only_after = flat(15.0, AFTER)
    sel = select_universe(
        {"NONE": None, "EMPTY": empty, "SHORT": short, "LATE": only_after, "OK": flat(15.0)},
        START,
        rules(),
    )
    assert sel.selected == ["OK"]
    assert sel.rejected["NONE"] == sel.rejected["EMPTY"] == "no data"
    assert sel.rejected["SHORT"].startswith("no data: 5 of 20 lookback sessions")
    assert sel.rejected["LATE"].startswith("no data: 0 of 20")


def test_config_rules():
    assert not UniverseConfig().active
    assert not UniverseConfig(enabled=True).active  # no candidates: off
    assert UniverseConfig(enabled=True, candidates=["A"], min_tickers=1).active
    for bad, field in (
        ({"min_price": 20, "max_price": 10}, "universe.min_price"),
        ({"min_tickers": 10, "max_tickers": 5}, "universe.min_tickers"),
        ({"candidates": ["A", "A"]}, "duplicates"),
        ({"enabled": True, "candidates": ["A", "B"], "min_tickers": 3}, "fewer than"),
    ):
        with pytest.raises(ValueError, match=field):
            UniverseConfig(**bad)
    with pytest.raises(ConfigError, match="universe"):
        load_config(1, overrides=["universe.lookback_days=0"])


def test_phase5_turns_it_on_with_a_broad_candidate_list():
    cfg = load_config(5)
    u = cfg.universe
    assert u.active and (u.min_price, u.max_price) == (10.0, 20.0)
    assert len(u.candidates) >= 150 and (u.min_tickers, u.max_tickers) == (50, 100)


def test_stage_selects_synthetic_tickers_and_builds_their_backtest_data(ray_session, workspace):
    """End to end on the synthetic market: chain -> selection -> chain -> feature task."""
    from conftest import tiny_overrides

    from vpt_ray.pipeline import stages

    cands = ["VALE", "INTC", "PFE", "CDE", "CVX", "GILD"]
    cfg = load_config(
        1,
        overrides=tiny_overrides(
            workspace,
            "data.start=2024-04-01",
            "data.end=2024-06-28",
            "backtest.start=2024-07-08",
            "backtest.end=2024-07-12",
            "universe.enabled=true",
            f"universe.candidates=[{','.join(cands)}]",
            "universe.min_tickers=1",
            "universe.max_tickers=6",
        ),
    )
    section, data, store = stages.backtest_universe(cfg, workspace / "ufeat")
    chosen = [r["ticker"] for r in section["selected"]]
    assert chosen and set(chosen) == set(data.tickers) == set(store)
    assert section["selected_count"] + len(section["rejected"]) == len(cands)
    # the selection agrees with an independent average of the session closes read back
    first, last = (dt.date.fromisoformat(d) for d in section["window"])
    for t in cands:
        df = read_bars(ticker_path(cfg.data.dir, t, synthetic=True), first, last)
        closes = df.groupby(df["timestamp"].dt.tz_convert("America/New_York").dt.date)["close"]
        avg = float(closes.last().mean())
        assert (t in chosen) == (10 <= avg <= 20), (t, avg)
    # the selected tickers' features reach through the backtest window
    for t in chosen:
        feats = pd.read_parquet(store[t]["path"], columns=["session"])
        sess = set(feats["session"].dt.date)
        assert dt.date(2024, 7, 12) in sess and first in sess
        assert store[t]["test_bars"] > 0
    assert np.isfinite([r["avg_price"] for r in section["selected"]]).all()
