"""The data contract: every broken rule is rejected naming source, rule and an example row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vpt_ray.data import local
from vpt_ray.data.bars import BarDataError, validate_bars
from vpt_ray.data.resample import resample_bars
from vpt_ray.data.synthetic import SyntheticParams, generate_ticker


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_ticker(
        SyntheticParams(1, 1.0, 0.0), "TEST", dt.date(2024, 3, 4), dt.date(2024, 3, 5)
    )


def _broken(bars: pd.DataFrame, **changes) -> pd.DataFrame:
    df = bars.copy()
    for col, (i, value) in changes.items():
        df.loc[i, col] = value
    return df


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"close": (5, np.nan)}, "NaN or infinite price"),
        ({"open": (5, 0.0)}, "zero or negative price"),
        ({"low": (5, -1.0)}, "zero or negative price"),
        ({"volume": (5, -10.0)}, "negative or NaN volume"),
    ],
)
def test_bad_values_are_rejected(bars, change, rule):
    with pytest.raises(BarDataError, match=rule) as err:
        validate_bars(_broken(bars, **change), "f.parquet")
    assert "f.parquet" in str(err.value) and "row 5" in str(err.value)


def test_high_below_low(bars):
    df = bars.copy()
    df.loc[7, "high"] = df.loc[7, "low"] * 0.99
    with pytest.raises(BarDataError, match=r"high < low|outside \[low, high\]"):
        validate_bars(df, "f")


def test_vwap_outside_range(bars):
    df = bars.copy()
    df.loc[3, "vwap"] = df.loc[3, "high"] * 1.05
    with pytest.raises(BarDataError, match="vwap outside"):
        validate_bars(df, "f")


def test_duplicate_unsorted_naive_missing(bars):
    dup = pd.concat([bars.iloc[:3], bars.iloc[2:3], bars.iloc[3:]], ignore_index=True)
    with pytest.raises(BarDataError, match="duplicate timestamps"):
        validate_bars(dup, "f")
    with pytest.raises(BarDataError, match="not sorted"):
        validate_bars(bars.iloc[::-1].reset_index(drop=True), "f")
    naive = bars.assign(timestamp=bars["timestamp"].dt.tz_localize(None))
    with pytest.raises(BarDataError, match="timezone-naive"):
        validate_bars(naive, "f")
    with pytest.raises(BarDataError, match="missing column"):
        validate_bars(bars.drop(columns=["vwap"]), "f")
    with pytest.raises(BarDataError, match="expected numeric"):
        validate_bars(bars.assign(volume="x"), "f")


def test_unreadable_and_truncated_file(tmp_path: Path, bars):
    path = tmp_path / "X.parquet"
    local.write_bars(bars, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BarDataError, match="unreadable parquet") as err:
        local.read_bars(path)
    assert str(path) in str(err.value)


def test_atomic_write_leaves_no_temp_and_roundtrips(tmp_path: Path, bars):
    path = tmp_path / "X.parquet"
    local.write_bars(bars, path, {"k": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["X.parquet"]
    back = local.read_bars(path)
    pd.testing.assert_frame_equal(back, bars)
    assert local.read_meta(path) == {"k": 1}
    one_day = local.read_bars(path, dt.date(2024, 3, 5), dt.date(2024, 3, 5))
    assert set(local.session_dates(one_day["timestamp"])) == {dt.date(2024, 3, 5)}


def test_resample_keeps_sessions_apart_and_weights_vwap(bars):
    five = resample_bars(bars, "5min")
    assert len(five) == 2 * 78
    validate_bars(five, "5min")
    first = bars.iloc[:5]
    assert five["volume"].iloc[0] == pytest.approx(first["volume"].sum())
    assert five["vwap"].iloc[0] == pytest.approx(
        (first["vwap"] * first["volume"]).sum() / first["volume"].sum()
    )
    daily = resample_bars(bars, "1day")
    assert len(daily) == 2 and daily["close"].iloc[0] == bars["close"].iloc[389]
    assert resample_bars(daily, "1day") is daily
    with pytest.raises(ValueError, match="daily file"):
        resample_bars(daily, "5min")
