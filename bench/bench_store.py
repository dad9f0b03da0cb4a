"""Feature-store window reads: one row group per month (the store's layout) vs pyarrow's default.

Builds one synthetic ticker's features over `--years` years, writes them twice in the same run,
- monthly: `store.parquet_by_month` (what the pipeline writes), and
- default: `pq.write_table(..., compression="zstd")` (one row group per 1 Mi rows),
then reads, alternating, the backtest window (the last `--window-months` months) and the training
window (the rest) the way the pipeline does (`store.read_ticker_window`: columns + session filter),
and prints the best-of-`--repeat` seconds of each, the speed-up, and the row groups read.

    .venv/bin/python bench/bench_store.py
    .venv/bin/python bench/bench_store.py --years 2 --window-months 3 --repeat 9
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vpt_ray.core.config import load_config
from vpt_ray.data.chain import synthetic_params
from vpt_ray.data.synthetic import generate_ticker
from vpt_ray.features.causal import build_features, feature_names
from vpt_ray.features.store import parquet_by_month, read_ticker_window


def _best(fn, repeat: int) -> float:
    fn()  # warm-up: both layouts read from the page cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--years", type=float, default=1.0)
    ap.add_argument("--window-months", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    cfg = load_config(1)
    end = dt.date(2024, 12, 31)
    start = end - dt.timedelta(days=int(args.years * 365.25))
    bars = generate_ticker(synthetic_params(cfg), "AAPL", start, end)
    feats = build_features(
        bars, cfg.features.windows, cfg.labels.horizon, cfg.data.bar_minutes, cfg.data.calendar
    )
    table = pa.Table.from_pandas(feats, preserve_index=False)
    names = feature_names(cfg.features.windows)
    split = (pd.Timestamp(end) - pd.DateOffset(months=args.window_months)).date()
    windows = {
        "backtest window": (split + dt.timedelta(days=1), end),
        "training window": (start, split),
    }
    with tempfile.TemporaryDirectory() as tmp:
        monthly, default = Path(tmp, "monthly.parquet"), Path(tmp, "default.parquet")
        monthly.write_bytes(parquet_by_month(table, feats["session"]))
        pq.write_table(table, default, compression="zstd")
        groups = {p.stem: pq.ParquetFile(p).metadata.num_row_groups for p in (monthly, default)}
        print(
            f"{len(feats):,} bars x {len(names)} features; row groups: monthly "
            f"{groups['monthly']}, default {groups['default']}; "
            f"file MB: monthly {monthly.stat().st_size / 2**20:.1f}, "
            f"default {default.stat().st_size / 2**20:.1f}"
        )
        print(f"{'read':<18}{'rows':>10}{'monthly s':>12}{'default s':>12}{'speed-up':>10}")
        for label, (lo, hi) in windows.items():
            rows = len(read_ticker_window(str(monthly), lo, hi, names))
            t_m = _best(
                lambda lo=lo, hi=hi: read_ticker_window(str(monthly), lo, hi, names), args.repeat
            )
            t_d = _best(
                lambda lo=lo, hi=hi: read_ticker_window(str(default), lo, hi, names), args.repeat
            )
            print(f"{label:<18}{rows:>10,}{t_m:>12.4f}{t_d:>12.4f}{t_d / t_m:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
