"""`vpt data import` on the shapes users' files really have: Polygon REST aggregates, Polygon flat
files, frames with a DatetimeIndex, naive exchange-time stamps, real daily bars from a PyPI
package. Each conversion is checked against hand-computed instants and the contract."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, fresh_console

from vpt_ray.core.calendar import calendar_bounds
from vpt_ray.core.config import load_config
from vpt_ray.data import local
from vpt_ray.data.__main__ import main as data_main
from vpt_ray.data.bars import BarDataError
from vpt_ray.data.importer import import_files

NY = "America/New_York"


def _cfg(data_dir: Path, *extra: str):
    return load_config(1, overrides=[f"data.dir={data_dir}", *extra])


def _ms(ts: str) -> int:
    return int(pd.Timestamp(ts, tz=NY).value // 1_000_000)


def test_polygon_rest_json_minutes_become_contract_bars(tmp_path):
    # 2024-03-08 is a Friday before the DST switch (ET = UTC-5); 09:29 ET is pre-market
    rows = [
        {"t": _ms("2024-03-08 09:29"), "o": 10, "h": 10.2, "l": 9.9, "c": 10.1, "v": 50, "vw": 10.0,
         "n": 3},
        {"t": _ms("2024-03-08 09:30"), "o": 10.1, "h": 10.4, "l": 10.0, "c": 10.3, "v": 900,
         "vw": 10.2, "n": 40},
        {"t": _ms("2024-03-08 09:31"), "o": 10.3, "h": 10.5, "l": 10.2, "c": 10.4, "v": 700,
         "vw": 10.35, "n": 31},
    ]  # fmt: skip
    src = tmp_path / "aggs.json"
    src.write_text(json.dumps({"ticker": "ABCD", "status": "OK", "results": rows}))
    out = import_files([src], _cfg(tmp_path / "data"))
    bars = local.read_bars(tmp_path / "data" / "ABCD.parquet")
    assert list(bars["timestamp"]) == [
        pd.Timestamp("2024-03-08 14:30", tz="UTC"),
        pd.Timestamp("2024-03-08 14:31", tz="UTC"),
    ]
    assert list(bars["vwap"]) == [10.2, 10.35] and list(bars["transactions"]) == [40, 31]
    (row,) = out
    assert row["shape"] == "polygon aggregates" and row["rows"] == 3 and row["bars"] == 2
    assert (
        "t: Unix ms" in row["notes"]
        and "1 bar(s) outside the regular session dropped" in (row["notes"])
    )
    meta = local.read_meta(tmp_path / "data" / "ABCD.parquet")
    assert meta["imports"][0]["files"][0]["vwap"] == "given"


def test_polygon_flat_file_splits_tickers_and_records_the_vwap_approximation(tmp_path):
    # flat files: ns epochs, no vwap, several tickers, pre-market minutes included
    t0 = pd.Timestamp("2024-07-01 09:30", tz=NY).value  # EDT: 13:30 UTC
    lines = ["ticker,volume,open,close,high,low,window_start,transactions"]
    for tk, px in (("AAA", 10.0), ("BBB", 50.0)):
        for k in (-1, 0, 1, 2):
            lines.append(f"{tk},{100 + k},{px},{px + 0.3},{px + 0.6},{px - 0.3},"
                         f"{t0 + k * 60_000_000_000},{5 + k}")  # fmt: skip
    src = tmp_path / "2024-07-01.csv.gz"
    src.write_bytes(gzip.compress("\n".join(lines).encode()))
    out = import_files([src], _cfg(tmp_path / "data"))
    assert sorted(r["ticker"] for r in out) == ["AAA", "BBB"]
    a = local.read_bars(tmp_path / "data" / "AAA.parquet")
    assert a["timestamp"].iloc[0] == pd.Timestamp("2024-07-01 13:30", tz="UTC") and len(a) == 3
    assert a["vwap"].iloc[0] == pytest.approx((10.6 + 9.7 + 10.3) / 3)  # typical price
    assert all("window_start: Unix ns" in r["notes"] for r in out)
    meta = local.read_meta(tmp_path / "data" / "BBB.parquet")["imports"][0]["files"][0]
    assert meta["shape"] == "polygon flat file" and meta["vwap"].startswith("approximated")


def test_datetime_index_csv_with_naive_exchange_times_and_merging(tmp_path):
    # a frame saved by pandas with its DatetimeIndex (header ",Open,High,..."), naive ET times
    idx = pd.DatetimeIndex(["2024-11-04 09:30", "2024-11-04 09:31", "2024-11-04 15:59"])
    df = pd.DataFrame(
        {"Open": [5.0, 5.1, 5.2], "High": [5.2, 5.2, 5.3], "Low": [4.9, 5.0, 5.1],
         "Close": [5.1, 5.1, 5.25], "Volume": [1000, 800, 1200]}, index=idx)  # fmt: skip
    src = tmp_path / "xyz_minutes.csv"
    df.to_csv(src)
    data = tmp_path / "data"
    import_files([src], _cfg(data), ticker="xyz")
    bars = local.read_bars(data / "XYZ.parquet")  # upper-cased name
    assert bars["timestamp"].iloc[0] == pd.Timestamp("2024-11-04 14:30", tz="UTC")  # EST
    assert bars["timestamp"].iloc[-1] == pd.Timestamp("2024-11-04 20:59", tz="UTC")
    assert (bars["transactions"] == 0).all()
    # a second import merges: existing rows win on equal timestamps, new ones are added
    df2 = df.iloc[[2]].copy()
    df2.index = pd.DatetimeIndex(["2024-11-05 09:30"])
    df.iloc[[0]].assign(Close=5.15).to_csv(tmp_path / "again.csv")
    df2.to_csv(tmp_path / "next.csv")
    import_files([tmp_path / "again.csv", tmp_path / "next.csv"], _cfg(data), ticker="XYZ")
    bars = local.read_bars(data / "XYZ.parquet")
    assert len(bars) == 4 and bars["close"].iloc[0] == 5.1
    assert len(local.read_meta(data / "XYZ.parquet")["imports"]) == 2
    # daily bars cannot go into a file of minute bars
    daily = pd.DataFrame({"Open": [5.0, 5.1], "High": [5.2, 5.2], "Low": [4.9, 5.0],
                          "Close": [5.1, 5.1], "Volume": [1, 2]},
                         index=pd.DatetimeIndex(["2024-11-06", "2024-11-07"]))  # fmt: skip
    daily.to_csv(tmp_path / "daily.csv")
    with pytest.raises(BarDataError, match="holds intraday bars"):
        import_files([tmp_path / "daily.csv"], _cfg(data), ticker="XYZ")


def test_daily_dates_get_polygon_stamps_whether_naive_or_utc_midnight(tmp_path):
    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    base = {"open": [10.0, 10.5, 11.0], "high": [10.6, 11.1, 11.2], "low": [9.9, 10.4, 10.8],
            "close": [10.5, 11.0, 11.1], "volume": [1e6, 2e6, 1.5e6]}  # fmt: skip
    naive = pd.DataFrame({"date": days, **base})
    utc = pd.DataFrame(base, index=pd.DatetimeIndex(days, tz="UTC"))  # 00:00 UTC = a date
    naive.to_csv(tmp_path / "N.csv", index=False)
    utc.to_parquet(tmp_path / "U.parquet")
    out = import_files([tmp_path / "N.csv", tmp_path / "U.parquet"], _cfg(tmp_path / "data"))
    want = [pd.Timestamp(d, tz=NY).tz_convert("UTC") for d in days]  # midnight ET, as Polygon
    for t in ("N", "U"):
        assert list(local.read_bars(tmp_path / "data" / f"{t}.parquet")["timestamp"]) == want
    assert {r["bar"] for r in out} == {"1day"}
    assert (
        "daily rows stamped 00:00 UTC read as dates"
        in next(r for r in out if r["ticker"] == "U")["notes"]
    )


def test_a_bad_file_names_the_rule_and_nothing_is_written(tmp_path):
    good = pd.DataFrame({"date": ["2024-01-02", "2024-01-03"], "open": [1.0, 1.0],
                         "high": [1.1, 1.1], "low": [0.9, 0.9], "close": [1.0, 1.05],
                         "volume": [10, 10]})  # fmt: skip
    good.to_csv(tmp_path / "GOOD.csv", index=False)
    good.assign(high=0.5).to_csv(tmp_path / "BAD.csv", index=False)  # high < low
    (tmp_path / "NOCOLS.csv").write_text("when,price\n2024-01-02,1\n")
    data = tmp_path / "data"
    with pytest.raises(BarDataError, match=r"BAD\.csv: high < low"):
        import_files([tmp_path / "GOOD.csv", tmp_path / "BAD.csv"], _cfg(data))
    assert not data.exists() or not list(data.glob("*.parquet"))
    with pytest.raises(BarDataError, match=r"NOCOLS\.csv: no column for"):
        import_files([tmp_path / "NOCOLS.csv"], _cfg(data))
    with pytest.raises(BarDataError, match="is not a symbol"):
        import_files([tmp_path / "GOOD.csv"], _cfg(data), ticker="not a ticker")


def test_real_daily_bars_from_a_pypi_package_import_check_and_clip_to_the_clock(tmp_path, capsys):
    """bokeh-sampledata's Quandl daily bars (AAPL, GOOG, IBM, MSFT 2000-2013, FB) through the
    CLI: adjusted by adj close, vwap and trade counts recorded as absent, `data check` passes."""
    with fresh_console():  # the CLI's console log handler must not outlive this test's stderr
        _import_and_check_real_daily_bars(tmp_path, capsys)


def _import_and_check_real_daily_bars(tmp_path, capsys):
    from bokeh_sampledata.stocks import data as stocks

    src = tmp_path / "stocks.csv.gz"
    early = stocks[stocks["ticker"] == "IBM"].head(3).assign(date=pd.Timestamp("1989-12-27"))
    early["date"] += pd.to_timedelta(np.arange(3), unit="D")  # before the clock's 1990-01-02
    pd.concat([early, stocks], ignore_index=True).to_csv(src, index=False)
    data = tmp_path / "data"
    base = ["--config", str(REPO / "config" / "base.yaml")]
    assert data_main(["import", str(src), "--data-dir", str(data), *base]) == 0
    out = capsys.readouterr().out
    assert "stocks.csv.gz (table, 5 ticker(s))" in out and "prices adjusted by adj close" in out
    (ibm,) = [line for line in out.splitlines() if line.startswith("  IBM ")]
    lo, hi = calendar_bounds("XNYS")
    assert "3,273 rows ->     3,270 1day bars 2000-03-01..2013-03-01" in ibm
    assert f"3 bar(s) outside {lo}..{hi} dropped" in ibm
    aapl = local.read_bars(data / "AAPL.parquet")
    raw = stocks[stocks["ticker"] == "AAPL"].iloc[-1]
    assert aapl["close"].iloc[-1] == pytest.approx(raw["adj_close"])
    assert aapl["timestamp"].iloc[0] == pd.Timestamp("2000-03-01", tz=NY)
    assert data_main(["check", "--data-dir", str(data), *base]) == 0
    check = capsys.readouterr().out
    assert "check: all 5 files pass" in check
    assert "note: GOOG: vwap approximated by the typical price" in check
    assert (
        dt.date(2004, 8, 19)
        == local.read_bars(data / "GOOG.parquet")["timestamp"].iloc[0].tz_convert(NY).date()
    )
