"""PolygonSource against a real HTTP server on 127.0.0.1, through the real `polygon.RESTClient`.

Each fault (429 storm, 5xx, dropped connection, malformed body, status ERROR, 401, empty results)
is produced by tests/polygon_server.py on the wire; nothing in the client or urllib3 is mocked.
Waits are made tiny through the config (requests_per_minute, backoff_s) or a recording sleep.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd
import pytest
from polygon_server import PolygonServer
from remote_fixtures import daily_bars, minute_bars

from vpt_ray.core import calendar as xcal
from vpt_ray.core.config import PolygonConfig
from vpt_ray.data.bars import BarDataError, validate_bars
from vpt_ray.data.errors import SourceError
from vpt_ray.data.polygon import PolygonSource, chunk_ranges, polygon_span
from vpt_ray.data.polygon_transport import Pacer, RetryPolicy, strip_api_key

KEY = "pk_TEST_9f3Kq2ZsX7wLm4Rv"  # distinctive, so a leak anywhere is detectable
D = dt.date


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return minute_bars(D(2024, 10, 1), D(2025, 1, 31), seed=3)


@pytest.fixture(scope="module")
def _server(bars):
    with PolygonServer(api_key=KEY) as srv:
        srv.add_bars("AAPL", bars)
        srv.add_bars("AAPL", bars, multiplier=5)  # contents are irrelevant: checks the route
        srv.add_bars("SPY", daily_bars(D(2024, 1, 2), D(2024, 12, 31)), timespan="day")
        yield srv


@pytest.fixture
def server(_server):
    _server.reset()
    _server.page_size = 50_000
    _server.key_in_next_url = False
    yield _server
    _server.reset()


class Sleeps:
    """A recording `sleep` for RetryPolicy: the waits are asserted, not slept."""

    def __init__(self):
        self.waits: list[float] = []

    def __call__(self, s: float) -> None:
        self.waits.append(s)


def source(server, *, key=KEY, bar="1min", retry=None, pacer=None, **cfg) -> PolygonSource:
    base = dict(
        base_url=server.base_url, requests_per_minute=60_000, backoff_s=0.001, timeout_s=2.0
    )
    base.update(cfg)
    return PolygonSource(
        PolygonConfig(**base), bar=bar, env={"POLYGON_API_KEY": key}, retry=retry, pacer=pacer
    )


def expected(bars: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """What a correct fetch returns: the server's bars, regular session, exchange dates in range."""
    minutes = xcal.session_minutes(start, end)
    return bars[bars["timestamp"].isin(minutes)].reset_index(drop=True)


# -- mapping, session filter, chunking, pagination ----------------------------------------------


def test_fetch_returns_contract_bars_of_the_regular_session_only(server, bars):
    # Thanksgiving week: a holiday (11-28) and a half day (11-29, close 13:00 ET)
    start, end = D(2024, 11, 25), D(2024, 11, 29)
    got = source(server).fetch("AAPL", start, end)
    want = expected(bars, start, end)
    pd.testing.assert_frame_equal(got, want)
    validate_bars(got, "test")
    per_day = got.groupby(xcal.exchange_dates(got["timestamp"])).size()
    assert D(2024, 11, 28) not in {pd.Timestamp(d).date() for d in per_day.index}
    half = got[xcal.exchange_dates(got["timestamp"]) == np.datetime64("2024-11-29")]
    last_et = half["timestamp"].max().tz_convert("America/New_York")
    assert (last_et.hour, last_et.minute) <= (12, 59)
    assert len(bars[bars["timestamp"].dt.date.between(start, end)]) > len(got)  # extended hours
    req = server.requests[0]
    assert (req.path, req.query["adjusted"], req.query["sort"], req.query["limit"]) == (
        "/v2/aggs/ticker/AAPL/range/1/minute/2024-11-25/2024-11-29",
        "true",
        "asc",
        "50000",
    )


def test_pagination_follows_next_url(server, bars):
    server.page_size = 700
    start, end = D(2024, 12, 2), D(2024, 12, 6)
    got = source(server).fetch("AAPL", start, end)
    pd.testing.assert_frame_equal(got, expected(bars, start, end))
    raw_rows = int(
        bars["timestamp"].dt.tz_convert("America/New_York").dt.date.between(start, end).sum()
    )
    assert len(server.requests) == -(-raw_rows // 700) > 1
    assert [r.page for r in server.requests] == list(range(1, len(server.requests) + 1))
    assert all("cursor" in r.query for r in server.requests[1:])


def test_chunks_are_requested_trimmed_to_sessions_and_delivered_in_order(server, bars):
    start, end = D(2024, 11, 1), D(2024, 12, 31)
    chunks: list[pd.DataFrame] = []
    src = source(server, chunk_days=14)
    got = src.fetch("AAPL", start, end, on_chunk=chunks.append)
    plan = [
        (xcal.sessions(a, b)[0].date(), xcal.sessions(a, b)[-1].date())
        for a, b in chunk_ranges(start, end, 14)
        if len(xcal.sessions(a, b))
    ]
    assert [(r.frm, r.to) for r in server.requests] == [(str(a), str(b)) for a, b in plan]
    assert len(chunks) == len(plan) == src.stats.chunks
    for (a, b), chunk in zip(plan, chunks, strict=True):
        days = xcal.exchange_dates(chunk["timestamp"])
        assert days.min() >= np.datetime64(a) and days.max() <= np.datetime64(b)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), got)
    pd.testing.assert_frame_equal(got, expected(bars, start, end))


def test_chunk_without_sessions_is_not_requested(server):
    # 2024-12-25 (holiday) .. 2024-12-25 and a weekend: nothing to ask for
    src = source(server, chunk_days=1)
    assert src.fetch("AAPL", D(2024, 12, 21), D(2024, 12, 22)).empty
    assert src.fetch("AAPL", D(2024, 12, 25), D(2024, 12, 25)).empty
    assert server.requests == []


def test_bar_sizes_map_to_polygon_ranges(server):
    assert polygon_span("1min") == (1, "minute")
    assert polygon_span("15min") == (15, "minute")
    assert polygon_span("1day") == (1, "day")
    with pytest.raises(ValueError, match="'2h' is not a Polygon bar size"):
        polygon_span("2h")
    source(server, bar="5min").fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    assert server.requests[0].path.startswith("/v2/aggs/ticker/AAPL/range/5/minute/")


def test_daily_bars_keep_polygons_midnight_eastern_stamp(server):
    got = source(server, bar="1day").fetch("SPY", D(2024, 7, 1), D(2024, 7, 12))
    et = got["timestamp"].dt.tz_convert("America/New_York")
    assert (et.dt.hour == 0).all() and (et.dt.minute == 0).all()
    assert str(got["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert [d.isoformat() for d in et.dt.date] == [
        s.date().isoformat() for s in xcal.sessions(D(2024, 7, 1), D(2024, 7, 12))
    ]  # July 4th absent, half day July 3rd present
    assert server.requests[0].path.endswith("/range/1/day/2024-07-01/2024-07-12")


# -- pacing --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_pacer_spaces_requests_on_a_fake_clock():
    clock = FakeClock()
    pacer = Pacer(5, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(6):
        pacer.acquire()
        times.append(clock.now - 1000.0)
    assert times == pytest.approx([0, 12, 24, 36, 48, 60])
    assert pacer.waited_s == pytest.approx(60)
    clock.now += 100  # idle: the bucket refills, but only up to its capacity of 1
    assert pacer.acquire() == 0
    assert pacer.acquire() == pytest.approx(12)


def test_pacer_burst_capacity_then_rate():
    clock = FakeClock()
    pacer = Pacer(60, capacity=3, clock=clock, sleep=clock.sleep)
    waits = [pacer.acquire() for _ in range(5)]
    assert waits == pytest.approx([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="per_minute must be > 0"):
        Pacer(0)


def test_fetch_paces_every_request_including_pages(server):
    """Server-side arrival times: at 600/minute no two requests come closer than 0.1 s."""
    server.page_size = 2000
    src = source(server, requests_per_minute=600, chunk_days=7)
    src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 13))
    sent = np.array(src.stats.request_times)  # monotonic clock when each request left
    arrivals = np.array([r.time for r in server.requests])  # same clock, server side
    assert len(sent) == len(arrivals) == src.stats.requests >= 4
    assert np.diff(sent).min() >= 0.1 - 1e-6
    assert (arrivals >= sent).all()  # the server saw no request before the pacer let it go
    assert arrivals[-1] - arrivals[0] >= 0.1 * (len(arrivals) - 1) - 0.05


def test_sources_built_per_ticker_share_one_pacer(server):
    """The chain builds a source per ticker; the rate limit must hold across them."""
    cfg = PolygonConfig(base_url=server.base_url, requests_per_minute=300)
    first = PolygonSource(cfg, env={"POLYGON_API_KEY": KEY})
    second = PolygonSource(cfg.model_copy(), env={"POLYGON_API_KEY": KEY})
    assert first.pacer is second.pacer
    first.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    second.fetch("AAPL", D(2024, 12, 3), D(2024, 12, 3))
    (a,), (b,) = first.stats.request_times, second.stats.request_times
    assert b - a >= 0.2 - 1e-6
    assert server.requests[1].time >= b


def test_results_that_are_not_objects_are_a_clear_error(server):
    server.fault("odd_results")
    with pytest.raises(
        SourceError, match=r"AAPL 2024-12-02\.\.2024-12-02: unexpected payload shape"
    ):
        source(server).fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))


def test_fetch_on_a_fake_clock_waits_what_the_free_tier_needs(server):
    clock = FakeClock()
    src = source(server, pacer=Pacer(5, clock=clock, sleep=clock.sleep), chunk_days=30)
    src.fetch("AAPL", D(2024, 10, 1), D(2024, 12, 31))
    n = len(server.requests)
    assert n == src.stats.requests == 4  # 10-01..10-30, 10-31..11-29, 11-30..12-29, 12-30..12-31
    assert src.pacer.waited_s == pytest.approx(12 * (n - 1))
    assert np.diff(src.stats.request_times) == pytest.approx([12.0] * (n - 1))


# -- retries -------------------------------------------------------------------------------------


def test_429_storm_honours_retry_after_then_succeeds(server, bars):
    server.fault("http", status=429, retry_after="7", times=4)
    sleeps = Sleeps()
    src = source(server, retry=RetryPolicy(max_retries=5, backoff_s=0.5, sleep=sleeps))
    got = src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    pd.testing.assert_frame_equal(got, expected(bars, D(2024, 12, 2), D(2024, 12, 2)))
    assert [r.status for r in server.requests] == [429, 429, 429, 429, 200]
    assert sleeps.waits == [7.0, 7.0, 7.0, 7.0]
    assert src.stats.retries == 4


def test_retry_after_is_capped(server):
    server.fault("http", status=429, retry_after="86400")
    sleeps = Sleeps()
    retry = RetryPolicy(max_retries=2, retry_after_max_s=30, sleep=sleeps)
    source(server, retry=retry).fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    assert sleeps.waits == [30.0]


def test_5xx_then_success_backs_off_exponentially(server, bars):
    for status in (500, 502, 503):
        server.fault("http", status=status)
    sleeps = Sleeps()
    src = source(server, retry=RetryPolicy(max_retries=5, backoff_s=0.5, sleep=sleeps))
    got = src.fetch("AAPL", D(2024, 12, 3), D(2024, 12, 3))
    assert len(got) == len(expected(bars, D(2024, 12, 3), D(2024, 12, 3))) > 300
    assert sleeps.waits == [0.5, 1.0, 2.0]
    assert [r.status for r in server.requests] == [500, 502, 503, 200]


def test_backoff_waits_really_happen_with_the_default_sleep(server):
    server.fault("http", status=503, times=2)
    src = source(server, backoff_s=0.05)
    src.fetch("AAPL", D(2024, 12, 3), D(2024, 12, 3))
    arrivals = [r.time for r in server.requests]
    assert arrivals[1] - arrivals[0] >= 0.05 - 0.005
    assert arrivals[2] - arrivals[1] >= 0.10 - 0.005


def test_retries_exhausted_is_a_clear_error(server):
    server.fault("http", status=503, times=None, message="upstream overloaded")
    src = source(server, max_retries=3)
    with pytest.raises(SourceError) as info:
        src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 6))
    msg = str(info.value)
    assert msg.startswith("polygon: AAPL 2024-12-02..2024-12-06: gave up after 4 attempt(s)")
    assert "HTTP 503: upstream overloaded" in msg
    assert info.value.retryable and info.value.ticker == "AAPL"
    assert len(server.requests) == 4


def test_timeout_is_retried_then_succeeds(server):
    server.fault("slow", delay_s=0.6)
    src = source(server, timeout_s=0.2)
    got = src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    assert len(got) > 300
    assert src.stats.retries == 1


def test_truncated_body_is_retried(server):
    server.fault("truncate")
    got = source(server).fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    assert len(got) > 300 and len(server.requests) == 2


# -- bad answers ---------------------------------------------------------------------------------


def test_status_error_is_a_clear_error_and_not_retried(server):
    server.fault("error_status", message="Internal error, please retry")
    with pytest.raises(
        SourceError, match=r"AAPL 2024-12-02\.\.2024-12-02: response status 'ERROR'"
    ):
        source(server).fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    assert len(server.requests) == 1


def test_malformed_json_is_a_clear_error(server):
    server.fault("malformed")
    with pytest.raises(SourceError, match="malformed JSON body"):
        source(server).fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    server.fault("not_utf8")
    with pytest.raises(SourceError, match="not UTF-8"):
        source(server).fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))


def test_401_names_the_key_variable_not_the_key(server):
    src = source(server, key="pk_WRONG_x81hd")
    with pytest.raises(SourceError) as info:
        src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))
    msg = str(info.value)
    assert "HTTP 401" in msg and "POLYGON_API_KEY" in msg and "Unknown API Key" in msg
    assert "pk_WRONG_x81hd" not in msg and not info.value.retryable
    assert len(server.requests) == 1  # a rejected key is not retried


def test_empty_results_give_an_empty_frame_and_a_warning(server, caplog):
    server.fault("empty", times=None)
    chunks = []
    with caplog.at_level(logging.WARNING, logger="vpt_ray.data.polygon"):
        got = source(server).fetch("AAPL", D(2024, 12, 2), D(2024, 12, 6), on_chunk=chunks.append)
    assert got.empty and list(got.columns) == list(validate_bars(got, "x").columns)
    assert chunks == []
    assert "AAPL 2024-12-02..2024-12-06: no bars returned for 5 session(s)" in caplog.text


def test_one_empty_chunk_does_not_hide_the_others(server, bars):
    server.fault("empty", when=lambda r: r.frm == "2024-12-09")
    src = source(server, chunk_days=7)
    got = src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 20))
    days = set(xcal.exchange_dates(got["timestamp"]).astype(str))
    assert "2024-12-06" in days and "2024-12-16" in days
    assert not any("2024-12-09" <= d <= "2024-12-13" for d in days)
    assert src.stats.empty_chunks == 1


def test_aggregate_without_vwap_is_rejected_naming_the_field(server):
    t0 = int(pd.Timestamp("2024-12-02 15:00", tz="UTC").value // 1_000_000)
    rows = [
        {"t": t0, "o": 10.0, "h": 10.5, "l": 9.9, "c": 10.1, "v": 100.0, "vw": 10.2, "n": 3},
        {"t": t0 + 60_000, "o": 10.1, "h": 10.2, "l": 10.0, "c": 10.1, "v": 50.0, "n": 2},
    ]
    server.add_raw("NOVW", rows)
    with pytest.raises(SourceError, match=r"1 aggregate\(s\) lack field 'vw' \(vwap\)"):
        source(server).fetch("NOVW", D(2024, 12, 2), D(2024, 12, 2))


def test_contract_breach_in_the_payload_is_a_bar_data_error(server):
    t0 = int(pd.Timestamp("2024-12-02 15:00", tz="UTC").value // 1_000_000)
    rows = [{"t": t0, "o": 10.0, "h": 10.5, "l": 9.9, "c": 10.1, "v": 100.0, "vw": 12.0, "n": 3}]
    server.add_raw("BADVW", rows)
    with pytest.raises(BarDataError, match=r"polygon BADVW 2024-12-02\.\.2024-12-02: vwap outside"):
        source(server).fetch("BADVW", D(2024, 12, 2), D(2024, 12, 2))


# -- interruption and resume ---------------------------------------------------------------------


def test_connection_drop_mid_pagination_keeps_delivered_chunks(server, bars):
    server.page_size = 1000
    chunk2 = "2024-12-09"
    server.fault("drop", times=None, when=lambda r: r.frm == chunk2 and r.page == 2)
    chunks: list[pd.DataFrame] = []
    src = source(server, chunk_days=7, max_retries=2)
    with pytest.raises(SourceError) as info:
        src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 20), on_chunk=chunks.append)
    assert "AAPL 2024-12-09..2024-12-13: gave up after 3 attempt(s)" in str(info.value)
    assert "RemoteDisconnected" in str(info.value) and info.value.retryable
    assert len(chunks) == 1
    pd.testing.assert_frame_equal(chunks[0], expected(bars, D(2024, 12, 2), D(2024, 12, 6)))
    dropped = [r for r in server.requests if r.fault == "drop"]
    assert len(dropped) == 3 and all(r.page == 2 for r in dropped)
    assert not any(r.frm == "2024-12-16" for r in server.requests)  # stopped at the failure

    # the resumed fetch asks only for what is missing and completes the period
    server.reset()
    rest = src.fetch("AAPL", D(2024, 12, 9), D(2024, 12, 20), on_chunk=chunks.append)
    assert {r.frm for r in server.requests} == {"2024-12-09", "2024-12-16"}
    whole = pd.concat([chunks[0], rest], ignore_index=True)
    pd.testing.assert_frame_equal(whole, expected(bars, D(2024, 12, 2), D(2024, 12, 20)))


def test_a_single_drop_mid_pagination_is_retried_transparently(server, bars):
    server.page_size = 1000
    server.fault("drop", when=lambda r: r.page == 3)
    got = source(server).fetch("AAPL", D(2024, 12, 2), D(2024, 12, 6))
    pd.testing.assert_frame_equal(got, expected(bars, D(2024, 12, 2), D(2024, 12, 6)))
    assert [r.page for r in server.requests if r.fault is None][:3] == [1, 2, 3]


# -- the key -------------------------------------------------------------------------------------


def test_no_key_is_unavailable_with_the_variable_named():
    src = PolygonSource(PolygonConfig(api_key_env="MY_POLY_KEY"), env={})
    assert src.unavailable_reason() == "no API key: set the environment variable MY_POLY_KEY"
    with pytest.raises(SourceError, match=r"polygon: AAPL 2024-01-02\.\.2024-01-05: no API key"):
        src.fetch("AAPL", D(2024, 1, 2), D(2024, 1, 5))
    assert PolygonSource(PolygonConfig(), env={"POLYGON_API_KEY": "  "}).unavailable_reason()


def test_key_from_the_named_variable_is_sent_as_bearer(server):
    src = PolygonSource(
        PolygonConfig(base_url=server.base_url, api_key_env="OTHER_VAR"), env={"OTHER_VAR": KEY}
    )
    assert src.unavailable_reason() is None
    assert len(src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 2))) > 300
    assert server.requests[0].authorized and "apiKey" not in server.requests[0].query


def test_strip_api_key_removes_only_the_key():
    url = "http://h/v2/aggs/ticker/A/range/1/minute/1/2?cursor=abc&apiKey=SECRET&limit=5"
    assert strip_api_key(url) == "http://h/v2/aggs/ticker/A/range/1/minute/1/2?cursor=abc&limit=5"
    assert strip_api_key("http://h/x?cursor=abc") == "http://h/x?cursor=abc"


def test_the_key_never_appears_in_logs_errors_or_reprs(server, caplog):
    """The server puts apiKey in next_url (as some proxies do); every failure path is exercised."""
    server.key_in_next_url = True
    server.page_size = 500
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)  # urllib3 logs every URL at DEBUG
    src = source(server, max_retries=1)
    texts.append(repr(src))
    # pagination with the key in next_url, one page dropped once: retried and logged
    server.fault("drop", when=lambda r: r.page == 2)
    src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 3))
    assert all(r.authorized for r in server.requests)
    assert all("apiKey" not in r.query for r in server.requests)  # stripped before sending
    # exhausted retries on a later page, status ERROR, malformed body, 5xx
    faults = [
        ("drop", dict(times=None, when=lambda r: r.page == 2)),
        ("error_status", dict(message=f"bad request for key {KEY}")),  # a server echoing the key
        ("malformed", {}),
        ("http", dict(status=500, times=None, message=f"oops {KEY}")),
    ]
    for kind, kw in faults:
        server.reset()
        server.fault(kind, **kw)
        with pytest.raises(SourceError) as info:
            src.fetch("AAPL", D(2024, 12, 2), D(2024, 12, 3))
        exc: BaseException | None = info.value
        while exc is not None:  # the whole chain, as a traceback would print it
            texts += [str(exc), repr(exc)]
            exc = exc.__cause__ or exc.__context__
    texts.append(caplog.text)
    texts += [str(r.args) for r in caplog.records]
    assert "RemoteDisconnected" in caplog.text  # the retry was logged...
    assert any("***" in t for t in texts)  # ...and the echoed key was redacted
    leaks = [t for t in texts if KEY in t]
    assert leaks == []


# -- calendar helpers used by every source --------------------------------------------------------


def test_session_minutes_match_exchange_calendars_with_half_days_and_holidays():
    import exchange_calendars as xcals

    m = xcal.session_minutes(D(2024, 11, 25), D(2024, 12, 1))
    per_day = pd.Series(1, index=xcal.exchange_dates(m)).groupby(level=0).size()
    assert per_day.to_dict() == {
        np.datetime64("2024-11-25"): 390,
        np.datetime64("2024-11-26"): 390,
        np.datetime64("2024-11-27"): 390,
        np.datetime64("2024-11-29"): 210,  # half day after Thanksgiving
    }
    lib = xcals.get_calendar("XNYS", side="left")
    assert m.equals(lib.sessions_minutes("2024-11-25", "2024-11-29"))
    assert m[0] == pd.Timestamp("2024-11-25 14:30", tz="UTC")
    assert len(xcal.session_minutes(D(2024, 12, 25), D(2024, 12, 25))) == 0


def test_in_session_mask_bounds_are_open_inclusive_close_exclusive():
    ts = pd.to_datetime(
        [
            "2024-11-29 14:29",  # 09:29 ET pre-market
            "2024-11-29 14:30",  # open
            "2024-11-29 17:59",  # last bar of the half day
            "2024-11-29 18:00",  # 13:00 ET: closed
            "2024-12-02 20:59",  # last bar of a full day
            "2024-12-02 21:00",  # 16:00 ET
            "2024-12-25 15:00",  # Christmas
        ],
        utc=True,
    )
    assert xcal.in_session_mask(ts).tolist() == [False, True, True, False, True, False, False]
    with pytest.raises(ValueError, match="timezone-naive"):
        xcal.in_session_mask(ts.tz_localize(None))
    with pytest.raises(ValueError, match="outside calendar XNYS"):
        xcal.sessions(D(1980, 1, 2), D(1980, 1, 3))
    with pytest.raises(ValueError, match="'NOPE' is not an exchange_calendars name"):
        xcal.get_calendar("NOPE")


def test_filter_regular_session_daily_keeps_session_dates():
    df = daily_bars(D(2024, 12, 20), D(2024, 12, 31))
    holiday = df.iloc[:1].assign(timestamp=pd.Timestamp("2024-12-25 05:00", tz="UTC"))
    mixed = pd.concat([df, holiday]).sort_values("timestamp", ignore_index=True)
    kept = xcal.filter_regular_session(mixed, daily=True)
    pd.testing.assert_frame_equal(kept, df)
    assert xcal.filter_regular_session(df).empty  # midnight stamps are not intraday session bars
