"""Every network call has a deadline: dead or silent endpoints cost seconds, not the run.

Real sockets on 127.0.0.1: one that accepts connections and never answers (a hung proxy or a
black-holed server: before, `data fetch` against it as `gcs.endpoint_url` printed nothing for 25
minutes), a refused port, and a name that does not resolve (offline: before, each ticker cost
~90 s of Polygon retries and the run then blamed a missing key). Each scenario runs in a thread
that must end within a generous bound: a hang fails the test, a slow machine does not.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from vpt_ray.core.config import load_config
from vpt_ray.data import gcs, polygon_transport
from vpt_ray.data.errors import SourceError

HANG_LIMIT_S = 120  # far above the seconds these take; only a hang reaches it


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)  # keep it open, read nothing, answer nothing

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    t.join(timeout=5)
    for c in held:
        c.close()
    server.close()


@pytest.fixture
def refused_endpoint() -> str:
    """http://127.0.0.1:PORT where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def fresh_source_state(monkeypatch):
    """Down-marks and probes are per process (one run); each test starts clean."""
    monkeypatch.setattr(gcs, "_DOWN", {}, raising=False)
    monkeypatch.setattr(gcs, "_PROBES", {})
    monkeypatch.setattr(polygon_transport, "_HEALTH", {}, raising=False)
    monkeypatch.setattr(polygon_transport, "_PACERS", {})


def within_limit(fn: Callable[[], object]) -> object:
    """fn() in a thread; fails the test if it is still running after HANG_LIMIT_S."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_LIMIT_S)
    assert not t.is_alive(), f"still waiting after {HANG_LIMIT_S} s: no deadline"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _cfg(tmp_path, *extra: str):
    return load_config(
        1,
        overrides=[
            "data.tickers=[AAA,BBB,CCC,DDD]",
            "data.start=2024-01-02",
            "data.end=2024-01-12",
            "backtest.start=2024-01-17",
            "backtest.end=2024-01-19",
            f"data.dir={tmp_path / 'data'}",
            *extra,
        ],
    )


# ---- GCS ----------------------------------------------------------------------------------------


def test_data_fetch_against_a_silent_gcs_endpoint_ends_in_seconds(
    tmp_path, silent_endpoint, capsys, caplog
):
    cfg = _cfg(
        tmp_path,
        "data.sources=[local,gcs]",
        f"gcs.endpoint_url={silent_endpoint}",
        "gcs.token=anon",
        "gcs.bucket_path=bkt/stocks",
        "gcs.read_timeout_s=1",
        "gcs.ticker_deadline_s=3",
    )
    from vpt_ray.pipeline.data_cli import fetch

    caplog.set_level(logging.INFO)
    assert within_limit(lambda: fetch(cfg)) == 1  # incomplete: no source had the bars
    out = capsys.readouterr().out
    assert "got no answer within 3 s (gcs.ticker_deadline_s = 3 s" in out + caplog.text
    down = [r for r in caplog.records if "GCS is down for the rest of this run" in r.message]
    assert len(down) == 1  # one clear line, then the other tickers skip it


def test_a_gcs_read_that_never_answers_marks_gcs_down(silent_endpoint):
    src = gcs.GcsSource(
        gcs.GcsConfig(
            endpoint_url=silent_endpoint, token="anon", bucket_path="bkt/stocks",
            read_timeout_s=1, connect_timeout_s=1, ticker_deadline_s=2,
        )
    )  # fmt: skip
    with pytest.raises(SourceError, match="reading gs://bkt/stocks/AAA.parquet at http") as err:
        within_limit(lambda: src._read_object(src.object_path("AAA"), "AAA"))
    assert "no answer within 2 s (gcs.ticker_deadline_s = 2 s" in str(err.value)
    assert "GCS is down" not in str(err.value) and src.unavailable_reason() == err.value.cause
    with pytest.raises(SourceError, match="got no answer within 2 s"):  # at once now
        src.fetch("BBB", dt.date(2024, 1, 2), dt.date(2024, 1, 5))


# ---- Polygon ------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["refused", "dns"])
def test_polygon_unreachable_is_not_retried_and_goes_down(
    tmp_path, monkeypatch, refused_endpoint, endpoint, caplog
):
    """No server at all: one request per ticker, not retried and not paced (no quota used), then
    down for the run after polygon.down_after (3) in a row; the fourth ticker sends nothing. The
    synthetic banner says why, not 'no key'."""
    base = refused_endpoint if endpoint == "refused" else "http://vpt-ray-offline-test.invalid"
    monkeypatch.setenv("POLYGON_API_KEY", "pk-test-not-a-real-key")
    cfg = _cfg(
        tmp_path,
        "data.sources=[local,polygon,synthetic]",
        f"polygon.base_url={base}",
        "polygon.requests_per_minute=5",  # the free tier: 12 s between requests that reach it
        "polygon.max_retries=5",
        "polygon.backoff_s=2",
    )
    from vpt_ray.pipeline import stages

    caplog.set_level(logging.INFO)
    data = within_limit(lambda: stages.load_data(cfg))
    assert data.synthetic and set(data.tickers) == {"AAA", "BBB", "CCC", "DDD"}
    health = polygon_transport._HEALTH[base]
    assert health.total_failures == 3 and health.down  # 3 requests in all, then down
    pacer = polygon_transport.shared_pacer(cfg.polygon)
    assert pacer.waited_s == 0  # they used no quota: no pacing
    text = caplog.text
    assert "retry" not in text.lower()
    assert "not retried (a DNS or connection failure: no server answered)" in text
    assert "cannot connect to " + base in text
    down = [r for r in caplog.records if r.name == "vpt_ray.data.polygon" and "down" in r.message]
    assert len(down) == 1 and "3 requests in a row got no answer from " + base in down[0].message
    banner = next(r.message for r in caplog.records if "SYNTHETIC MARKET" in r.message)
    assert "polygon: down for this run" in banner and "no API key" not in banner
    assert "pk-test-not-a-real-key" not in text


def test_polygon_silent_server_times_out_and_goes_down(tmp_path, monkeypatch, silent_endpoint):
    """A server that accepts and never answers: read timeouts are retried (it may be a hiccup),
    then count toward down (`polygon.down_after=2` here): the third ticker sends nothing."""
    monkeypatch.setenv("POLYGON_API_KEY", "pk-test")
    cfg = _cfg(
        tmp_path,
        "data.tickers=[AAA,BBB,CCC]",
        "data.sources=[local,polygon,synthetic]",
        "polygon.down_after=2",
        f"polygon.base_url={silent_endpoint}",
        "polygon.requests_per_minute=60000",
        "polygon.timeout_s=0.5",
        "polygon.max_retries=1",
        "polygon.backoff_s=0.1",
    )
    from vpt_ray.pipeline import stages

    data = within_limit(lambda: stages.load_data(cfg))
    assert data.synthetic
    health = polygon_transport._HEALTH[silent_endpoint]
    assert health.down and "ReadTimeoutError" in health.down
    assert health.total_failures == 2  # the third ticker did not try
