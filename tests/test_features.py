"""Features are causal, labels stay inside their session, the synthetic market is deterministic."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from vpt_ray.data.synthetic import SyntheticParams, generate_ticker, ticker_profile
from vpt_ray.features import META_COLUMNS, build_features, feature_names

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
