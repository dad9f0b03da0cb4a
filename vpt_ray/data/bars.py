"""The bar data contract: schema, validation and the rejection error every source shares.

Every source (local parquet, GCS, Polygon, synthetic) hands back frames that pass `validate_bars`,
so the features never see a NaN price, a duplicate minute or a vwap outside the bar.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume", "vwap", "transactions")
PRICE_COLUMNS = ("open", "high", "low", "close", "vwap")
SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("ns", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("vwap", pa.float64()),
        ("transactions", pa.int64()),
    ]
)


class BarDataError(ValueError):
    """Bars break the data contract; the message names the source, the rule and an example row."""

    def __init__(self, source: str, rule: str, example: object = None):
        self.source, self.rule, self.example = source, rule, example
        msg = f"{source}: {rule}"
        if example is not None:
            msg += f" (e.g. {example})"
        super().__init__(msg)

    def __reduce__(self):  # pickled by Ray between processes: rebuild from the same arguments
        return type(self), (self.source, self.rule, self.example)


def _row(df: pd.DataFrame, mask: np.ndarray) -> str:
    i = int(np.flatnonzero(mask)[0])
    row = df.iloc[i]
    return f"row {i}: " + ", ".join(f"{c}={row[c]}" for c in df.columns if c in COLUMNS)


def validate_bars(df: pd.DataFrame, source: str, vwap_tolerance: float = 0.001) -> pd.DataFrame:
    """Check `df` against the contract and return it with canonical column order and dtypes.

    Raises `BarDataError` naming `source`, the broken rule and the first offending row.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BarDataError(source, f"missing column(s) {missing}; the contract needs {COLUMNS}")
    ts = df["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(ts.dtype):
            raise BarDataError(source, "column 'timestamp' is timezone-naive; store it as UTC")
        raise BarDataError(
            source, f"column 'timestamp' has type {ts.dtype}, expected timestamp UTC"
        )
    for col in COLUMNS[1:]:
        if not pd.api.types.is_numeric_dtype(df[col].dtype):
            raise BarDataError(source, f"column {col!r} has type {df[col].dtype}, expected numeric")
    tx = df["transactions"]
    if tx.dtype != np.int64 and tx.isna().any():
        raise BarDataError(source, "column 'transactions' has NaN", _row(df, tx.isna().to_numpy()))
    out = _canonical(df)
    if out.empty:
        return out
    # checks run on datetime64 / float64 numpy views: a tz-aware column's to_numpy() would build
    # one Timestamp object per row (~10x slower than reading the file)
    tsv = out["timestamp"].array.asi8.view("datetime64[ns]")
    dup = np.zeros(len(out), bool)
    dup[1:] = tsv[1:] == tsv[:-1]
    if dup.any():
        raise BarDataError(source, "duplicate timestamps", _row(out, dup))
    unsorted = np.zeros(len(out), bool)
    unsorted[1:] = tsv[1:] < tsv[:-1]
    if unsorted.any():
        raise BarDataError(source, "timestamps not sorted ascending", _row(out, unsorted))
    col = {c: out[c].to_numpy() for c in COLUMNS[1:]}
    finite = np.logical_and.reduce([np.isfinite(col[c]) for c in PRICE_COLUMNS])
    if not finite.all():
        raise BarDataError(source, "NaN or infinite price", _row(out, ~finite))
    bad = np.logical_or.reduce([col[c] <= 0 for c in PRICE_COLUMNS])
    if bad.any():
        raise BarDataError(source, "zero or negative price", _row(out, bad))
    hi, lo = col["high"], col["low"]
    bad = hi < lo
    if bad.any():
        raise BarDataError(source, "high < low", _row(out, bad))
    for name in ("open", "close"):
        v = col[name]
        bad = (v > hi * (1 + 1e-9)) | (v < lo * (1 - 1e-9))
        if bad.any():
            raise BarDataError(source, f"{name} outside [low, high]", _row(out, bad))
    vw = col["vwap"]
    bad = (vw > hi * (1 + vwap_tolerance)) | (vw < lo * (1 - vwap_tolerance))
    if bad.any():
        raise BarDataError(
            source, f"vwap outside [low, high] by more than {vwap_tolerance:.2%}", _row(out, bad)
        )
    vol = col["volume"]
    bad = ~np.isfinite(vol) | (vol < 0)
    if bad.any():
        raise BarDataError(source, "negative or NaN volume", _row(out, bad))
    bad = col["transactions"] < 0
    if bad.any():
        raise BarDataError(source, "negative transactions", _row(out, bad))
    return out


_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    """`df` as contract columns, order and dtypes with a fresh RangeIndex.

    A frame already in that form (what parquet reads of the store give) is returned as a shallow
    copy (pandas copy-on-write keeps the caller's frame safe) instead of being rebuilt column by
    column, which costs as much as the read itself.
    """
    dtypes = [_UTC_NS, *[np.dtype(np.float64)] * 6, np.dtype(np.int64)]
    if list(df.columns) == list(COLUMNS) and all(
        df[c].dtype == d for c, d in zip(COLUMNS, dtypes, strict=True)
    ):
        return df.reset_index(drop=True)
    out = pd.DataFrame(
        {
            "timestamp": df["timestamp"].dt.tz_convert("UTC").astype("datetime64[ns, UTC]"),
            **{c: df[c].astype(np.float64) for c in ("open", "high", "low", "close", "volume")},
            "vwap": df["vwap"].astype(np.float64),
        }
    )
    out["transactions"] = df["transactions"].astype(np.int64)
    return out.reset_index(drop=True)


def empty_bars() -> pd.DataFrame:
    """A zero-row frame with the contract's columns and dtypes."""
    return SCHEMA.empty_table().to_pandas()
