"""A small Polygon aggregates server on 127.0.0.1 for driving the real `polygon.RESTClient`.

It speaks `GET /v2/aggs/ticker/{T}/range/{mult}/{span}/{from}/{to}` like api.polygon.io: JSON
with `results` (o h l c v vw t n), `resultsCount`, `status`, and `next_url` with an opaque cursor
when a page is full. The key is checked like Polygon does (Authorization: Bearer, or `apiKey` in
the query); a wrong key gets a 401. Faults are scriptable per request (`fault(...)`): an HTTP
status with an optional Retry-After, a malformed or non-UTF-8 body, `status: ERROR`, empty
results, a dropped connection (before or in the middle of the body), or a slow answer. Every
request is recorded (`requests`) so tests can count requests and check pacing server-side.

Usage:
    with PolygonServer(api_key="k") as srv:
        srv.add_bars("AAPL", df)           # contract frame (timestamp, open, ..., transactions)
        srv.fault("http", status=429, retry_after="1", times=2)
        RESTClient(api_key="k", base=srv.base_url).list_aggs(...)
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import datetime as dt
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pandas as pd

AGGS_PATH = re.compile(
    r"^/v2/aggs/ticker/(?P<ticker>[^/]+)/range/(?P<mult>\d+)/(?P<span>[a-z]+)/"
    r"(?P<frm>[^/]+)/(?P<to>[^/?]+)$"
)
FAULT_KINDS = (
    "http",  # send `status` (default 500) with an error JSON body and optional Retry-After
    "malformed",  # 200 with a truncated JSON body
    "not_utf8",  # 200 with bytes that are not UTF-8
    "error_status",  # 200 with {"status": "ERROR", "error": ...}
    "empty",  # 200 with status OK and no results
    "odd_results",  # 200 with status OK and results that are not objects
    "drop",  # close the connection without answering
    "truncate",  # send headers and half the body, then close
    "slow",  # answer normally after `delay_s`
)
EXCHANGE_TZ = "America/New_York"


@dataclass
class Fault:
    kind: str
    status: int = 500
    retry_after: str | None = None
    times: int | None = 1  # None = every matching request
    when: Callable[[Recorded], bool] | None = None
    delay_s: float = 1.0
    message: str = "scripted fault"


@dataclass
class Recorded:
    """One request as the server saw it."""

    time: float  # time.monotonic() on arrival
    path: str
    query: dict[str, str]
    ticker: str | None
    frm: str | None
    to: str | None
    page: int  # 1 for the first page, 2 for the page after the first next_url, ...
    authorized: bool
    status: int = 0  # HTTP status sent (0 = connection dropped)
    fault: str | None = None
    extra: dict = field(default_factory=dict)


def _ms(ts: pd.Series) -> list[int]:
    return (ts.astype("datetime64[ns, UTC]").astype("int64") // 1_000_000).tolist()


def _bound_ms(value: str, end: bool) -> int:
    """A path bound (YYYY-MM-DD in exchange time, or Unix ms) -> inclusive ms bound."""
    if value.isdigit():
        return int(value)
    day = dt.date.fromisoformat(value)
    if end:
        day += dt.timedelta(days=1)
    ms = pd.Timestamp(day).tz_localize(EXCHANGE_TZ).tz_convert("UTC").value // 1_000_000
    return ms - 1 if end else ms


class PolygonServer:
    """Threaded HTTP server holding per-(ticker, multiplier, timespan) bars and a fault script."""

    def __init__(self, api_key: str = "test-key", page_size: int = 50_000, key_in_next_url=False):
        self.api_key = api_key
        self.page_size = page_size
        self.key_in_next_url = key_in_next_url
        self.requests: list[Recorded] = []
        self._bars: dict[tuple[str, int, str], dict[str, list]] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup -------------------------------------------------------------------------------
    def add_bars(self, ticker: str, df: pd.DataFrame, multiplier: int = 1, timespan="minute"):
        """Serve `df` (contract columns) for `ticker` at this bar size, replacing what was there."""
        df = df.sort_values("timestamp")
        cols = {
            "t": _ms(df["timestamp"]),
            "o": df["open"].tolist(),
            "h": df["high"].tolist(),
            "l": df["low"].tolist(),
            "c": df["close"].tolist(),
            "v": df["volume"].tolist(),
            "vw": df["vwap"].tolist(),
            "n": df["transactions"].tolist(),
        }
        with self._lock:
            self._bars[(ticker, multiplier, timespan)] = cols

    def add_raw(self, ticker: str, rows: list[dict], multiplier: int = 1, timespan="minute"):
        """Serve exactly these result dicts (for payloads the contract frame cannot express)."""
        rows = sorted(rows, key=lambda r: r["t"])
        cols = {k: [r.get(k) for r in rows] for k in ("t", "o", "h", "l", "c", "v", "vw", "n")}
        with self._lock:
            self._bars[(ticker, multiplier, timespan)] = cols

    def fault(self, kind: str, **kw) -> Fault:
        """Script a fault for the next matching request(s); faults are consumed in order."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {FAULT_KINDS}")
        f = Fault(kind, **kw)
        with self._lock:
            self._faults.append(f)
        return f

    def reset(self) -> None:
        """Forget recorded requests and pending faults (bars stay)."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> PolygonServer:
        server = self

        class Handler(_Handler):
            srv = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> PolygonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------
    def _take_fault(self, req: Recorded) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.times is not None and f.times <= 0:
                    continue
                if f.when is not None and not f.when(req):
                    continue
                if f.times is not None:
                    f.times -= 1
                return f
        return None

    def _page(self, key: tuple[str, int, str], lo: int, hi: int, offset: int, limit: int):
        with self._lock:
            cols = self._bars.get(key)
        if cols is None:
            return [], False
        t = cols["t"]
        i0 = bisect.bisect_left(t, lo)
        i1 = bisect.bisect_right(t, hi)
        start = i0 + offset
        stop = min(i1, start + limit)
        rows = [{k: cols[k][i] for k in cols if cols[k][i] is not None} for i in range(start, stop)]
        return rows, stop < i1


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's
        """A client that hung up before its answer was written (a test's client timeout against
        a `slow` fault) is part of the script: no traceback on the test output. Any other error
        is printed as socketserver does."""
        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe, ConnectionReset
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    srv: PolygonServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - silence per-request stderr lines
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        srv = self.srv
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        auth = self.headers.get("Authorization", "")
        authorized = auth == f"Bearer {srv.api_key}" or query.get("apiKey") == srv.api_key
        m = AGGS_PATH.match(parts.path)
        cursor = query.get("cursor")
        state = json.loads(base64.urlsafe_b64decode(cursor.encode())) if cursor else {}
        rec = Recorded(
            time=time.monotonic(),
            path=parts.path,
            query=query,
            ticker=m["ticker"] if m else None,
            frm=m["frm"] if m else None,
            to=m["to"] if m else None,
            page=int(state.get("page", 1)),
            authorized=authorized,
        )
        with srv._lock:
            srv.requests.append(rec)
        request_id = f"req-{len(srv.requests)}"
        if not authorized:
            rec.status = 401
            self._json(
                401, {"status": "ERROR", "request_id": request_id, "error": "Unknown API Key"}
            )
            return
        if m is None:
            rec.status = 404
            self._json(
                404, {"status": "NOT_FOUND", "request_id": request_id, "message": "no route"}
            )
            return
        fault = srv._take_fault(rec)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "http":
                rec.status = fault.status
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                body = {"status": "ERROR", "request_id": request_id, "error": fault.message}
                self._json(fault.status, body, headers)
                return
            if fault.kind == "malformed":
                rec.status = 200
                self._send(200, b'{"status": "OK", "results": [{"o": 1.0, "h": ')
                return
            if fault.kind == "not_utf8":
                rec.status = 200
                self._send(200, b'{"status": "OK", "results": []}\xff\xfe')
                return
            if fault.kind == "error_status":
                rec.status = 200
                self._json(
                    200, {"status": "ERROR", "request_id": request_id, "error": fault.message}
                )
                return
            if fault.kind == "empty":
                rec.status = 200
                body = {
                    "ticker": rec.ticker,
                    "queryCount": 0,
                    "resultsCount": 0,
                    "adjusted": True,
                    "status": "OK",
                    "request_id": request_id,
                }
                self._json(200, body)
                return
            if fault.kind == "odd_results":
                rec.status = 200
                self._json(200, {"status": "OK", "request_id": request_id, "results": [1, 2]})
                return
            if fault.kind == "drop":
                rec.status = 0
                self._drop()
                return
            if fault.kind == "truncate":
                rec.status = 0
                body = json.dumps({"status": "OK", "results": [{"o": 1.0}] * 200}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self._drop()
                return
            if fault.kind == "slow":
                time.sleep(fault.delay_s)
        self._serve_aggs(rec, m, query, state, request_id)

    def _serve_aggs(self, rec: Recorded, m: re.Match, query: dict, state: dict, request_id: str):
        srv = self.srv
        key = (m["ticker"], int(m["mult"]), m["span"])
        lo, hi = _bound_ms(m["frm"], end=False), _bound_ms(m["to"], end=True)
        limit = int(state.get("limit", query.get("limit", 5000)))
        limit = max(1, min(limit, 50_000, srv.page_size))
        offset = int(state.get("offset", 0))
        rows, more = srv._page(key, lo, hi, offset, limit)
        body: dict = {
            "ticker": m["ticker"],
            "queryCount": len(rows),
            "resultsCount": len(rows),
            "adjusted": query.get("adjusted", "true") == "true",
            "status": "OK",
            "request_id": request_id,
        }
        if rows:
            body["results"] = rows
        if more:
            nxt = {"offset": offset + len(rows), "limit": limit, "page": rec.page + 1}
            cursor = base64.urlsafe_b64encode(json.dumps(nxt).encode()).decode()
            url = f"{srv.base_url}{rec.path}?cursor={cursor}"
            if srv.key_in_next_url:
                url += f"&apiKey={srv.api_key}"
            body["next_url"] = url
        rec.status = 200
        rec.extra["rows"] = len(rows)
        self._json(200, body)
