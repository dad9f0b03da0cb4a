"""The Polygon source's HTTP transport, installed as the official client's `client`.

The client alone is not enough for a free-tier key (5 requests/minute): it does not pace, its
retries use a fixed 0.1 s backoff, it passes no timeout to urllib3, and it turns a malformed body
or a `status: ERROR` answer into an empty result. So this module gives the client a transport (a
`urllib3.PoolManager` subclass, installed as the client's `client`) that

- paces every HTTP attempt, pages and retries included, with a token bucket (`Pacer`),
- retries 408/429/5xx, read timeouts and dropped connections with exponential backoff, honouring
  `Retry-After` (`RetryPolicy`), but not DNS failures, refused or timed-out connections: no
  server answered, so waiting minutes for one is wasted (offline, each ticker cost ~90 s);
  `polygon.down_after` such failures in a row mark Polygon down for the run (`SourceHealth`),
  and every later fetch fails at once with that reason,
- turns other non-200 answers (401 bad key, 403 plan) into errors that keep the status code,
- strips any `apiKey` query parameter from URLs (the key travels in the Authorization header), so
  urllib3's own log lines and exceptions never hold it,

and a strict JSON decoder that raises on malformed bodies and on `status` other than OK/DELAYED.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import certifi
import urllib3

from vpt_ray.core.config import PolygonConfig

log = logging.getLogger("vpt_ray.data.polygon")  # the source's log, as before

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


OK_STATUSES = frozenset({"OK", "DELAYED"})


REDACTED = "***"


class Pacer:
    """Token bucket: at most `capacity` requests at once, refilled at `per_minute` per minute.

    The default capacity of 1 spaces requests evenly (60 / per_minute seconds apart), which keeps
    any 60-second window within the limit. Thread-safe; `clock` and `sleep` are injectable so tests
    run on a fake clock.
    """

    def __init__(
        self,
        per_minute: float,
        capacity: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not per_minute > 0:
            raise ValueError(f"per_minute must be > 0, got {per_minute}")
        if not capacity >= 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.per_minute, self.capacity = float(per_minute), float(capacity)
        self._rate = self.per_minute / 60.0
        self.clock, self.sleep = clock, sleep
        self._tokens = self.capacity
        self._last: float | None = None
        self._lock = threading.Lock()
        self.acquired = 0
        self.waited_s = 0.0

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds waited."""
        with self._lock:
            waited = 0.0
            while True:
                now = self.clock()
                if self._last is not None:
                    self._tokens = min(
                        self.capacity, self._tokens + (now - self._last) * self._rate
                    )
                self._last = now
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens -= 1.0
                    self.acquired += 1
                    self.waited_s += waited
                    return waited
                need = (1.0 - self._tokens) / self._rate
                self.sleep(need)
                waited += need

    def refund(self) -> None:
        """Give back the token of an attempt that never reached the server (DNS or connection
        failure): it used no quota, so it must not delay the next request."""
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + 1.0)
            self.acquired -= 1


_PACERS: dict[tuple[str, str, float], Pacer] = {}


_PACERS_LOCK = threading.Lock()


def shared_pacer(cfg: PolygonConfig) -> Pacer:
    """One pacer per (base_url, key variable, rate) per process.

    The chain may build a new source per ticker; sharing the pacer keeps the rate limit across
    them. Separate processes (e.g. parallel Ray tasks) each pace on their own.
    """
    key = (cfg.base_url.rstrip("/"), cfg.api_key_env, float(cfg.requests_per_minute))
    with _PACERS_LOCK:
        if key not in _PACERS:
            _PACERS[key] = Pacer(cfg.requests_per_minute)
        return _PACERS[key]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before retrying one HTTP request.

    Attempt k (0-based) waits `backoff_s * 2**k`, capped at `backoff_max_s`; a `Retry-After`
    header (seconds) replaces it, capped at `retry_after_max_s`.
    """

    max_retries: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max_s)
        return min(self.backoff_s * 2.0**attempt, self.backoff_max_s)


@dataclass
class FetchStats:
    """Counters of one source instance (cumulative over its fetches)."""

    requests: int = 0  # HTTP attempts sent, retries included
    retries: int = 0
    backoff_wait_s: float = 0.0
    chunks: int = 0
    empty_chunks: int = 0
    bars: int = 0
    request_times: list[float] = field(default_factory=list)  # pacer clock at each attempt


class TransportError(Exception):
    """Raised inside the client's call stack; not a ValueError, which the client swallows."""


class HttpStatus(TransportError):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {detail}")


class RetriesExhausted(TransportError):
    def __init__(self, attempts: int, cause: str):
        self.attempts, self.cause = attempts, cause
        super().__init__(f"gave up after {attempts} attempt(s); last error: {cause}")


class BadPayload(TransportError):
    pass


class Unreachable(TransportError):
    """No server answered: DNS failure, refused or timed-out connection. Not retried."""


@dataclass
class SourceHealth:
    """Consecutive requests to one Polygon base URL that reached no server, per process: after
    `down_after` of them the source is down for the rest of the run. Any HTTP answer resets it."""

    down_after: int = 3
    failures: int = 0  # in a row
    total_failures: int = 0
    last: str = ""
    down: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answered(self) -> None:
        with self.lock:
            self.failures = 0

    def failed(self, base: str, cause: str) -> None:
        with self.lock:
            self.failures += 1
            self.total_failures += 1
            self.last = cause
            if self.down is None and self.failures >= self.down_after:
                self.down = (
                    f"down for this run: {self.failures} requests in a row got no answer from "
                    f"{base} (DNS or connection failures, or timeouts; polygon.down_after = "
                    f"{self.down_after}); last: {cause}"
                )
                log.warning("polygon: %s", self.down)


_HEALTH: dict[str, SourceHealth] = {}


def source_health(cfg: PolygonConfig) -> SourceHealth:
    """The health record of `cfg.base_url` in this process, shared by every source instance."""
    key = cfg.base_url.rstrip("/")
    with _PACERS_LOCK:
        if key not in _HEALTH:
            _HEALTH[key] = SourceHealth(cfg.down_after)
        return _HEALTH[key]


_UNREACHABLE = (
    urllib3.exceptions.NewConnectionError,  # refused, unroutable; NameResolutionError (DNS)
    urllib3.exceptions.ConnectTimeoutError,
)


class Redactor:
    """Replaces the API key in any text with ***."""

    def __init__(self, key: str | None):
        self._key = key or None

    def __call__(self, text: object) -> str:
        s = str(text)
        return s.replace(self._key, REDACTED) if self._key else s


def strip_api_key(url: str) -> str:
    """`url` without any apiKey query parameter (the key goes in the Authorization header)."""
    parts = urlsplit(url)
    if not parts.query or "apikey" not in parts.query.lower():
        return url
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "apikey"
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _body_detail(data: bytes, redact: Redactor, limit: int = 200) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            text = str(obj.get("error") or obj.get("message") or obj.get("status") or text)
    except ValueError:
        pass
    text = redact(text)
    return text if len(text) <= limit else text[:limit] + "..."


class Transport(urllib3.PoolManager):
    """The client's HTTP layer: pacing, retries with backoff, status errors, no key in URLs."""

    def __init__(
        self,
        pacer: Pacer,
        retry: RetryPolicy,
        timeout_s: float,
        redact: Redactor,
        stats: FetchStats,
        connect_timeout_s: float | None = None,
        health: SourceHealth | None = None,
    ):
        super().__init__(
            num_pools=4,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s or timeout_s, read=timeout_s),
            ca_certs=certifi.where(),
            cert_reqs="CERT_REQUIRED",
        )
        self.pacer, self.retry, self.redact, self.stats = pacer, retry, redact, stats
        self.health = health or SourceHealth()

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any):  # type: ignore[override]
        url = strip_api_key(url)
        attempt = 0
        while True:
            self.pacer.acquire()
            self.stats.requests += 1
            self.stats.request_times.append(self.pacer.clock())
            retry_after = None
            try:
                resp = super().urlopen(method, url, redirect=redirect, **kw)
            except _UNREACHABLE as exc:
                parts = urlsplit(url)
                where = f"{parts.scheme}://{parts.netloc}"
                why = re.sub(r"^<[^>]*>: ", "", str(exc))  # urllib3 prefixes its connection's repr
                cause = self.redact(f"cannot connect to {where} ({type(exc).__name__}: {why})")
                self.pacer.refund()
                self.health.failed(where, cause)
                raise Unreachable(
                    f"{cause}; not retried (a DNS or connection failure: no server answered)"
                ) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                cause = self.redact(f"{type(exc).__name__}: {exc}")
            else:
                self.health.answered()
                if resp.status == 200:
                    try:
                        resp.data.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise BadPayload(f"response is not UTF-8 ({exc.reason})") from None
                    return resp
                detail = _body_detail(resp.data, self.redact)
                if resp.status not in RETRY_STATUSES:
                    raise HttpStatus(resp.status, detail)
                cause = f"HTTP {resp.status}: {detail}"
                retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
            if attempt >= self.retry.max_retries:
                if retry_after is None and not cause.startswith("HTTP "):  # timeouts, drops
                    parts = urlsplit(url)
                    self.health.failed(f"{parts.scheme}://{parts.netloc}", cause)
                raise RetriesExhausted(attempt + 1, cause)
            wait = self.retry.wait(attempt, retry_after)
            log.warning(
                "polygon: %s: %s; retry %d/%d in %.2fs",
                urlsplit(url).path,
                cause,
                attempt + 1,
                self.retry.max_retries,
                wait,
            )
            self.stats.retries += 1
            self.stats.backoff_wait_s += wait
            self.retry.sleep(wait)
            attempt += 1


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None when absent or a date."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class StrictJson:
    """`custom_json` for the client: raise on malformed bodies and error statuses, not return []."""

    def __init__(self, redact: Redactor):
        self.redact = redact

    def loads(self, text: str) -> Any:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            head = self.redact(text[:60])
            raise BadPayload(f"malformed JSON body ({exc}); body starts {head!r}") from None
        if isinstance(obj, dict):
            status = obj.get("status")
            if status is not None and status not in OK_STATUSES:
                detail = self.redact(obj.get("error") or obj.get("message") or "no message")
                raise BadPayload(f"response status {status!r}: {detail}")
            if "results" in obj and not isinstance(obj["results"], list):
                raise BadPayload(f"'results' is a {type(obj['results']).__name__}, not a list")
        return obj

    def dumps(self, obj: Any, **kw: Any) -> str:  # for completeness; the client only loads
        return json.dumps(obj, **kw)
