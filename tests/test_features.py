"""Features are causal, labels stay inside their session, the synthetic market is deterministic."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vpt_ray.data.synthetic import SyntheticParams, generate_ticker, ticker_profile
from vpt_ray.features.causal import META_COLUMNS, build_features, feature_names

WINDOWS = [5, 15, 60]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_ticker(
        SyntheticParams(3, 1.0, 0.01), "CAUS", dt.date(2024, 5, 1), dt.date(2024, 5, 8)
    )


def test_at_least_a_dozen_float32_features(bars):
    f = build_features(bars, WINDOWS, 15, 1)
    names = feature_names(WINDOWS)
    assert len(names) >= 12 and len(set(names)) == len(names)
    assert list(f.columns) == META_COLUMNS + names
    assert all(f[n].dtype == np.float32 for n in names)
    assert len(f) == len(bars)


@pytest.mark.parametrize("cut", [700, 1500, 2200])
def test_every_feature_ignores_the_future(bars, cut):
    """Replace every bar after `cut` with garbage: features at bars <= cut must not move."""
    rng = np.random.default_rng(cut)
    garbage = bars.copy()
    n = len(bars) - cut - 1
    scale = np.exp(rng.normal(0, 0.5, n))
    for col in ("open", "high", "low", "close", "vwap"):
        garbage.loc[cut + 1 :, col] = bars.loc[cut + 1 :, col].to_numpy() * scale
    garbage.loc[cut + 1 :, "high"] = (
        garbage.loc[cut + 1 :, ["open", "close", "vwap", "high"]].max(axis=1) * 1.01
    )
    garbage.loc[cut + 1 :, "low"] = (
        garbage.loc[cut + 1 :, ["open", "close", "vwap", "low"]].min(axis=1) * 0.99
    )
    garbage.loc[cut + 1 :, "volume"] = rng.integers(1, 10**6, n).astype(float)
    garbage.loc[cut + 1 :, "transactions"] = rng.integers(1, 10**4, n)
    a = build_features(bars, WINDOWS, 15, 1)
    b = build_features(garbage, WINDOWS, 15, 1)
    names = feature_names(WINDOWS)
    pd.testing.assert_frame_equal(a.loc[:cut, names], b.loc[:cut, names])
    assert not a.loc[cut + 1 :, names].equals(b.loc[cut + 1 :, names])


def test_labels_never_cross_the_session_close(bars):
    h = 15
    f = build_features(bars, WINDOWS, h, 1)
    labelled = f[f["y"].notna()]
    sess = f["session"].to_numpy()
    idx = labelled.index.to_numpy()
    assert (sess[idx + h] == sess[idx]).all()
    # the last h bars of each session carry no label
    last = f.groupby("session").tail(h)
    assert last["y"].isna().all()
    close = bars["close"].to_numpy()
    assert (labelled["y"].to_numpy() == (close[idx + h] > close[idx])).all()
    assert (labelled["label_end"].to_numpy() > labelled["pos"].to_numpy()).all()


def test_clock_positions_are_shared_across_tickers():
    p = SyntheticParams(3, 1.0, 0.05)
    a = build_features(
        generate_ticker(p, "AAA", dt.date(2024, 5, 1), dt.date(2024, 5, 2)), WINDOWS, 5, 1
    )
    b = build_features(
        generate_ticker(p, "BBB", dt.date(2024, 5, 1), dt.date(2024, 5, 2)), WINDOWS, 5, 1
    )
    common = a.merge(b, on="timestamp")
    assert len(common) > 600
    assert (common["pos_x"] == common["pos_y"]).all()


def test_synthetic_is_deterministic_and_range_independent():
    p = SyntheticParams(5, 1.0, 0.002)
    long = generate_ticker(p, "DET", dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    short = generate_ticker(p, "DET", dt.date(2024, 1, 16), dt.date(2024, 1, 19))
    again = generate_ticker(p, "DET", dt.date(2024, 1, 16), dt.date(2024, 1, 19))
    pd.testing.assert_frame_equal(short, again)
    sub = long[long["timestamp"].isin(short["timestamp"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(sub, short)
    other = generate_ticker(
        SyntheticParams(6, 1.0, 0.002), "DET", dt.date(2024, 1, 16), dt.date(2024, 1, 19)
    )
    assert not np.allclose(other["close"].to_numpy()[:100], short["close"].to_numpy()[:100])


def test_synthetic_market_is_realistic():
    p = SyntheticParams(7, 1.0, 0.002)
    df = generate_ticker(p, "REAL", dt.date(2024, 11, 25), dt.date(2024, 11, 29))
    per_day = df.groupby(df["timestamp"].dt.tz_convert("America/New_York").dt.date).size()
    assert per_day.loc[dt.date(2024, 11, 29)] <= 210  # day after Thanksgiving: half day
    assert dt.date(2024, 11, 28) not in per_day.index  # Thanksgiving: closed
    assert (per_day.drop(dt.date(2024, 11, 29)) <= 390).all()
    assert (per_day.drop(dt.date(2024, 11, 29)) > 380).all()  # a few missing minutes
    r = np.diff(np.log(df["close"].to_numpy()))
    kurt = ((r - r.mean()) ** 4).mean() / r.var() ** 2
    assert kurt > 4  # fat tails
    minute = df["timestamp"].dt.tz_convert("America/New_York")
    vol = df.groupby(minute.dt.hour)["volume"].mean()
    assert vol.loc[9] > vol.loc[12] < vol.loc[15]  # U-shaped volume
    prices = [ticker_profile(7, t).base_price for t in [f"T{i}" for i in range(60)]]
    assert 10 <= sum(10 <= x <= 20 for x in prices) <= 40  # some tickers in the $10-20 band


def test_clock_starts_at_the_calendars_first_session_not_the_generators_epoch():
    import vpt_ray.features.causal as features
    from vpt_ray.core.calendar import calendar_bounds
    from vpt_ray.features.causal import clock_info, clock_positions

    source = Path(features.__file__).read_text()
    assert "vpt_ray.data.synthetic" not in source  # no clock from the generator's epoch
    ts = pd.Series(pd.DatetimeIndex(["1990-01-02 14:30", "2014-12-31 14:31", "2015-01-02 14:30"],
                                    tz="UTC"))  # fmt: skip
    pos = clock_positions(ts, 1)
    assert pos[0] == 0 and pos[1] % 390 == 1 and pos[2] == pos[1] - 1 + 390  # 2015-01-01: closed
    assert clock_positions(ts, 390).tolist() == (pos // 390).tolist()
    assert clock_info(5) == {"calendar": "XNYS", "origin": str(calendar_bounds()[0]), "slots": 78}
    with pytest.raises(ValueError, match=r"outside the XNYS calendar's supported sessions "
                       r"1990-01-02\.\..* \(first: 1989-12-29\)"):  # fmt: skip
        clock_positions(pd.Series(pd.DatetimeIndex(["1989-12-29 15:00"], tz="UTC")), 1)
    with pytest.raises(ValueError, match=r"not a XNYS session \(first: 2024-01-06\)"):
        clock_positions(pd.Series(pd.DatetimeIndex(["2024-01-06 15:00"], tz="UTC")), 1)


def test_daily_labels_span_sessions_and_files_without_trade_counts_keep_their_features():
    from vpt_ray.features.causal import complete_rows, feature_names

    days = pd.bdate_range("2021-01-04", periods=260)
    days = days[~days.isin(pd.to_datetime(["2021-01-18", "2021-02-15", "2021-04-02",
                                           "2021-05-31", "2021-07-05", "2021-09-06",
                                           "2021-11-25", "2021-12-24"]))]  # fmt: skip
    rng = np.random.default_rng(1)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
    bars = pd.DataFrame({
        "timestamp": days.tz_localize("America/New_York").tz_convert("UTC"),
        "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
        "volume": rng.uniform(1e6, 2e6, len(days)), "vwap": close, "transactions": 0,
    })  # fmt: skip
    f = build_features(bars, WINDOWS, 3, 390)
    y = f["y"].to_numpy()
    assert np.isnan(y[-3:]).all() and not np.isnan(y[:-3]).any()  # every bar but the last 3
    assert ((f["label_end"] - f["pos"]).to_numpy()[:-3] == 3).all()  # 3 sessions ahead
    assert (y[:-3] == (close[3:] > close[:-3])).all()
    X = f[feature_names(WINDOWS)].to_numpy()
    assert (f["trades_z"].dropna() == 0).all()  # no trade counts: constant, not undefined
    assert complete_rows(X).sum() > 100


def test_five_minute_bins_start_at_the_calendar_open_when_0930_has_no_trade():
    from vpt_ray.data.resample import resample_bars

    p = SyntheticParams(3, 1.0, 0.0)
    full = generate_ticker(p, "AAA", dt.date(2024, 5, 1), dt.date(2024, 5, 1))
    late = full.iloc[1:].reset_index(drop=True)  # no trade in the 09:30 minute
    a, b = resample_bars(full, "5min"), resample_bars(late, "5min")
    assert len(a) == len(b) == 78
    assert b["timestamp"].iloc[0] == pd.Timestamp("2024-05-01 13:31", tz="UTC")
    assert (a["timestamp"].iloc[1:] == b["timestamp"].iloc[1:]).all()  # same 09:35... grid
    assert (a["close"] == b["close"]).all()
    from vpt_ray.features.causal import clock_positions

    assert (clock_positions(a["timestamp"], 5) == clock_positions(b["timestamp"], 5)).all()


def test_sixty_minute_bars_label_inside_the_session_on_seven_slots():
    from vpt_ray.data.resample import resample_bars
    from vpt_ray.features.causal import clock_positions

    p = SyntheticParams(3, 1.0, 0.002)
    hourly = resample_bars(
        generate_ticker(p, "HRS", dt.date(2024, 5, 1), dt.date(2024, 5, 3)), "60min"
    )
    assert len(hourly) == 3 * 7  # 09:30, 10:30, ..., 15:30 (30 minutes)
    f = build_features(hourly, WINDOWS, 3, 60)
    per_session = f.groupby("session")["y"].apply(lambda y: int(y.notna().sum()))
    assert per_session.tolist() == [4, 4, 4]  # 7 bars - horizon 3: never across the close
    pos = clock_positions(hourly["timestamp"], 60)
    assert (pos % 7).tolist() == list(range(7)) * 3 and (np.diff(pos) > 0).all()
