"""The data chain against real servers on 127.0.0.1: fake-gcs-server and the Polygon test server.

GCS traffic goes through a byte-counting TCP forwarder, so "no remote request" is measured on the
wire rather than inferred; Polygon's server records every request itself. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, tiny_overrides
from polygon_server import PolygonServer
from remote_fixtures import daily_bars, fake_gcs, minute_bars

from vpt_ray.core import calendar as xcal
from vpt_ray.core.config import Config, load_config
from vpt_ray.core.run import file_sha256
from vpt_ray.data import chain, local
from vpt_ray.data.__main__ import main as data_main
from vpt_ray.data.bars import SCHEMA, BarDataError

D = dt.date
KEY = "pk_CHAIN_TEST_4hQ8zLr2"
KEY_ENV = "VPT_TEST_POLYGON_KEY"
BUCKET = "chain-bars"
START, END = D(2024, 1, 2), D(2024, 2, 29)


class CountingProxy:
    """A TCP forwarder in front of a server that counts the bytes clients send through it."""

    def __init__(self, target: str):
        parts = urlsplit(target)
        self.target = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sent = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b, count in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, count), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False), buf)
    return buf.getvalue()


def session_only(df: pd.DataFrame, start: dt.date = START, end: dt.date = END) -> pd.DataFrame:
    """What a correct chain stores: the served bars of regular sessions within [start, end]."""
    return df[df["timestamp"].isin(xcal.session_minutes(start, end))].reset_index(drop=True)


def on_days(df: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    return xcal.restrict_dates(df, start, end)


@pytest.fixture(scope="module")
def served() -> dict[str, pd.DataFrame]:
    """Extended-hours minute bars per ticker, as a bucket or Polygon would hold them."""
    return {t: minute_bars(START, D(2024, 3, 28), seed=i) for i, t in enumerate("ABCDEFG")}


@pytest.fixture(scope="module")
def gcs(served):
    with fake_gcs() as url:
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        fs.pipe_file(f"{BUCKET}/stocks/A.parquet", parquet_bytes(served["A"]))
        fs.pipe_file(f"{BUCKET}/stocks/D.parquet", parquet_bytes(served["D"])[:3000])  # truncated
        proxy = CountingProxy(url)
        yield proxy, fs
        proxy.close()


@pytest.fixture(scope="module")
def _polygon(served):
    with PolygonServer(api_key=KEY) as srv:
        for t in "BCDEG":
            srv.add_bars(t, served[t])
        yield srv


@pytest.fixture
def polygon(_polygon, monkeypatch):
    _polygon.reset()
    _polygon.page_size = 50_000
    monkeypatch.setenv(KEY_ENV, KEY)
    yield _polygon
    _polygon.reset()


@pytest.fixture(autouse=True)
def _restore_vpt_logging():
    """CLIs and phases install handlers on the `vpt_ray` logger and stop propagation; undo it."""
    logger = logging.getLogger("vpt_ray")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    logger.propagate, logger.level = propagate, level


def n_sessions(start: dt.date, end: dt.date) -> int:
    return len(xcal.sessions(start, end))


def make_cfg(
    data_dir: Path, tickers, sources="[local,gcs,polygon]", *extra: str, proxy=None, poly=None
) -> Config:
    overrides = [
        f"data.dir={data_dir}",
        f"data.tickers=[{','.join(tickers)}]",
        f"data.start={START}",
        f"data.end={END}",
        "backtest.start=2024-03-05",
        "backtest.end=2024-03-28",
        f"data.sources={sources}",
        "gcs.token=anon",
        f"gcs.bucket_path={BUCKET}/stocks",
        f"polygon.api_key_env={KEY_ENV}",
        "polygon.requests_per_minute=60000",
        "polygon.backoff_s=0.001",
        "polygon.max_retries=1",
        "polygon.timeout_s=2",
    ]
    if proxy is not None:
        overrides.append(f"gcs.endpoint_url={proxy.url}")
    if poly is not None:
        overrides.append(f"polygon.base_url={poly.base_url}")
    return load_config(config_path=REPO / "config" / "base.yaml", overrides=[*overrides, *extra])


def stored(cfg: Config, ticker: str) -> pd.DataFrame:
    return local.read_bars(local.ticker_path(cfg.data.dir, ticker))


def requested(srv: PolygonServer, ticker: str | None = None) -> list[tuple[str, str]]:
    return [(r.frm, r.to) for r in srv.requests if ticker is None or r.ticker == ticker]


# -- fill, cache, gap -----------------------------------------------------------------------------


def test_gcs_and_polygon_fill_an_empty_store_and_the_next_run_is_local(
    tmp_path, gcs, polygon, served, caplog
):
    proxy, _ = gcs
    cfg = make_cfg(tmp_path, ["A", "B"], proxy=proxy, poly=polygon)
    sent0 = proxy.sent
    with caplog.at_level(logging.INFO, logger="vpt_ray.data"):
        out, skipped = chain.resolve(cfg, START, END)
    assert skipped == [] and set(out) == {"A", "B"}
    for t in "AB":
        pd.testing.assert_frame_equal(stored(cfg, t), session_only(served[t]))
        assert not out[t].synthetic and out[t].missing_sessions == 0
    assert [o["source"] for o in out["A"].origins] == ["gcs"]
    assert [o["source"] for o in out["B"].origins] == ["polygon"]
    n = len(xcal.sessions(START, END))
    assert out["B"].origins[0]["sessions"] == n and out["B"].origins[0]["bars"] == len(
        session_only(served["B"])
    )
    assert proxy.sent > sent0  # A was read through the wire
    assert {r.ticker for r in polygon.requests} == {"B"}  # A came from GCS: never asked of Polygon
    asked = f"{n} of the {n} sessions asked for 2024-01-02..2024-02-29"
    assert f"A: gcs delivered {asked}" in caplog.text
    assert f"B: polygon delivered {asked}" in caplog.text
    assert "B: 2024-01-02..2024-02-29 from polygon" in caplog.text

    # the second run is local: no source is built, no byte goes to GCS, no request to Polygon
    files = {t: local.ticker_path(tmp_path, t).read_bytes() for t in "AB"}
    sent1, asked1 = proxy.sent, len(polygon.requests)
    sources = chain.Sources(cfg)
    again, _ = chain.resolve(cfg, START, END, sources)
    assert sources.built == {} and sources.calls == {}
    assert proxy.sent == sent1 and len(polygon.requests) == asked1
    assert [o["source"] for o in again["A"].origins] == ["local"]
    assert {t: local.ticker_path(tmp_path, t).read_bytes() for t in "AB"} == files


def test_partial_local_store_fetches_only_the_gap_and_keeps_local_rows(tmp_path, polygon, served):
    cfg = make_cfg(tmp_path, ["C"], "[local,polygon]", poly=polygon)
    full = session_only(served["C"])
    days = xcal.exchange_dates(full["timestamp"])
    hole = (days >= pd.Timestamp("2024-01-16").to_datetime64()) & (
        days <= pd.Timestamp("2024-01-19").to_datetime64()
    )
    jan = days <= pd.Timestamp("2024-01-31").to_datetime64()
    mine = full[jan & ~hole].reset_index(drop=True)
    mine["volume"] += 1.0  # the local rows differ from the server's: they must survive
    local.write_bars(mine, local.ticker_path(tmp_path, "C"))
    out, _ = chain.resolve(cfg, START, END)
    assert requested(polygon) == [("2024-01-16", "2024-01-19"), ("2024-02-01", "2024-02-29")]
    got = stored(cfg, "C")
    assert len(got) == len(full)
    kept = got[got["timestamp"].isin(mine["timestamp"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, mine)
    fetched = got[~got["timestamp"].isin(mine["timestamp"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(fetched, full[hole | ~jan].reset_index(drop=True))
    assert [(o["source"], o.get("start")) for o in out["C"].origins] == [
        ("local", None),
        ("polygon", "2024-01-16"),
        ("polygon", "2024-02-01"),
    ]


def test_sessions_no_source_has_are_remembered_not_asked_again(tmp_path, polygon, served):
    """A halted day (no bars at Polygon either) is asked once, then known absent."""
    halted = on_days(served["E"], D(2024, 1, 10), D(2024, 1, 10))
    polygon.add_bars("E", served["E"][~served["E"]["timestamp"].isin(halted["timestamp"])])
    try:
        cfg = make_cfg(tmp_path, ["E"], "[local,polygon]", poly=polygon)
        out, _ = chain.resolve(cfg, START, END)
        assert out["E"].missing_sessions == 1 and out["E"].missing_ranges == "2024-01-10"
        assert local.read_meta(local.ticker_path(tmp_path, "E")) == {
            "absent": {"polygon": [["2024-01-10", "2024-01-10"]]}
        }
        polygon.reset()
        sources = chain.Sources(cfg)
        again, _ = chain.resolve(cfg, START, END, sources)
        assert polygon.requests == [] and sources.calls == {}
        assert again["E"].missing_sessions == 1
    finally:
        polygon.add_bars("E", served["E"])


# -- unavailable sources, skip --------------------------------------------------------------------


def test_no_key_and_missing_dates_is_an_error_naming_ticker_and_dates(
    tmp_path, polygon, served, monkeypatch
):
    monkeypatch.delenv(KEY_ENV)
    cfg = make_cfg(tmp_path, ["C"], "[local,polygon]", poly=polygon)
    full = session_only(served["C"])
    path = local.ticker_path(tmp_path, "C")
    local.write_bars(on_days(full, START, D(2024, 2, 15)), path)
    before = path.read_bytes()
    with pytest.raises(chain.DataUnavailableError) as info:
        chain.resolve(cfg, START, END)
    msg = str(info.value)
    n = n_sessions(D(2024, 2, 16), END)
    assert msg.startswith(f"C: {n} sessions missing (2024-02-16..2024-02-29)")
    assert f"polygon unavailable: no API key: set the environment variable {KEY_ENV}" in msg
    assert path.read_bytes() == before and polygon.requests == []
    # nothing local either: the error names the period and every source tried
    empty = make_cfg(tmp_path / "empty", ["C"], "[local,polygon]", poly=polygon)
    with pytest.raises(chain.DataUnavailableError) as info:
        chain.resolve(empty, START, END)
    assert str(info.value) == (
        f"C: no bars for 2024-01-02..2024-02-29 ({n_sessions(START, END)} sessions) in any "
        "source; tried local (no file), "
        f"polygon (unavailable: no API key: set the environment variable {KEY_ENV})"
    )


def test_on_missing_skip_lists_the_ticker_and_keeps_the_others(tmp_path, gcs, polygon):
    proxy, _ = gcs
    cfg = make_cfg(tmp_path, ["B", "NOWHERE"], proxy=proxy, poly=polygon)
    with pytest.raises(chain.DataUnavailableError, match=r"NOWHERE: no bars .* in any source"):
        chain.resolve(cfg, START, END)
    skip = make_cfg(
        tmp_path,
        ["B", "NOWHERE"],
        "[local,gcs,polygon]",
        "data.on_missing=skip",
        proxy=proxy,
        poly=polygon,
    )
    out, skipped = chain.resolve(skip, START, END)
    assert list(out) == ["B"] and skipped == ["NOWHERE"]
    assert not local.ticker_path(tmp_path, "NOWHERE").exists()


def test_fresh_machine_skips_both_remote_sources_quietly_and_fast(tmp_path, monkeypatch, caplog):
    """No GCS credentials, no Polygon key, no network: one INFO line each, synthetic bars."""
    from vpt_ray.data import gcs

    product = Path("/sys/class/dmi/id/product_name")
    if product.exists() and product.read_text().startswith("Google"):
        pytest.skip("this machine is a GCE host: it may have credentials")
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "POLYGON_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr(gcs, "_PROBES", {})
    cfg = load_config(
        overrides=[f"data.dir={tmp_path}", "data.tickers=[AAA,BBB]", "data.start=2024-01-02"]
        + ["data.end=2024-01-31", "backtest.start=2024-02-05", "backtest.end=2024-02-09"]
    )
    assert cfg.data.sources == ["local", "gcs", "polygon", "synthetic"] and cfg.gcs.token is None
    t0 = time.perf_counter()
    reason = gcs.GcsSource(cfg.gcs).unavailable_reason(refresh=True)
    assert time.perf_counter() - t0 < 0.5
    assert reason.startswith("no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vpt_ray.data"):
        out, _ = chain.resolve(cfg, cfg.data.start, cfg.backtest.end)
    assert all(td.synthetic for td in out.values())
    skipped = [r for r in caplog.records if "skipped for this run" in r.getMessage()]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in skipped] == [
        ("INFO", "source gcs skipped for this run"),
        ("INFO", "source polygon skipped for this run"),
    ]


# -- interruption, failures -----------------------------------------------------------------------


def test_fetch_dropped_mid_pagination_resumes_where_it_stopped(tmp_path, polygon, served, caplog):
    polygon.page_size = 1000
    polygon.fault("drop", times=None, when=lambda r: r.frm == "2024-01-09" and r.page == 2)
    cfg = make_cfg(tmp_path, ["B"], "[local,polygon]", "polygon.chunk_days=7", poly=polygon)
    caplog.set_level(logging.INFO, logger="vpt_ray.data")
    with pytest.raises(chain.DataUnavailableError) as info:
        chain.resolve(cfg, START, END)
    msg = str(info.value)
    n = n_sessions(D(2024, 1, 9), END)
    part = session_only(served["B"], START, D(2024, 1, 8))
    assert (
        f"B: polygon delivered 5 of the {n_sessions(START, END)} sessions asked for "
        f"2024-01-02..2024-02-29 ({len(part)} bars): 2024-01-02..2024-01-08"
    ) in caplog.text
    assert msg.startswith(f"B: {n} sessions missing (2024-01-09..2024-02-29)")
    assert "polygon failed: polygon: B 2024-01-09..2024-01-12: gave up after 2 attempt(s)" in msg
    # the chunk delivered before the drop is in the local store
    pd.testing.assert_frame_equal(stored(cfg, "B"), session_only(served["B"], START, D(2024, 1, 8)))
    polygon.reset()
    out, _ = chain.resolve(cfg, START, END)
    froms = [r.frm for r in polygon.requests if r.page == 1]
    assert froms[0] == "2024-01-09" and min(froms) == "2024-01-09"  # delivered dates not re-asked
    clean = make_cfg(
        tmp_path / "clean", ["B"], "[local,polygon]", "polygon.chunk_days=7", poly=polygon
    )
    chain.resolve(clean, START, END)
    pd.testing.assert_frame_equal(stored(cfg, "B"), stored(clean, "B"))
    pd.testing.assert_frame_equal(stored(cfg, "B"), session_only(served["B"]))


@pytest.mark.parametrize("failure", ["error_status", "http_500", "bad_payload"])
def test_a_failing_fetch_leaves_the_local_file_as_it_was(tmp_path, polygon, served, failure):
    ticker = "G"
    if failure == "error_status":
        polygon.fault("error_status", times=None, message="upstream said no")
    elif failure == "http_500":
        polygon.fault("http", status=500, times=None)
    else:
        t0 = int(pd.Timestamp("2024-02-20 15:00", tz="UTC").value // 1_000_000)
        ticker = "BADVW"
        row = {"t": t0, "o": 10.0, "h": 10.5, "l": 9.9, "c": 10.1, "v": 100.0, "vw": 12.0, "n": 3}
        polygon.add_raw(ticker, [row])
    cfg = make_cfg(tmp_path, [ticker], "[local,polygon]", poly=polygon)
    path = local.ticker_path(tmp_path, ticker)
    local.write_bars(session_only(served["G"], START, D(2024, 2, 16)), path)
    before = path.read_bytes()
    n = n_sessions(D(2024, 2, 17), END)
    with pytest.raises(chain.DataUnavailableError, match=rf"{ticker}: {n} sessions missing .*fail"):
        chain.resolve(cfg, START, END)
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_unreadable_local_file_stops_the_chain_and_is_not_replaced(tmp_path, polygon, served):
    path = local.ticker_path(tmp_path, "B")
    path.write_bytes(parquet_bytes(session_only(served["B"]))[:4000])  # a truncated write
    before = path.read_bytes()
    cfg = make_cfg(tmp_path, ["B"], "[local,polygon]", poly=polygon)
    with pytest.raises(BarDataError, match=rf"{path}: unreadable parquet file"):
        chain.resolve(cfg, START, END)
    assert path.read_bytes() == before and polygon.requests == []


def test_daily_config_turns_a_minute_gcs_object_into_session_bars(tmp_path, gcs, served):
    proxy, _ = gcs
    cfg = make_cfg(tmp_path, ["A"], "[local,gcs]", "data.bar=1day", proxy=proxy)
    out, _ = chain.resolve(cfg, START, END)
    assert [o["source"] for o in out["A"].origins] == ["gcs"]
    got = stored(cfg, "A")
    minutes = session_only(served["A"])
    et = got["timestamp"].dt.tz_convert("America/New_York")
    assert len(got) == n_sessions(START, END) and (et.dt.hour == 0).all()
    assert [d.date() for d in xcal.sessions(START, END)] == list(et.dt.date)
    by_day = minutes.groupby(xcal.exchange_dates(minutes["timestamp"]))
    assert got["volume"].tolist() == by_day["volume"].sum().tolist()
    assert got["open"].tolist() == by_day["open"].first().tolist()
    assert got["close"].tolist() == by_day["close"].last().tolist()
    assert got["high"].tolist() == by_day["high"].max().tolist()
    raw = on_days(served["A"], START, END)  # pre- and post-market volume stays out
    assert got["volume"].sum() < raw["volume"].sum()


def test_a_corrupt_gcs_object_falls_through_to_polygon(tmp_path, gcs, polygon, served, caplog):
    proxy, _ = gcs
    cfg = make_cfg(tmp_path, ["D"], proxy=proxy, poly=polygon)
    with caplog.at_level(logging.WARNING, logger="vpt_ray.data"):
        out, _ = chain.resolve(cfg, START, END)
    assert [o["source"] for o in out["D"].origins] == ["polygon"]
    pd.testing.assert_frame_equal(stored(cfg, "D"), session_only(served["D"]))
    assert f"D: gcs failed (0 sessions delivered before the failure are kept): gs://{BUCKET}" in (
        caplog.text
    )
    assert "unreadable parquet" in caplog.text


def test_upload_fetched_gives_polygon_bars_back_to_gcs(tmp_path, gcs, polygon, served):
    proxy, fs = gcs
    extra = ("gcs.upload_fetched=true", f"gcs.bucket_path={BUCKET}/up")
    cfg = make_cfg(tmp_path, ["E"], "[local,gcs,polygon]", *extra, proxy=proxy, poly=polygon)
    chain.resolve(cfg, START, END)
    table = pq.read_table(io.BytesIO(fs.cat_file(f"{BUCKET}/up/E.parquet")))
    pd.testing.assert_frame_equal(table.to_pandas(), session_only(served["E"]))
    # another store now gets E from GCS, without Polygon
    polygon.reset()
    other = make_cfg(
        tmp_path / "other", ["E"], "[local,gcs,polygon]", *extra, proxy=proxy, poly=polygon
    )
    out, _ = chain.resolve(other, START, END)
    assert [o["source"] for o in out["E"].origins] == ["gcs"] and polygon.requests == []


# -- the local file's session rule ----------------------------------------------------------------


def test_out_of_session_local_bars_are_rejected_naming_file_rule_and_row(tmp_path, served):
    path = local.ticker_path(tmp_path, "X")
    ext = on_days(served["A"], D(2024, 1, 2), D(2024, 1, 5))  # 04:00-20:00 ET
    local.write_bars(ext, path)
    before = path.read_bytes()
    cfg = make_cfg(tmp_path, ["X"], "[local]")
    with pytest.raises(BarDataError) as info:
        chain.resolve(cfg, START, D(2024, 1, 5))
    msg = str(info.value)
    n_out = int((~xcal.in_session_mask(ext["timestamp"])).sum())
    first = ext["timestamp"].iloc[0]
    et = first.tz_convert("America/New_York")
    assert et.hour < 9  # a pre-market bar
    assert msg == (
        f"{path}: {n_out} bar(s) outside the regular XNYS session (data.regular_session_only is "
        f"true) (e.g. row 0: timestamp={first} ({et:%Y-%m-%d %H:%M} EST))"
    )
    assert path.read_bytes() == before
    loose = make_cfg(tmp_path, ["X"], "[local]", "data.regular_session_only=false")
    out, _ = chain.resolve(loose, START, D(2024, 1, 5))
    assert out["X"].missing_sessions == 0


def test_daily_files_need_session_dates_and_a_daily_config(tmp_path):
    path = local.ticker_path(tmp_path, "Y")
    days = daily_bars(D(2024, 1, 2), D(2024, 1, 31))
    holiday = days.iloc[:1].assign(timestamp=pd.Timestamp("2024-01-15 05:00", tz="UTC"))  # MLK
    local.write_bars(pd.concat([days, holiday]).sort_values("timestamp", ignore_index=True), path)
    daily = make_cfg(tmp_path, ["Y"], "[local]", "data.bar=1day")
    with pytest.raises(BarDataError, match=r"1 daily bar\(s\) on dates that are not XNYS sessions"):
        chain.resolve(daily, START, D(2024, 1, 31))
    local.write_bars(days, path)
    out, _ = chain.resolve(daily, START, D(2024, 1, 31))
    assert out["Y"].missing_sessions == 0
    minute = make_cfg(tmp_path, ["Y"], "[local]")
    with pytest.raises(BarDataError, match="holds daily bars but data.bar is 1min"):
        chain.resolve(minute, START, D(2024, 1, 31))


def test_missing_sessions_beyond_the_tolerance_stop_or_skip_whatever_the_sources(tmp_path):
    """A partial local file with `data.sources: [local]` used to run (one WARNING)."""
    full = daily_bars(START, D(2024, 1, 31))
    local.write_bars(full, local.ticker_path(tmp_path, "FULL"))
    local.write_bars(full.iloc[:1], local.ticker_path(tmp_path, "PART"))  # 1 of 21 sessions
    gaps = full.drop(index=[3, 7, 11])  # 3 sessions missing: within the default tolerance (5)
    local.write_bars(gaps.reset_index(drop=True), local.ticker_path(tmp_path, "GAPS"))
    cfg = make_cfg(tmp_path, ["FULL", "PART", "GAPS"], "[local]", "data.bar=1day")
    with pytest.raises(chain.DataUnavailableError) as err:
        chain.resolve(cfg, START, D(2024, 1, 31))
    msg = str(err.value)
    assert msg.startswith("PART: 20 of 21 sessions of 2024-01-02..2024-01-31 have no bars")
    assert "(2024-01-03..2024-01-31)" in msg and "data.max_missing_sessions (5)" in msg
    skip = make_cfg(tmp_path, ["FULL", "PART", "GAPS"], "[local]", "data.bar=1day",
                    "data.on_missing=skip")  # fmt: skip
    out, skipped = chain.resolve(skip, START, D(2024, 1, 31))
    assert skipped == ["PART"] and sorted(out) == ["FULL", "GAPS"]
    assert out["GAPS"].missing_sessions == 3
    strict = make_cfg(tmp_path, ["GAPS"], "[local]", "data.bar=1day", "data.max_missing_sessions=2")
    with pytest.raises(chain.DataUnavailableError, match="GAPS: 3 of 21 sessions"):
        chain.resolve(strict, START, D(2024, 1, 31))


def test_store_names_and_dates_the_clock_cannot_hold_are_named_errors(tmp_path):
    days = daily_bars(START, D(2024, 1, 31))
    local.write_bars(days, tmp_path / "aapl.parquet")  # another case than the ticker
    cfg = make_cfg(tmp_path, ["aapl"], "[local]", "data.bar=1day")
    assert cfg.data.tickers == ["AAPL"]
    with pytest.raises(BarDataError, match=r"aapl\.parquet: file name is not AAPL\.parquet"):
        chain.resolve(cfg, START, D(2024, 1, 31))
    (tmp_path / "aapl.parquet").unlink()
    old = days.iloc[:2].assign(timestamp=pd.DatetimeIndex(
        ["1989-12-28 05:00", "1989-12-29 05:00"], tz="UTC").as_unit("ns"))  # fmt: skip
    local.write_bars(pd.concat([old, days], ignore_index=True), tmp_path / "AAPL.parquet")
    with pytest.raises(BarDataError, match=r"AAPL \(.*AAPL\.parquet\): first date 1989-12-28 is "
                       r"before 1990-01-02, the first XNYS session"):  # fmt: skip
        chain.resolve(cfg, START, D(2024, 1, 31))


# -- the CLI --------------------------------------------------------------------------------------


def span(df: pd.DataFrame) -> list[str]:
    """First and last bar as the check table prints them (exchange time, split on the space)."""
    ts = df["timestamp"].dt.tz_convert("America/New_York")
    return [*f"{ts.iloc[0]:%Y-%m-%d %H:%M}".split(), *f"{ts.iloc[-1]:%Y-%m-%d %H:%M}".split()]


def test_check_prints_the_table_and_exits_zero_on_a_good_store(tmp_path, served, capsys):
    good = session_only(served["A"])
    days = xcal.exchange_dates(good["timestamp"])
    holiday_less = good[days != pd.Timestamp("2024-01-10").to_datetime64()]
    local.write_bars(holiday_less, tmp_path / "A.parquet")
    local.write_bars(session_only(served["B"], START, D(2024, 1, 31)), tmp_path / "B.parquet")
    assert data_main(["check", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("ticker"))
    assert out[header].split() == ["ticker", "rows", "first", "last", "gaps", "problems"]
    rows = {line.split()[0]: line.split() for line in out[header + 2 : header + 4]}
    n_a = len(good) - int((days == pd.Timestamp("2024-01-10").to_datetime64()).sum())
    b = session_only(served["B"], START, D(2024, 1, 31))
    assert rows["A"] == ["A", f"{n_a:,}", *span(good), "1"]
    assert rows["B"] == ["B", f"{len(b):,}", *span(b), "0"]
    assert out[-1] == "check: all 2 files pass"


def test_check_exits_non_zero_naming_each_broken_file(tmp_path, served, capsys):
    good = session_only(served["A"], START, D(2024, 1, 31))
    local.write_bars(good, tmp_path / "OK.parquet")
    local.write_bars(on_days(served["A"], START, D(2024, 1, 3)), tmp_path / "EXT.parquet")
    (tmp_path / "TRUNC.parquet").write_bytes(parquet_bytes(good)[:2000])
    bad = good.copy()
    bad.loc[5, "high"] = bad.loc[5, "low"] / 2
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), tmp_path / "HILO.parquet")
    proc = subprocess.run(
        [sys.executable, "-m", "vpt_ray.data", "check", "--data-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "bar(s) outside the regular XNYS session" in lines["EXT"]
    assert "unreadable parquet file" in lines["TRUNC"]
    assert "high < low (e.g. row 5:" in lines["HILO"]
    assert lines["OK"].split()[-1] == "0"  # no problem column, zero gaps
    assert proc.stdout.splitlines()[-1] == (
        "check: 3 of 4 files break the data contract: EXT, HILO, TRUNC"
    )
    assert data_main(["check", "--data-dir", str(tmp_path / "nope")]) == 2
    assert (
        "error: " + str(tmp_path / "nope") + ": no such data directory" in capsys.readouterr().err
    )


def test_fetch_fills_the_store_for_a_phase_and_says_what_is_missing(
    tmp_path, polygon, served, capsys
):
    args = [
        "fetch",
        "--phase",
        "1",
        "--set",
        f"data.dir={tmp_path}",
        "--set",
        "data.tickers=[B,C,NOWHERE]",
        "--set",
        "data.start=2024-01-02",
        "--set",
        "data.end=2024-02-29",
        "--set",
        "backtest.start=2024-03-05",
        "--set",
        "backtest.end=2024-03-28",
        "--set",
        "data.sources=[local,polygon,synthetic]",
        "--set",
        f"polygon.base_url={polygon.base_url}",
        "--set",
        f"polygon.api_key_env={KEY_ENV}",
        "--set",
        "polygon.requests_per_minute=60000",
    ]
    assert data_main(args) == 1
    out = capsys.readouterr().out
    n = n_sessions(START, D(2024, 3, 28))
    assert f"fetch: phase 1, 3 ticker(s), 2024-01-02..2024-03-28 ({n} sessions)" in out
    assert "[1/3] B: ok in" in out and f"polygon {n} sessions" in out
    assert "[3/3] NOWHERE: INCOMPLETE: NOWHERE: no bars for 2024-01-02..2024-03-28" in out
    assert out.rstrip().splitlines()[-2] == "fetch: MISSING data for NOWHERE:"
    assert not (tmp_path / "_synthetic").exists()  # fetch never makes synthetic bars
    for t in "BC":
        end = D(2024, 3, 28)
        pd.testing.assert_frame_equal(
            local.read_bars(local.ticker_path(tmp_path, t)), session_only(served[t], START, end)
        )
    polygon.reset()
    args[6] = "data.tickers=[B,C]"
    assert data_main(args) == 0 and polygon.requests == []
    assert "fetch: 2/2 tickers complete" in capsys.readouterr().out


# -- a whole phase --------------------------------------------------------------------------------


@pytest.mark.slow
def test_phase_from_gcs_and_polygon_equals_a_full_local_store_and_reruns_locally(
    ray_session, tmp_path, gcs, polygon, served
):
    from vpt_ray.pipeline.phase import run_phase

    proxy, fs = gcs
    period = (START, D(2024, 3, 28))
    fs.pipe_file(f"{BUCKET}/e2e/AAA.parquet", parquet_bytes(served["F"]))
    polygon.add_bars("BBB", served["G"])
    ref = tmp_path / "ref"
    for t, src in (("AAA", "F"), ("BBB", "G")):
        local.write_bars(session_only(served[src], *period), local.ticker_path(ref, t))
    ws = tmp_path / "remote"
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir(parents=True)
    overrides = tiny_overrides(
        ws,
        "data.sources=[local,gcs,polygon]",
        f"gcs.endpoint_url={proxy.url}",
        "gcs.token=anon",
        f"gcs.bucket_path={BUCKET}/e2e",
        f"polygon.base_url={polygon.base_url}",
        f"polygon.api_key_env={KEY_ENV}",
        "polygon.requests_per_minute=60000",
        "search.num_samples=1",
        "model.n_estimators=20",
    )
    cfg = load_config(1, overrides=overrides)
    first = run_phase(cfg, run_id="remote")
    assert first["data"]["synthetic"] is False and first["data"]["sources_used"] == [
        "gcs",
        "polygon",
    ]
    for t in ("AAA", "BBB"):
        got = (ws / "data" / f"{t}.parquet").read_bytes()
        assert got == local.ticker_path(ref, t).read_bytes(), t  # byte for byte the full store
    assert {r.ticker for r in polygon.requests} == {"BBB"}
    sent, asked = proxy.sent, len(polygon.requests)
    # the second run (through the final model: the data stage is what is measured) is local
    second = run_phase(cfg, run_id="again", stop_after="train")
    assert proxy.sent == sent and len(polygon.requests) == asked
    models = ws / "artifacts" / "models"
    meta = {r: json.loads((models / r / "meta.json").read_text()) for r in ("remote", "again")}
    local_only = [{"source": "local", "sessions": n_sessions(*period)}]
    assert meta["again"]["data_fingerprint"]["AAA"]["origins"] == local_only
    for t in ("AAA", "BBB"):
        shas = {r: meta[r]["data_fingerprint"][t]["sha256"] for r in meta}
        assert shas["remote"] == shas["again"] == file_sha256(local.ticker_path(ref, t))
    # same bars, same seeds: the same model as the run that fetched them
    assert (models / "again" / "model.ubj").read_bytes() == (
        models / "remote" / "model.ubj"
    ).read_bytes()
    assert second["model_dir"].endswith("again")
    log = (ws / "logs" / "run-remote.log").read_text()
    assert "AAA: gcs delivered" in log and "BBB: polygon delivered" in log


def test_synthetic_tickers_made_as_ray_tasks_are_the_ones_made_in_process(
    tmp_path, ray_session, monkeypatch
):
    """Past `chain.PARALLEL_TICKER_YEARS` of synthetic bars `resolve` makes them as Ray tasks
    pinned to this node (lowered to 0 here so three short tickers take that path): the files are
    byte for byte those made one after the other in this process, and the next resolve reuses
    them."""
    tickers = "[AAA,BBB,CCC]"
    made = {}
    for how, threshold in (("in_process", 1e9), ("ray", 0)):
        monkeypatch.setattr(chain, "PARALLEL_TICKER_YEARS", threshold)
        cfg = load_config(1, overrides=tiny_overrides(tmp_path / how, f"data.tickers={tickers}"))
        out, _ = chain.resolve(cfg, cfg.data.start, cfg.backtest.end)
        made[how] = {t: pq.read_table(td.path) for t, td in out.items()}
        assert all(td.synthetic and td.origins[0]["how"] == "generated" for td in out.values())
    for t in ("AAA", "BBB", "CCC"):
        assert made["ray"][t].equals(made["in_process"][t])
        assert made["ray"][t].schema.metadata == made["in_process"][t].schema.metadata
    again, _ = chain.resolve(cfg, cfg.data.start, cfg.backtest.end)
    assert {td.origins[0]["how"] for td in again.values()} == {"cached"}
