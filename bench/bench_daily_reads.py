"""Training-sample reads on daily bars: a calendar year at a time (now) vs a month (before).

Real daily bars (bokeh-sampledata's AAPL, GOOG, IBM, MSFT, a test dependency) go through the
importer's conversion and the feature builder into one store file per ticker (no Ray), then the
training window's samples are read the way the pipeline writes its sample file
(`samples.SampleRule.month_batches`), once with the batches `samples.batch_windows` gives daily
bars (calendar years) and once with calendar months, alternating; it prints the best-of-`--repeat`
CPU seconds of each, the windows and the samples (the same in both).

    .venv/bin/python bench/bench_daily_reads.py
    .venv/bin/python bench/bench_daily_reads.py --start 2001-01-02 --end 2010-12-31 --repeat 5
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from vpt_ray.core.config import load_config
from vpt_ray.data.importer import conform, convert
from vpt_ray.features.causal import build_features, feature_names
from vpt_ray.features.samples import SampleRule, calendar_months
from vpt_ray.features.store import parquet_by_month


class MonthlyRule(SampleRule):
    """The rule before: one read per file and calendar month, whatever the bar size."""

    def months(self) -> list[tuple[dt.date, dt.date]]:
        return calendar_months(self.start, self.end)


def _cpu(rule: SampleRule) -> tuple[float, int]:
    t0 = time.process_time()
    n = sum(len(X) for _, X in rule.month_batches())
    return time.process_time() - t0, n


def main(argv: list[str] | None = None) -> int:
    from bokeh_sampledata.stocks import data as stocks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2005, 1, 3))
    ap.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2010, 12, 31))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    cfg = load_config(1, overrides=["data.bar=1day", "labels.horizon=5"])
    names = feature_names(cfg.features.windows)
    frame = stocks[stocks["ticker"].isin(["AAPL", "GOOG", "IBM", "MSFT"])]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for item in convert(frame, "bokeh-sampledata stocks"):
            bars, _ = conform(item, cfg)
            feats = build_features(bars, cfg.features.windows, cfg.labels.horizon, 390)
            path = Path(tmp, f"{item.ticker}.parquet")
            table = pa.Table.from_pandas(feats, preserve_index=False)
            path.write_bytes(parquet_by_month(table, feats["session"]))
            paths.append(str(path))
        rule = SampleRule(tuple(paths), tuple(names), args.start, args.end, 1, 1)
        monthly = MonthlyRule(**dataclasses.asdict(rule))
        best = {"years (now)": [], "months (before)": []}
        samples = {}
        for _ in range(args.repeat):
            for label, r in (("years (now)", rule), ("months (before)", monthly)):
                cpu, samples[label] = _cpu(r)
                best[label].append(cpu)
        print(f"{len(paths)} tickers, daily bars, training window {args.start}..{args.end}")
        for label, r in (("years (now)", rule), ("months (before)", monthly)):
            print(
                f"{label:<16} {len(r.months()):>3} windows x {len(paths)} files: "
                f"{min(best[label]):.2f} s CPU (best of {args.repeat}), {samples[label]:,} samples"
            )
        ratio = min(best["months (before)"]) / min(best["years (now)"])
        print(f"years read {ratio:.1f}x less CPU than months")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
