"""GCS as a bar source: `{bucket_path}/{TICKER}.parquet` read (and optionally written) via gcsfs.

The team's minute bars live in a bucket; reading one object per ticker is far cheaper than
re-fetching from Polygon. Credentials are the usual Google ones (`gcs.token: null` = application
default credentials; a service-account JSON path; `"anon"` for emulators and public buckets);
`gcs.endpoint_url` or `STORAGE_EMULATOR_HOST` points at an emulator.

Two gcsfs behaviours shape this module:
- gcsfs 2026.x's experimental filesystem probes a gRPC API for every bucket, which stalls ~60 s per
  operation against an emulator. `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false` is set (unless the user
  set it) before gcsfs is imported, and the plain `gcsfs.core.GCSFileSystem` is used either way.
- gcsfs retries a refused connection ~6 times with backoff (~30 s). `unavailable_reason` first
  opens a TCP connection to the endpoint with a short timeout, so a dead endpoint is reported in
  seconds, and `fetch` refuses to start while the source is unavailable. Before that, with
  `gcs.token: null` against Google's endpoint, a machine with no Google credentials anywhere
  is told so offline (`missing_google_credentials`), in milliseconds and without a network.
- gcsfs sets no timeout on its HTTP requests: an endpoint that accepts connections and never
  answers hung a fetch forever. Every request gets `gcs.connect_timeout_s` / `gcs.read_timeout_s`
  (aiohttp's); each ticker's read has an overall `gcs.ticker_deadline_s` and the probe's listing
  one connect + read timeout (fsspec's `timeout=`, which cancels gcsfs's retries too). A read or
  probe past its deadline marks GCS down for the rest of the run (this process), with one
  warning; later tickers skip it at once.

An object is read whole (one GET; a ticker-year of minute bars is a few MB), validated against the
bar contract, then cut to the requested exchange dates and the regular session. The parsed object
of the last ticker read is kept, since the chain asks for several date ranges of one ticker in a
row. Uploads merge with what the bucket holds and replace the object in one write, so readers see
either the old or the new object; two concurrent uploaders of one ticker: the last one wins.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vpt_ray.core import calendar as xcal
from vpt_ray.core.config import GcsConfig
from vpt_ray.core.storage import GOOGLE_ENDPOINT, GcsPath, StorageError, request_timeout
from vpt_ray.data.bars import SCHEMA, BarDataError, empty_bars, validate_bars
from vpt_ray.data.errors import SourceError

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

log = logging.getLogger(__name__)

PROBE_TTL_S = 300.0  # the chain builds a source per ticker; probe a bucket once per 5 minutes
_PROBES: dict[tuple, tuple[float, str | None]] = {}
_PROBES_LOCK = threading.Lock()
_DOWN: dict[str, str] = {}  # endpoint -> why GCS is down for the rest of this process's run
# Polygon-style short column names some buckets use; mapped to the contract on read
SHORT_NAMES = {
    "t": "timestamp",
    "o": "open",
    "h": "high",
    "l": "low",
    "c": "close",
    "v": "volume",
    "vw": "vwap",
    "n": "transactions",
}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exceptions gcsfs raises for network, HTTP and credential failures."""
    import aiohttp
    import google.auth.exceptions
    from gcsfs.retry import HttpError

    return (
        OSError,  # includes FileNotFoundError, PermissionError, "Forbidden" and timeouts
        HttpError,
        aiohttp.ClientError,
        google.auth.exceptions.GoogleAuthError,
        RuntimeError,
        ValueError,  # gcsfs: "Bad Request", requester-pays buckets
    )


def _tcp_probe(url: str, timeout_s: float) -> str | None:
    """None if a TCP connection to the URL's host:port opens within `timeout_s`, else why not."""
    parts = urlsplit(url)
    if not parts.hostname:
        return f"endpoint {url!r} has no host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port} unreachable ({exc.strerror or type(exc).__name__})"


def is_deadline(exc: BaseException) -> bool:
    """A timeout of ours (the deadline, or aiohttp's connect/read timeout after gcsfs's retries)."""
    import aiohttp

    return isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError)


def mark_down(endpoint: str, reason: str) -> str:
    """Record that GCS at `endpoint` is down for the rest of this run; warn once."""
    with _PROBES_LOCK:
        first = endpoint not in _DOWN
        _DOWN.setdefault(endpoint, reason)
    if first:
        log.warning("gcs: %s; GCS is down for the rest of this run", reason)
    return _DOWN[endpoint]


def missing_google_credentials() -> str | None:
    """Why no Google credentials can exist here, decided offline; None when some may.

    Looks where `google.auth.default()` and gcsfs look (GOOGLE_APPLICATION_CREDENTIALS, the
    gcloud application-default file, gcsfs's token cache, a GCE/Cloud Run host) without any
    network call: on a machine with none of them, asking the metadata server or the Google
    endpoint only costs seconds (or hangs without a network) to learn the same thing.
    """
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return None
    from google.auth import _cloud_sdk

    files = [_cloud_sdk.get_application_default_credentials_path(), "~/.gcs_tokens"]
    if any(os.path.exists(os.path.expanduser(f)) for f in files):
        return None
    if any(os.environ.get(v) for v in ("GCE_METADATA_HOST", "GCE_METADATA_IP", "K_SERVICE")):
        return None
    try:
        with open("/sys/class/dmi/id/product_name") as fh:
            if fh.read().strip().startswith("Google"):
                return None
    except OSError:
        pass
    return (
        "no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS, run "
        "`gcloud auth application-default login`, or set gcs.token)"
    )


def bars_from_table(table: pa.Table, source: str) -> pd.DataFrame:
    """A parquet table -> contract columns (Polygon short names and ms `t` accepted)."""
    df = table.to_pandas()
    if "timestamp" not in df.columns and set(SHORT_NAMES) <= set(df.columns):
        df = df.rename(columns=SHORT_NAMES)
        if pd.api.types.is_integer_dtype(df["timestamp"].dtype):
            df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ms", utc=True)
    return df


class GcsSource:
    """Per-ticker parquet objects in a GCS bucket (or an emulator)."""

    name = "gcs"

    def __init__(
        self,
        cfg: GcsConfig,
        vwap_tolerance: float = 0.001,
        *,
        calendar: str = "XNYS",
        bar: str = "1min",
        regular_session_only: bool = True,
        probe_timeout_s: float = 3.0,
    ):
        self.cfg, self.vwap_tolerance = cfg, vwap_tolerance
        self.calendar, self.bar = calendar, bar
        self.regular_session_only = regular_session_only
        self.probe_timeout_s = probe_timeout_s
        self._fs: Any = None
        self._cached: tuple[str, pd.DataFrame] | None = None
        self.reads = 0  # objects downloaded (for tests and reports)

    def __repr__(self) -> str:
        return f"GcsSource(gs://{self.bucket_path}, endpoint={self.endpoint!r})"

    @property
    def bucket_path(self) -> str:
        return self.cfg.bucket_path.removeprefix("gs://").strip("/")

    @property
    def endpoint(self) -> str:
        return self.cfg.endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST") or GOOGLE_ENDPOINT

    def object_path(self, ticker: str) -> str:
        """`bucket/prefix/TICKER.parquet` (no gs:// scheme, as gcsfs wants it)."""
        return f"{self.bucket_path}/{ticker.upper()}.parquet"

    def _filesystem(self) -> Any:
        if self._fs is None:
            from gcsfs.core import GCSFileSystem

            endpoint = self.endpoint
            if not endpoint.startswith(("http://", "https://")):
                endpoint = "http://" + endpoint  # STORAGE_EMULATOR_HOST may be host:port
            # fsspec reuses one instance per settings: credentials load once per process
            self._fs = GCSFileSystem(
                token=self.cfg.token,
                endpoint_url=endpoint,
                requests_timeout=request_timeout(self.cfg),
            )
        return self._fs

    def unavailable_reason(self, refresh: bool = False) -> str | None:
        """None when the bucket answers; else one line: endpoint down, no credentials, no bucket.

        The probe is a TCP connect (seconds, not gcsfs's ~30 s of retries) and one listing of the
        bucket prefix; its answer is shared per (endpoint, bucket path, token) for PROBE_TTL_S
        within the process, unless `refresh`.
        """
        key = (self.endpoint, self.bucket_path, self.cfg.token)
        now = time.monotonic()
        with _PROBES_LOCK:
            down = _DOWN.get(self.endpoint)
            hit = _PROBES.get(key)
        if down:
            return down
        if hit is not None and not refresh and now - hit[0] < PROBE_TTL_S:
            return hit[1]
        reason = self._probe()
        with _PROBES_LOCK:
            _PROBES[key] = (now, reason)
        if reason:  # the chain reports it once per run at INFO
            log.debug("gcs: unavailable: %s", reason)
        return reason

    def _probe(self) -> str | None:
        endpoint = self.endpoint
        if self.cfg.token is None and endpoint == GOOGLE_ENDPOINT:
            missing = missing_google_credentials()
            if missing:
                return missing
        if not endpoint.startswith(("http://", "https://")):
            endpoint = "http://" + endpoint
        down = _tcp_probe(endpoint, self.probe_timeout_s)
        if down:
            return f"GCS endpoint {endpoint} is not reachable: {down}"
        try:
            fs = self._filesystem()
        except _transport_errors() as exc:
            return f"GCS credentials could not be loaded ({type(exc).__name__}: {exc})"
        anon = getattr(fs.credentials, "method", None) == "anon" and self.cfg.token != "anon"
        bucket = self.bucket_path.split("/", 1)[0]
        fs.invalidate_cache(self.bucket_path)
        # a listing is one small request: a server silent for one connect + read timeout is down
        deadline = min(
            self.cfg.ticker_deadline_s, self.cfg.connect_timeout_s + self.cfg.read_timeout_s
        )
        try:
            fs.ls(self.bucket_path, detail=False, timeout=deadline)
            return None
        except FileNotFoundError:
            try:  # an empty prefix is fine (objects are simply missing); a missing bucket is not
                fs.ls(bucket, detail=False, timeout=deadline)
                return None
            except FileNotFoundError:
                return f"bucket gs://{bucket} does not exist at {endpoint}"
            except _transport_errors() as exc:
                return self._unanswered(exc, f"listing gs://{bucket}", deadline) or self._denied(
                    bucket, exc, anon
                )
        except _transport_errors() as exc:
            listing = f"listing gs://{self.bucket_path}"
            return self._unanswered(exc, listing, deadline) or self._denied(bucket, exc, anon)

    def _unanswered(self, exc: BaseException, what: str, deadline_s: float) -> str | None:
        """For a timeout: GCS marked down for the run, and the line saying so; else None."""
        if not is_deadline(exc):
            return None
        c = self.cfg
        return mark_down(
            self.endpoint,
            f"{what} at {self.endpoint} got no answer within {deadline_s:g} s "
            f"(gcs.ticker_deadline_s = {c.ticker_deadline_s:g} s, gcs.connect_timeout_s = "
            f"{c.connect_timeout_s:g} s, gcs.read_timeout_s = {c.read_timeout_s:g} s)",
        )

    def _denied(self, bucket: str, exc: BaseException, anon: bool) -> str:
        hint = (
            "; no Google credentials were found (set GOOGLE_APPLICATION_CREDENTIALS, run "
            "`gcloud auth application-default login`, or set gcs.token)"
            if anon
            else ""
        )
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot list gs://{self.bucket_path} ({type(exc).__name__}: {text}){hint}"

    def _read_object(self, path: str, ticker: str, start=None, end=None) -> pd.DataFrame | None:
        """The validated object at `path`, or None if it does not exist."""
        if self._cached is not None and self._cached[0] == path:
            return self._cached[1]
        fs = self._filesystem()
        try:
            data = fs.cat_file(path, timeout=self.cfg.ticker_deadline_s)
        except FileNotFoundError:
            return None
        except _transport_errors() as exc:
            cause = self._unanswered(exc, f"reading gs://{path}", self.cfg.ticker_deadline_s)
            raise SourceError(
                self.name,
                cause or f"reading gs://{path} failed ({type(exc).__name__}: {exc})",
                ticker,
                start,
                end,
                retryable=True,
            ) from None
        self.reads += 1
        where = f"gs://{path}"
        try:
            table = pq.read_table(io.BytesIO(data))
        except (pa.ArrowException, OSError) as exc:
            raise BarDataError(where, f"unreadable parquet ({exc})") from None
        df = validate_bars(bars_from_table(table, where), where, self.vwap_tolerance)
        self._cached = (path, df)
        return df

    def fetch(self, ticker: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars of `ticker` within [start, end] (exchange dates); empty if the object is missing.

        Raises `SourceError` when the bucket is unreachable or the read fails, `BarDataError`
        (naming the gs:// path) when the object is not a valid bar file.
        """
        reason = self.unavailable_reason()
        if reason:
            raise SourceError(self.name, reason, ticker, start, end, retryable=True)
        path = self.object_path(ticker)
        df = self._read_object(path, ticker, start, end)
        if df is None:
            log.info("gcs: gs://%s does not exist", path)
            return empty_bars()
        out = xcal.restrict_dates(df, start, end, self.calendar)
        if self.regular_session_only:
            kept = xcal.filter_regular_session(out, self.calendar, daily=self.bar == "1day")
            if len(kept) < len(out):
                log.info(
                    "gcs: gs://%s: %d bars outside the regular session dropped",
                    path,
                    len(out) - len(kept),
                )
            out = kept
        return out.reset_index(drop=True)

    def upload(self, ticker: str, df: pd.DataFrame) -> None:
        """Merge `df` into the ticker's object (new rows win on equal timestamps), one write.

        Refuses (BarDataError) when `df` or the existing object breaks the contract, so a bad
        frame never replaces good data.
        """
        path = self.object_path(ticker)
        new = validate_bars(df, f"upload {ticker} to gs://{path}", self.vwap_tolerance)
        reason = self.unavailable_reason()
        if reason:
            raise SourceError(self.name, f"cannot upload: {reason}", ticker)
        self._cached = None
        old = self._read_object(path, ticker)
        merged = new
        if old is not None and len(old):
            merged = (
                pd.concat([old, new], ignore_index=True)
                .drop_duplicates("timestamp", keep="last")
                .sort_values("timestamp", ignore_index=True)
            )
        merged = validate_bars(merged, f"merged gs://{path}", self.vwap_tolerance)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(merged, schema=SCHEMA, preserve_index=False), buf)
        try:
            self._filesystem().pipe_file(path, buf.getvalue())
        except _transport_errors() as exc:
            raise SourceError(
                self.name,
                f"writing gs://{path} failed ({type(exc).__name__}: {exc})",
                ticker,
                retryable=True,
            ) from None
        self._cached = (path, merged)
        log.info("gcs: gs://%s now holds %d bars (+%d uploaded)", path, len(merged), len(new))


def check_location(loc: GcsPath) -> None:
    """Raise StorageError (one line) unless the bucket answers: no credentials, endpoint down or
    no bucket are found in seconds, before a run spends minutes and then fails to write."""
    reason = GcsSource(loc.gcs.model_copy(update={"bucket_path": loc.key})).unavailable_reason(
        refresh=True
    )
    if reason:
        raise StorageError(f"{loc}: {reason}")
