"""The local parquet store: one file per ticker, read with validation, written atomically.

Every write goes to a temp file in the same directory and is renamed into place, so an interrupted
run never leaves a half-written file that looks complete. Synthetic files live apart from real
ones (`{dir}/_synthetic/`) and carry their generator parameters in the parquet metadata, so a real
file is never overwritten by synthetic data and a stale synthetic file is never silently reused.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vpt_ray.core import storage
from vpt_ray.core.storage import write_parquet_atomic as write_parquet_atomic  # re-exported
from vpt_ray.data.bars import SCHEMA, BarDataError, validate_bars

META_KEY = b"vpt_ray"
EXCHANGE_TZ = "America/New_York"


def ticker_path(data_dir: str | Path, ticker: str, synthetic: bool = False) -> Path:
    base = Path(data_dir) / "_synthetic" if synthetic else Path(data_dir)
    return base / f"{ticker}.parquet"


def write_bars(df: pd.DataFrame, path: Path, meta: dict | None = None) -> None:
    """Validate-free write of contract bars with optional `vpt_ray` metadata (JSON)."""
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    else:
        table = table.replace_schema_metadata({})
    write_parquet_atomic(table, path)


def read_meta(path: Path) -> dict:
    """The `vpt_ray` metadata of a bar file ({} for files written by anyone else)."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise BarDataError(str(path), f"unreadable parquet file ({exc})") from None
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def session_dates(ts: pd.Series) -> pd.Series:
    """Exchange-local trading date of each UTC bar timestamp."""
    return ts.dt.tz_convert(EXCHANGE_TZ).dt.date


def read_bars(
    path: str | storage.Location,
    start: dt.date | None = None,
    end: dt.date | None = None,
    vwap_tolerance: float = 0.001,
) -> pd.DataFrame:
    """Read, validate and slice one ticker's bars to sessions in [start, end].

    `path` may be a gs:// object (`storage.GcsPath`, a bar file staged in the bucket for tasks
    on other nodes): read with ranged requests, validated the same way, errors naming the URI."""
    filters = []
    if start is not None:
        lo = pd.Timestamp(start, tz=EXCHANGE_TZ).tz_convert("UTC")
        filters.append(("timestamp", ">=", lo))
    if end is not None:
        hi = (pd.Timestamp(end, tz=EXCHANGE_TZ) + pd.Timedelta(days=1)).tz_convert("UTC")
        filters.append(("timestamp", "<", hi))
    try:
        table = storage.read_parquet(path, filters=filters or None)
    except FileNotFoundError:
        raise BarDataError(str(path), "file not found") from None
    except (OSError, pa.ArrowException) as exc:
        raise BarDataError(str(path), f"unreadable parquet file ({exc})") from None
    return validate_bars(table.to_pandas(), str(path), vwap_tolerance)
