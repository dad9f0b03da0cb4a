"""Peak memory of the final fit: the in-memory fit (load_matrix, then a QuantileDMatrix from the
float matrix) against the streaming fit (a QuantileDMatrix fed ticker by ticker from the store).

    .venv/bin/python bench/bench_final_fit.py [--tickers 20] [--years 1] [--stride 5]

Builds a synthetic feature store once (cached under --work), then runs each fit in a fresh
process and reads that process's peak RSS (`ru_maxrss`), so one fit's memory cannot hide the
other's. Prints rows, the float matrix and the quantized matrix sizes, each fit's peak RSS (total
and above the process's RSS after imports), its times (select: load_matrix, or the streaming
fit's row-selection pass; fit: the QuantileDMatrix and boosting, for the streaming fit including
its reads of the store; wall and CPU seconds, CPU being what a loaded machine distorts least),
and the two boosters' agreement on the out-of-sample window (prediction
correlation, accuracy). Target (issue 6): the streaming fit's
peak above the baseline stays near the quantized size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MB = 1024**2
HP = {  # a typical searched point; fixed so both fits do the same work
    "max_depth": 6,
    "learning_rate": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5.0,
    "reg_alpha": 0.01,
    "reg_lambda": 1.0,
}


def overrides(args: argparse.Namespace) -> list[str]:
    start = dt.date(2022, 1, 3)
    end = start + dt.timedelta(days=int(365 * args.years) - 1)
    bt_start, bt_end = end + dt.timedelta(days=7), end + dt.timedelta(days=37)
    tickers = ",".join(f"S{i:03d}" for i in range(args.tickers))
    return [
        f"data.tickers=[{tickers}]",
        f"data.start={start}",
        f"data.end={end}",
        f"backtest.start={bt_start}",
        f"backtest.end={bt_end}",
        "data.sources=[synthetic]",
        f"data.dir={args.work / 'data'}",
        f"labels.stride={args.stride}",
        *args.overrides,
    ]


def _features(over: list[str], ticker: str, out: str) -> dict:
    from vpt_ray.core.config import load_config
    from vpt_ray.data.chain import ensure_synthetic
    from vpt_ray.features.store import ticker_features

    cfg = load_config(1, overrides=over)
    td = ensure_synthetic(cfg, ticker, cfg.data.start, cfg.backtest.end)
    return ticker_features(cfg, td, Path(out))


def build_store(args: argparse.Namespace, over: list[str]) -> dict[str, dict]:
    """The feature store, reused when the same settings built it before."""
    from vpt_ray.core.config import load_config

    cfg = load_config(1, overrides=over)
    index = args.work / "store.json"
    if index.exists():
        saved = json.loads(index.read_text())
        if saved["overrides"] == over:
            return saved["store"]
    feats = args.work / "features"
    feats.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=args.procs) as pool:
        futs = {
            t: pool.submit(_features, over, t, str(feats / f"{t}.parquet"))
            for t in cfg.data.tickers
        }
        store = {t: f.result() for t, f in futs.items()}
    print(f"store: {len(store)} tickers built in {time.monotonic() - t0:.0f} s", flush=True)
    index.write_text(json.dumps({"overrides": over, "store": store}))
    return store


def child(args: argparse.Namespace) -> None:
    """One fit in this process; prints a JSON line with its peak RSS and times."""
    import psutil
    import pyarrow.parquet as pq

    from vpt_ray.core.config import load_config
    from vpt_ray.model.train import fit_final, fit_matrix, training_rows
    from vpt_ray.pipeline.stages import make_folds

    over = json.loads((args.work / "store.json").read_text())["overrides"]
    store = json.loads((args.work / "store.json").read_text())["store"]
    cfg = load_config(1, overrides=over)
    # the baseline: imports done and the parquet reader warmed up (pyarrow.dataset loads lazily
    # on the first filtered read), so both fits are charged only for their data
    pq.read_table(next(iter(store.values()))["path"], columns=["pos"], filters=[("pos", "<", 0)])
    baseline = psutil.Process().memory_info().rss
    t0, c0 = time.monotonic(), cpu_seconds()
    if args.child == "in-memory":
        m, _ = make_folds(cfg, store)
        rows, feats = len(m), len(m.feature_names)
        t1, c1 = time.monotonic(), cpu_seconds()
        booster = fit_matrix(cfg, m, HP, args.rounds, nthread=args.procs)
    else:
        sel = training_rows(cfg, store)
        rows, feats = sel.n_rows, len(sel.names)
        t1, c1 = time.monotonic(), cpu_seconds()
        booster = fit_final(cfg, sel, HP, args.rounds, nthread=args.procs)
    t2, c2 = time.monotonic(), cpu_seconds()
    booster.save_model(args.work / f"booster-{args.child}.ubj")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    out = {"rows": rows, "features": feats, "baseline": baseline, "peak": peak}
    times = {"load_s": t1 - t0, "fit_s": t2 - t1, "load_cpu": c1 - c0, "fit_cpu": c2 - c1}
    print(json.dumps({**out, **times}))


def cpu_seconds() -> float:
    """User + system CPU time of this process: what a fit costs, whatever else the machine runs."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def agreement(args: argparse.Namespace, store: dict, over: list[str]) -> dict:
    """Both boosters on the labelled out-of-sample window: correlation and accuracies."""
    import numpy as np
    import xgboost as xgb

    from vpt_ray.core.config import load_config
    from vpt_ray.features.causal import clock_slots, feature_names
    from vpt_ray.features.store import load_matrix

    cfg = load_config(1, overrides=over)
    names = feature_names(cfg.features.windows)
    oos = load_matrix(
        store, names, cfg.backtest.start, cfg.backtest.end, 1, clock_slots(cfg.data.bar_minutes)
    )
    d = xgb.DMatrix(oos.X, feature_names=names)
    preds = {}
    for mode in ("in-memory", "streaming"):
        b = xgb.Booster()
        b.load_model(args.work / f"booster-{mode}.ubj")
        preds[mode] = b.predict(d)
    acc = {k: float(((p > 0.5) == oos.y).mean()) for k, p in preds.items()}
    corr = float(np.corrcoef(preds["in-memory"], preds["streaming"])[0, 1])
    return {"oos_rows": len(oos), "corr": corr, "accuracy": acc}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tickers", type=int, default=20)
    ap.add_argument("--years", type=float, default=1.0)
    ap.add_argument("--stride", type=int, default=5, help="labels.stride (1 = every bar)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--procs", type=int, default=2, help="processes for the store, fit threads")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vpt-bench-final-fit"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--child", choices=["in-memory", "streaming"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args)
        return 0
    from vpt_ray.core.resources import quantized_bytes

    over = overrides(args)
    store = build_store(args, over)
    res = {}
    for mode in ("in-memory", "streaming"):
        cmd = [sys.executable, __file__, "--child", mode, "--work", str(args.work)]
        cmd += ["--rounds", str(args.rounds), "--procs", str(args.procs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode:
            print(proc.stderr[-3000:])
            return proc.returncode
        res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows, feats = res["streaming"]["rows"], res["streaming"]["features"]
    if res["in-memory"]["rows"] != rows:
        print(f"ROW MISMATCH: in-memory {res['in-memory']['rows']}, streaming {rows}")
        return 1
    from vpt_ray.core.config import load_config

    quant = quantized_bytes(rows, feats, load_config(1, overrides=over).model.max_bin)
    print(
        f"final fit: {args.tickers} tickers x {args.years:g} y, stride {args.stride}: "
        f"{rows:,} samples x {feats} features, {args.rounds} rounds, {args.procs} threads"
    )
    print(f"  float32 matrix          {rows * feats * 4 / MB:9.1f} MB")
    print(f"  quantized matrix        {quant / MB:9.1f} MB  (1 byte per cell)")
    for mode, r in res.items():
        above = r["peak"] - r["baseline"]
        print(
            f"  {mode:<10} peak RSS {r['peak'] / MB:9.1f} MB  above baseline {above / MB:7.1f} MB"
            f"  ({above / quant:.1f} x quantized)\n{'':14}select {r['load_s']:.1f} s wall"
            f" ({r['load_cpu']:.1f} s CPU), fit {r['fit_s']:.1f} s wall ({r['fit_cpu']:.1f} s CPU)"
        )
    ag = agreement(args, store, over)
    print(
        f"  out of sample ({ag['oos_rows']:,} rows): prediction correlation {ag['corr']:.4f}, "
        f"accuracy in-memory {ag['accuracy']['in-memory']:.4f}, "
        f"streaming {ag['accuracy']['streaming']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
