"""GcsSource against a real GCS emulator (fake-gcs-server) on 127.0.0.1, through real gcsfs."""

from __future__ import annotations

import datetime as dt
import io
import os
import socket

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from remote_fixtures import fake_gcs, minute_bars

from vpt_ray.core import calendar as xcal
from vpt_ray.core.config import GcsConfig
from vpt_ray.data.bars import SCHEMA, BarDataError, validate_bars
from vpt_ray.data.errors import SourceError
from vpt_ray.data.gcs import GcsSource

D = dt.date
BUCKET = "team-bars"


@pytest.fixture(scope="module")
def emulator():
    with fake_gcs() as url:
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield url, fs


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return minute_bars(D(2024, 1, 2), D(2024, 2, 29), seed=11)


def put(fs, path: str, data: bytes) -> None:
    fs.pipe_file(path, data)


def parquet_bytes(df: pd.DataFrame, schema: pa.Schema | None = SCHEMA) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), buf)
    return buf.getvalue()


def source(url: str, prefix: str = "stocks", **kw) -> GcsSource:
    cfg = GcsConfig(bucket_path=f"{BUCKET}/{prefix}", endpoint_url=url, token="anon")
    return GcsSource(cfg, **kw)


def in_range_session(df: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    return df[df["timestamp"].isin(xcal.session_minutes(start, end))].reset_index(drop=True)


def test_fetch_reads_the_object_cut_to_dates_and_session(emulator, bars):
    url, fs = emulator
    put(fs, f"{BUCKET}/stocks/AAPL.parquet", parquet_bytes(bars))
    src = source(url)
    assert src.unavailable_reason() is None
    got = src.fetch("AAPL", D(2024, 1, 16), D(2024, 1, 19))
    pd.testing.assert_frame_equal(got, in_range_session(bars, D(2024, 1, 16), D(2024, 1, 19)))
    validate_bars(got, "test")
    assert xcal.in_session_mask(got["timestamp"]).all()
    assert len(got) > 4 * 380
    # a second range of the same ticker does not download the object again
    feb = src.fetch("aapl", D(2024, 2, 1), D(2024, 2, 2))
    pd.testing.assert_frame_equal(feb, in_range_session(bars, D(2024, 2, 1), D(2024, 2, 2)))
    assert src.reads == 1


def test_missing_object_is_an_empty_frame(emulator):
    url, _ = emulator
    got = source(url).fetch("NOPE", D(2024, 1, 2), D(2024, 1, 5))
    assert got.empty
    assert pa.Schema.from_pandas(got, preserve_index=False).equals(SCHEMA)


def test_empty_prefix_is_usable_but_missing_bucket_is_not(emulator):
    url, _ = emulator
    assert source(url, prefix="nothing/here/yet").unavailable_reason() is None
    cfg = GcsConfig(bucket_path="no-such-bucket/stocks", endpoint_url=url, token="anon")
    reason = GcsSource(cfg).unavailable_reason()
    assert reason == f"bucket gs://no-such-bucket does not exist at {url}"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_reported_fast(monkeypatch, emulator):
    """A refused connection is answered by one TCP connect, never by gcsfs's request layer
    (which retries a refused connection ~6 times with backoff, ~30 s): gcsfs's `_call` is
    counted through, and the probe and the fetch both end without it."""
    import gcsfs

    calls: list[tuple] = []
    real_call = gcsfs.GCSFileSystem._call

    async def counted(self, *args, **kwargs):
        calls.append(args[:2])
        return await real_call(self, *args, **kwargs)

    monkeypatch.setattr(gcsfs.GCSFileSystem, "_call", counted)
    url = f"http://127.0.0.1:{_dead_port()}"
    src = GcsSource(GcsConfig(bucket_path="b/stocks", endpoint_url=url, token="anon"))
    reason = src.unavailable_reason()
    assert reason is not None and reason.startswith(f"GCS endpoint {url} is not reachable")
    assert "Connection refused" in reason
    with pytest.raises(SourceError, match=r"gcs: AAPL 2024-01-02\.\.2024-01-05: GCS endpoint"):
        src.fetch("AAPL", D(2024, 1, 2), D(2024, 1, 5))
    assert calls == []  # no request went through gcsfs's retrying layer
    # the count is not vacuous: a live endpoint's probe lists the bucket through `_call`
    assert source(emulator[0]).unavailable_reason(refresh=True) is None and calls


def test_corrupted_object_names_the_gs_path(emulator, bars):
    url, fs = emulator
    put(fs, f"{BUCKET}/stocks/CORR.parquet", parquet_bytes(bars)[:5000])  # truncated
    with pytest.raises(BarDataError, match=rf"gs://{BUCKET}/stocks/CORR.parquet: unreadable"):
        source(url).fetch("CORR", D(2024, 1, 2), D(2024, 1, 5))
    put(fs, f"{BUCKET}/stocks/JUNK.parquet", os.urandom(2048))
    with pytest.raises(BarDataError, match=rf"gs://{BUCKET}/stocks/JUNK.parquet: unreadable"):
        source(url).fetch("JUNK", D(2024, 1, 2), D(2024, 1, 5))


def test_object_breaking_the_contract_names_path_and_rule(emulator, bars):
    url, fs = emulator
    naive = bars.head(100).assign(timestamp=bars["timestamp"].head(100).dt.tz_localize(None))
    put(fs, f"{BUCKET}/stocks/NAIVE.parquet", parquet_bytes(naive, schema=None))
    with pytest.raises(
        BarDataError, match=rf"gs://{BUCKET}/stocks/NAIVE.parquet: .*timezone-naive"
    ):
        source(url).fetch("NAIVE", D(2024, 1, 2), D(2024, 1, 5))
    bad = bars.head(100).copy()
    bad.loc[7, "high"] = bad.loc[7, "low"] / 2
    put(fs, f"{BUCKET}/stocks/HILO.parquet", parquet_bytes(bad))
    with pytest.raises(BarDataError, match=rf"gs://{BUCKET}/stocks/HILO.parquet: high < low"):
        source(url).fetch("HILO", D(2024, 1, 2), D(2024, 1, 5))


def test_polygon_style_columns_are_accepted(emulator, bars):
    url, fs = emulator
    short = bars.rename(
        columns={"timestamp": "t", "open": "o", "high": "h", "low": "l", "close": "c"}
    ).rename(columns={"volume": "v", "vwap": "vw", "transactions": "n"})
    short["t"] = short["t"].astype("int64") // 1_000_000
    put(fs, f"{BUCKET}/stocks/SHORT.parquet", parquet_bytes(short, schema=None))
    got = source(url).fetch("SHORT", D(2024, 1, 2), D(2024, 1, 3))
    pd.testing.assert_frame_equal(got, in_range_session(bars, D(2024, 1, 2), D(2024, 1, 3)))


def test_upload_merges_and_replaces_the_object_in_one_write(emulator, bars):
    url, fs = emulator
    jan = in_range_session(bars, D(2024, 1, 2), D(2024, 1, 31))
    feb = in_range_session(bars, D(2024, 2, 1), D(2024, 2, 29))
    writer = source(url, prefix="up")
    writer.upload("MSFT", jan)
    # overlap: the last January day again with other prices; new rows win
    last_jan = jan[xcal.exchange_dates(jan["timestamp"]) == np.datetime64("2024-01-31")]
    changed = last_jan.assign(
        **{c: last_jan[c] * 2 for c in ("open", "high", "low", "close", "vwap")}
    )
    writer.upload("MSFT", pd.concat([changed, feb], ignore_index=True))
    reader = source(url, prefix="up")  # another process's view: a fresh source
    got = reader.fetch("MSFT", D(2024, 1, 2), D(2024, 2, 29))
    want = pd.concat(
        [jan.iloc[: len(jan) - len(last_jan)], changed, feb], ignore_index=True
    ).sort_values("timestamp", ignore_index=True)
    pd.testing.assert_frame_equal(got, want)
    table = pq.read_table(io.BytesIO(fs.cat_file(f"{BUCKET}/up/MSFT.parquet")))
    assert table.schema.equals(SCHEMA, check_metadata=False)


def test_upload_of_bad_bars_leaves_the_object_untouched(emulator, bars):
    url, fs = emulator
    good = in_range_session(bars, D(2024, 1, 2), D(2024, 1, 5))
    src = source(url, prefix="safe")
    src.upload("TSLA", good)
    before = fs.cat_file(f"{BUCKET}/safe/TSLA.parquet")
    bad = good.copy()
    bad.loc[3, "close"] = -1.0
    with pytest.raises(BarDataError, match="upload TSLA to gs://team-bars/safe/TSLA.parquet"):
        src.upload("TSLA", bad)
    assert fs.cat_file(f"{BUCKET}/safe/TSLA.parquet") == before


def test_storage_emulator_host_is_honoured(emulator, bars, monkeypatch):
    url, fs = emulator
    put(fs, f"{BUCKET}/stocks/ENV.parquet", parquet_bytes(bars))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    src = GcsSource(GcsConfig(bucket_path=f"gs://{BUCKET}/stocks/", token="anon"))
    assert src.endpoint == url and src.unavailable_reason() is None
    assert len(src.fetch("ENV", D(2024, 1, 2), D(2024, 1, 2))) > 380


def test_gcsfs_experimental_probe_is_off(emulator):
    """The plain gcsfs filesystem is used, whatever the import order of gcsfs."""
    url, _ = emulator
    assert os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
    assert type(source(url)._filesystem()).__module__ == "gcsfs.core"


def test_probe_is_shared_per_bucket_until_refreshed():
    """The chain builds a source per ticker: one probe serves them all, `refresh` re-probes."""
    with fake_gcs() as url:
        from gcsfs.core import GCSFileSystem

        GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True).mkdir(BUCKET)
        assert source(url).unavailable_reason() is None
    # the emulator is gone; a new source for the same bucket reuses the recent answer ...
    assert source(url).unavailable_reason() is None
    # ... and a refresh notices
    reason = source(url).unavailable_reason(refresh=True)
    assert reason is not None and "is not reachable" in reason
    assert source(url).unavailable_reason() == reason
