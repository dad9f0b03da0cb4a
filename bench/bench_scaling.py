"""Scaling benchmark: a phase on 5, 20 and 50 synthetic tickers, then a projection to phase 4.

    .venv/bin/python bench/bench_scaling.py [--sizes 5,20,50] [--years 1] [--trials 4]
                                            [--phase 4] [--set k=v ...] [--out results.json]
                                            [--variant "search.scheduler=asha" ...]

Each size runs `python -m vpt_ray.phase N --force` in its own scratch directory (own data, own
resume cache: nothing is reused between sizes) on the first N tickers of the phase's universe over
the last `--years` years to 2024-12-31 (the last eighth of it out of sample, as in phase 4's
3.5 + 0.5 years). Per size it prints: rows (bars and training samples), wall time per stage, peak
memory (driver + every Ray process), time per million bars, the quantized training matrix, and the
load average before and after (timings taken while the load average exceeds the core count measure
the machine's other tenants as much as this code).

Projection to phase 4 (120 tickers x 4 years, 1-minute bars) on 8 cores / 32 GB: each stage's time
is fitted as a + b * bars over the sizes (least squares); stages that fan out over Ray or use
XGBoost threads (features, search, train, backtest, ensemble) are divided by 8 / (cores used
here); the search is multiplied by phase 4's trial count / `--trials`. Peak memory is fitted as
c + d * training samples, for the whole run and for each stage's own peak (the sampler records
which stage it was in). The search's growth is scaled from the trials that ran at once here to
those phase 4 runs at once on 8 cores (8 // its `search.cpus_per_trial`), each with a full
`search.fold_cache_mb`. The growth per sample is compared with the 1-byte-a-cell quantized size
and with what XGBoost's QuantileDMatrix really takes for a dense matrix of the same width,
measured in this process (~3.2 bytes a cell: it keeps a row-major and a column bin index).
Targets (issue 6), printed next to the figures: cost per row flat or falling as rows grow; memory
growth per training sample at most 2x the quantized matrix; projected phase 4 under 2 hours on 8
cores and under 16 GB (the seed's limits: 4 hours, 32 GB). `--replay results.json` prints the
report of an earlier `--out` file again without running anything.

Search variants (`--variant "search.scheduler=asha search.sample_days=40"`, repeatable): each size
then runs with the baseline first (`--baseline`, default `search.scheduler=fifo`, whatever the
phase config says; e.g. the search as it shipped before: `--baseline "search.scheduler=asha
search.sample_days=null search.fold_cache_mb=256 search.trial_cache=false env:OMP_WAIT_POLICY="`,
where `env:NAME=VALUE` sets an environment variable for that run only), and
once per variant on the same data in the same scratch directory (feature store from its resume
cache, search recomputed: its key differs). Printed per size and variant: the search stage's wall
time and its trials' CPU time against the baseline's (CPU time is the fairer measure on a shared
machine), its peak memory, the folds fitted, the trials that fitted every fold, the best CV log
loss (on the searched data: a variant with `search.sample_days` validates on its sample) and the
out-of-sample accuracy and log loss on the same backtest bars; then the projection for each
variant.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PARALLEL = {"features", "search", "train", "backtest", "ensemble", "backtest_ensemble"}
P4_TICKERS, P4_YEARS, TARGET_CORES, TARGET_GB = 120, 4.0, 8, 32
BARS_PER_SESSION, SESSIONS_PER_YEAR = 390, 252


def window(years: float, end: dt.date = dt.date(2024, 12, 31)) -> dict[str, str]:
    """Training and backtest windows covering `years` years to `end`, the last eighth OOS."""
    days = int(round(years * 365.25))
    start = end - dt.timedelta(days=days)
    bt_start = end - dt.timedelta(days=max(14, days // 8))
    return {
        "data.start": str(start),
        "data.end": str(bt_start - dt.timedelta(days=4)),
        "backtest.start": str(bt_start),
        "backtest.end": str(end),
    }


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def run_size(
    n: int,
    args: argparse.Namespace,
    tickers: list[str],
    variant: list[str] | None = None,
    work: Path | None = None,
    tag: str = "",
) -> dict:
    """One phase run on the first `n` tickers. `variant`: extra overrides, applied last; `work`:
    an earlier run's scratch directory to reuse (its data and feature cache; no --force)."""
    fresh = work is None
    if work is None:
        work = Path(tempfile.mkdtemp(prefix=f"vpt-scaling-{n}-"))
        (work / "config").symlink_to(REPO / "config")
    run_id = f"scale{n}{tag}"
    sets = {
        "data.tickers": "[" + ",".join(tickers[:n]) + "]",
        "data.sources": "[synthetic]",
        "search.num_samples": str(args.trials),
        **window(args.years),
    }
    cmd = [sys.executable, "-m", "vpt_ray.phase", str(args.phase), "--run-id", run_id]
    if fresh:
        cmd += ["--force"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for o in [*args.overrides, *(variant or [])]:
        if o.startswith("env:"):  # an environment variable for this run only
            name, _, value = o[4:].partition("=")
            env[name] = value
        else:
            cmd += ["--set", o]
    load0, t0 = load_avg(), time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    load1 = load_avg()
    if proc.returncode not in (0, 3):
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"size {n}: phase exited {proc.returncode}; scratch kept in {work}")
    m = json.loads((work / "artifacts/reports" / run_id / "metrics.json").read_text())
    res = m["resources"]
    out = {
        "tickers": n,
        "years": args.years,
        "status": m.get("status", "FINISHED"),
        "bars": m["data"].get("bars"),
        "samples": m["cv"].get("samples"),
        "features": m.get("features", {}).get("count"),
        "wall_process_s": round(wall, 1),
        "wall_pipeline_s": res["wall_seconds"],
        "stages": res["stages"],
        "peak_memory_gb": res["peak_memory_gb"],
        "stage_peak_gb": res.get("stage_peak_gb", {}),
        "num_cpus": res["ray"].get("num_cpus"),
        "load_before": load0,
        "load_after": load1,
        **_run_settings(work, run_id),
        "verdict": m["decision"]["verdict"],
        "scratch": str(work),
        "variant": variant or [],
        "search": {k: v for k, v in m.get("search", {}).items() if k != "table"},
        **search_work(work, run_id, m),
        "cv_log_loss": m["cv"].get("log_loss"),
        "oos": {k: m.get("oos", {}).get(k) for k in ("accuracy", "log_loss", "samples")},
    }
    if out["status"] == "STOPPED":
        out["stopped"] = m["stopped"]["reason"]
    return out


def search_work(work: Path, run_id: str, m: dict) -> dict:
    """The search's work from its trials table: the trials' CPU seconds (`cpu_time_s`, measured
    in each trial's process: unlike wall time, barely moved by other tenants' load) and the folds
    fitted."""
    import pandas as pd

    path = work / "artifacts/runs" / run_id / "trials.parquet"
    trials = pd.read_parquet(path) if path.exists() else pd.DataFrame(m["search"].get("table"))
    if "cpu_time_s" not in trials:
        return {"search_cpu_s": None, "fold_fits": None}
    if "folds_fitted" in trials:
        fits = int(trials["folds_fitted"].sum())
    else:
        fits = len(trials) * len(m["cv"]["folds"])
    return {"search_cpu_s": round(float(trials["cpu_time_s"].sum()), 1), "fold_fits": fits}


def _run_settings(work: Path, run_id: str) -> dict:
    """The run's resolved settings the memory projection depends on."""
    import yaml

    cfg = yaml.safe_load((work / "artifacts/reports" / run_id / "config.yaml").read_text())
    return {
        "max_bin": int(cfg["model"]["max_bin"]),
        "cpus_per_trial": int(cfg["search"]["cpus_per_trial"]),
        "fold_cache_mb": int(cfg["search"].get("fold_cache_mb", 0)),
    }


def quantized_mb(r: dict) -> float:
    from vpt_ray.core.resources import MB, quantized_bytes

    return quantized_bytes(r["samples"], r["features"], r["max_bin"] or 256) / MB


_FOOTPRINT = """
import gc, json, sys
import numpy as np, psutil, xgboost as xgb
rows, features = int(sys.argv[1]), int(sys.argv[2])
proc = psutil.Process()
X = np.random.default_rng(0).standard_normal((rows, features), dtype=np.float32)
y = (X[:, 0] > 0).astype(np.float32)
gc.collect(); base = proc.memory_full_info().uss
d = xgb.QuantileDMatrix(X, y, max_bin=256)
gc.collect(); built = proc.memory_full_info().uss
xgb.train({"tree_method": "hist", "nthread": 1, "objective": "binary:logistic"}, d, 10)
gc.collect(); trained = proc.memory_full_info().uss
print(json.dumps([(built - base) / rows, (trained - built) / rows]))
"""


@functools.cache
def xgb_footprint(features: int, rows: int = 400_000) -> tuple[float, float]:
    """XGBoost's own memory per sample, measured in a fresh process (a process that already
    freed such matrices reuses that memory and under-reports) on dense random float32 data of
    the runs' width: (its QuantileDMatrix, bytes a sample; training buffers after 10 rounds,
    bytes a row). The 1-byte-a-cell quantized size is a floor XGBoost does not reach: it keeps
    a row-major and a column bin index."""
    out = subprocess.run(
        [sys.executable, "-c", _FOOTPRINT, str(rows), str(features)],
        capture_output=True,
        text=True,
        check=True,
    )
    q, train = json.loads(out.stdout)
    return float(q), float(train)


_TRIAL = """
import datetime as dt, json, resource, sys, tempfile
from pathlib import Path
import numpy as np, psutil
from vpt_ray.model.cv import PurgedWalkForward, early_stopping_folds
from vpt_ray.features.samples import COLUMNS, SampleFile, SampleRule
from vpt_ray.model.folds import iter_folds
rows, features, max_bin = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
d = Path(tempfile.mkdtemp(prefix="vpt-trial-footprint-"))
with open(d / "X.f32", "wb") as fh:
    for lo in range(0, rows, 100_000):
        n = min(rows, lo + 100_000) - lo
        fh.write(rng.standard_normal((n, features), np.float32).tobytes())
pos = np.arange(rows, dtype=np.int64) * 5
(rng.random(rows) < 0.5).astype(COLUMNS["y"]).tofile(d / "y.bin")
rng.standard_normal(rows).astype(COLUMNS["fwd_ret"]).tofile(d / "fwd_ret.bin")
pos.astype(COLUMNS["pos"]).tofile(d / "pos.bin")
(d / "meta.json").write_text(json.dumps({"rows": rows}))
names = tuple(f"f{i}" for i in range(features))
sf = SampleFile(d, rows, SampleRule((), names, dt.date(2024, 1, 1), dt.date(2024, 1, 1), 5, 390))
folds = early_stopping_folds(
    list(PurgedWalkForward(4, 15, 0.3).split(pos, pos + 15)), pos, pos + 15, 390, 0.2, 15
)
base = psutil.Process().memory_info().rss
y, fwd = sf.column("y"), sf.column("fwd_ret")
day = (sf.column("pos") // 390).astype(np.int32)
hp = dict(max_depth=6, learning_rate=0.1, subsample=0.8, colsample_bytree=0.8,
          min_child_weight=5.0, reg_alpha=0.01, reg_lambda=1.0)
for _ in iter_folds(hp, sf, y, folds, n_estimators=40, early_stopping_rounds=1000,
                    max_bin=max_bin, nthread=2, fwd_ret=fwd, day=day):
    pass
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the kernel's high-water mark
for f in d.iterdir():
    f.unlink()
d.rmdir()
print(json.dumps(peak - base))
"""


@functools.cache
def trial_footprint(
    features: int, max_bin: int, sizes: tuple[int, int] = (200_000, 600_000)
) -> float:
    """One search trial's memory growth per sample, bytes: the peak of a fresh process running
    the search's own fold loop (`folds.iter_folds`: 4 purged walk-forward folds, each built a
    chunk at a time from a sample file, fitted, predicted, scored; no fold cache) over random
    data of the runs' width, fitted over two sizes so the process's fixed part drops out. The
    whole-run sampler sees this mixed with the driver and Ray; this is the per-trial figure
    that phase 4's concurrent trials multiply."""
    peaks = []
    for rows in sizes:
        out = subprocess.run(
            [sys.executable, "-c", _TRIAL, str(rows), str(features), str(max_bin)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        peaks.append(json.loads(out.stdout))
    return (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])


def fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """(intercept, slope) by least squares; a single point gives a line through the origin."""
    if len(x) == 1:
        return 0.0, y[0] / x[0]
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(a), float(b)


def report(results: list[dict], args: argparse.Namespace, p4_trials: int, label: str = "") -> dict:
    ok = [r for r in results if r["status"] != "STOPPED"]
    stages = [s for s in ok[0]["stages"] if s != "report"] if ok else []
    cores = ok[0]["num_cpus"] if ok else 0
    print(
        f"\nscaling{label}: phase {args.phase} on synthetic tickers, {args.years:g} year(s), "
        f"{args.trials} trials, {cores} CPUs for Ray"
    )
    head = f"{'tickers':>7} {'bars':>11} {'samples':>9} {'wall s':>8} {'s/M bars':>9} "
    head += f"{'peak GB':>8} {'quant MB':>9} {'load':>11}  " + " ".join(f"{s:>9}" for s in stages)
    print(head)
    for r in results:
        if r["status"] == "STOPPED":
            print(f"{r['tickers']:>7} STOPPED: {r['stopped']}")
            continue
        per_m = r["wall_pipeline_s"] / (r["bars"] / 1e6)
        print(
            f"{r['tickers']:>7} {r['bars']:>11,} {r['samples']:>9,} {r['wall_pipeline_s']:>8.1f} "
            f"{per_m:>9.1f} {r['peak_memory_gb']:>8.2f} {quantized_mb(r):>9.1f} "
            f"{r['load_before']:>5.1f}/{r['load_after']:<5.1f}  "
            + " ".join(f"{r['stages'].get(s, 0):>9.1f}" for s in stages)
        )
    if len(ok) < 2:
        print("\n(projection needs at least two finished sizes)")
        return {}
    loaded = [r for r in ok if max(r["load_before"], r["load_after"]) > cores]
    if loaded:
        print(
            f"\nNOTE: load average above {cores} cores during sizes "
            f"{[r['tickers'] for r in loaded]}: wall times include other tenants' work."
        )

    if any(r.get("borrowed_stages") for r in ok):
        print(
            f"\nNOTE: {' and '.join(CACHED_STAGES)}: the baseline run's time and memory on the "
            "same data (this variant read them from its resume cache)"
        )

    first, last = ok[0], ok[-1]
    cost = [r["wall_pipeline_s"] / r["bars"] * 1e6 for r in ok]
    print(
        f"\ncost per million bars: {' -> '.join(f'{c:.1f} s' for c in cost)}  "
        f"(target: flat or falling; {'OK' if cost[-1] <= cost[0] * 1.05 else 'RISING'})"
    )

    bars = [r["bars"] for r in ok]
    bars_per_ticker_year = last["bars"] / (last["tickers"] * args.years)
    p4_bars = P4_TICKERS * P4_YEARS * bars_per_ticker_year
    samples_per_bar = last["samples"] / last["bars"]
    p4_samples = p4_bars * samples_per_bar
    speedup = TARGET_CORES / max(1, cores)
    print(
        f"\nprojection to phase 4: {P4_TICKERS} tickers x {P4_YEARS:g} years = "
        f"{p4_bars / 1e6:.1f} M bars, {p4_samples / 1e6:.2f} M training samples, "
        f"{TARGET_CORES} cores, {p4_trials} trials (fit over {len(ok)} sizes: a + b * bars)"
    )
    print("  (per stage: the larger of the linear fit and the largest size's time per bar)")
    total = 0.0
    proj_stages = {}
    for s in stages:
        a, b = fit_line(bars, [r["stages"].get(s, 0.0) for r in ok])
        fitted = max(0.0, a + b * p4_bars)
        proportional = last["stages"].get(s, 0.0) / last["bars"] * p4_bars
        t = max(fitted, proportional)
        if s in PARALLEL:
            t /= speedup
        if s == "search":
            t *= p4_trials / args.trials
        proj_stages[s] = t
        total += t
        print(
            f"  {s:<18} {t / 60:8.1f} min   (fit {fitted / 60:7.1f}, proportional "
            f"{proportional / 60:7.1f} min before cores/trials; slope {b * 1e6:7.2f} s/M bars)"
        )
    ok_time = total < 2 * 3600
    print(
        f"  {'total':<18} {total / 60:8.1f} min   target < 120 min on 8 cores "
        f"({'OK' if ok_time else 'OVER'}; seed limit 240 min)"
    )

    samples = [r["samples"] for r in ok]
    c, d = fit_line(samples, [r["peak_memory_gb"] for r in ok])
    xgb_q, xgb_train = xgb_footprint(first["features"])
    # The search holds one fold per concurrent trial: on 8 cores phase 4 runs
    # 8 // its cpus_per_trial trials at once, here num_cpus // min(cpus_per_trial, num_cpus).
    conc_here = max(1, cores // min(first["cpus_per_trial"], max(1, cores)))
    conc_p4 = max(1, TARGET_CORES // args.p4_cpus_per_trial)
    stage_fit, p4_stage = {}, {}
    for k in stages:
        cs, ds = fit_line(samples, [r.get("stage_peak_gb", {}).get(k, 0.0) for r in ok])
        grow = max(0.0, ds) * p4_samples
        if k in ("search", "ensemble"):
            grow *= conc_p4 / conc_here
            cs += conc_p4 * first["fold_cache_mb"] / 1024  # each worker's fold cache, full
        stage_fit[k], p4_stage[k] = (cs, ds), max(0.0, cs) + grow
    p4_peak = max([max(0.0, c) + max(0.0, d) * p4_samples, *p4_stage.values()])
    q_per_sample_gb = first["features"] * 1 / 1024**3
    growth_ratio = d / q_per_sample_gb if q_per_sample_gb else float("nan")
    p4_quant_gb = p4_samples * q_per_sample_gb
    xgb_ratio = d * 1024**3 / xgb_q
    print(
        f"  peak memory        {p4_peak:8.2f} GB   target < 16 GB "
        f"({'OK' if p4_peak < 16 else 'OVER'}; seed limit {TARGET_GB} GB); fixed part {c:.2f} GB; "
        f"largest stage of: "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(p4_stage.items(), key=lambda kv: -kv[1])[:3])
        + f" GB (search: {conc_p4} trials at once on {TARGET_CORES} cores, {conc_here} here, "
        f"each with a full {first['fold_cache_mb']} MB fold cache)"
    )
    print(
        f"  memory per sample  {d * 1024**3:8.0f} B    = {growth_ratio:.1f}x the 1-byte-a-cell "
        f"floor ({first['features']} B; {'OK' if growth_ratio <= 2 else 'OVER'} against 2x)"
    )
    print(
        f"                                   = {xgb_ratio:.1f}x XGBoost's own quantized matrix "
        f"({xgb_q:.0f} B a sample, measured here; training adds {xgb_train:.0f} B a row); target "
        f"<= 2x ({'OK' if xgb_ratio <= 2 else 'OVER'}); {conc_here} search trial(s) at once"
    )
    per_trial = trial_footprint(first["features"], first["max_bin"] or 256)
    print(
        f"  one search trial   {per_trial:8.0f} B    a sample, alone in a fresh process (its fold "
        f"loop on a sample file, {first['max_bin'] or 256} bins) = "
        f"{per_trial / xgb_q:.1f}x XGBoost's own quantized matrix; target <= 2x "
        f"({'OK' if per_trial / xgb_q <= 2 else 'OVER'})"
    )
    lines = []
    for k in stages:
        peaks = " -> ".join(f"{r.get('stage_peak_gb', {}).get(k, 0):.2f}" for r in ok)
        lines.append(f"{k} {peaks} GB ({stage_fit[k][1] * 1024**3:.0f} B a sample)")
    print("  peak by stage      " + "; ".join(lines))
    print(
        f"  quantized matrix   {p4_quant_gb:8.2f} GB   peak / quantized = "
        f"{p4_peak / p4_quant_gb:.1f}x (the fixed Ray overhead dominates at small sizes)"
    )
    return {
        "p4_bars": p4_bars,
        "p4_samples": p4_samples,
        "p4_minutes": total / 60,
        "p4_stage_minutes": {k: v / 60 for k, v in proj_stages.items()},
        "p4_peak_gb": p4_peak,
        "memory_fixed_gb": c,
        "memory_bytes_per_sample": d * 1024**3,
        "xgb_quantized_bytes_per_sample": xgb_q,
        "xgb_train_bytes_per_row": xgb_train,
        "memory_x_xgb_quantized": xgb_ratio,
        "trial_bytes_per_sample": per_trial,
        "stage_memory_fit": {
            k: {"fixed_gb": a, "bytes_per_sample": b * 1024**3} for k, (a, b) in stage_fit.items()
        },
        "p4_stage_peak_gb": p4_stage,
        "search_concurrency": {"here": conc_here, "p4": conc_p4},
        "cost_per_million_bars_s": cost,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="5,20,50", help="ticker counts, comma-separated")
    ap.add_argument("--years", type=float, default=1.0, help="years of 1-minute bars per ticker")
    ap.add_argument("--trials", type=int, default=4, help="search trials per size")
    ap.add_argument("--phase", type=int, default=4, help="phase config the runs start from")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    ap.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="'K=V K=V'",
        help="search variant compared with the baseline on the same data, e.g. "
        "'search.scheduler=asha' "
        "or 'search.scheduler=asha search.sample_days=40' (repeatable)",
    )
    ap.add_argument(
        "--replay",
        type=Path,
        default=None,
        help="print the report of an earlier --out file again (no runs; same --trials)",
    )
    ap.add_argument(
        "--baseline",
        default="search.scheduler=fifo",
        metavar="'K=V K=V'",
        help="the run the variants are compared with (env:NAME=VALUE sets a variable for it)",
    )
    args = ap.parse_args()
    from vpt_ray.core.config import load_config

    cfg = load_config(args.phase)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if max(sizes) > len(cfg.data.tickers):
        raise SystemExit(
            f"--sizes {max(sizes)} > the {len(cfg.data.tickers)} tickers of phase {args.phase}"
        )
    p4_trials = load_config(4).search.num_samples
    args.p4_cpus_per_trial = load_config(4).search.cpus_per_trial
    variants = [v.split() for v in args.variants]
    baseline = args.baseline.split() if variants else None
    results: list[dict] = []
    by_variant: list[list[dict]] = [[] for _ in variants]
    if args.replay:
        saved = json.loads(args.replay.read_text())
        results, sizes = saved["sizes"], []
        variants = [v["overrides"] for v in saved.get("variants", [])]
        by_variant = [v["sizes"] for v in saved.get("variants", [])]
        args.years = results[0]["years"]
        for r in [*results, *sum(by_variant, [])]:  # files written before these fields
            r.setdefault("cpus_per_trial", 1)
            r.setdefault("fold_cache_mb", 0)
        for rs in by_variant:
            for base, vr in zip(results, rs, strict=True):
                borrow_cached_stages(vr, base)
    for n in sizes:
        print(f"size {n}: running (load average {load_avg()}) ...", flush=True)
        r = run_size(n, args, list(cfg.data.tickers), variant=baseline)
        results.append(r)
        _progress(n, r)
        for i, v in enumerate(variants):
            print(f"size {n}, variant {' '.join(v)}: running ...", flush=True)
            vr = run_size(n, args, list(cfg.data.tickers), v, Path(r["scratch"]), f"v{i}")
            borrow_cached_stages(vr, r)
            by_variant[i].append(vr)
            _progress(n, vr)
    projection = report(results, args, p4_trials, f" ({args.baseline})" if variants else "")
    projections = [
        report(rs, args, p4_trials, f" ({' '.join(v)})")
        for v, rs in zip(variants, by_variant, strict=True)
    ]
    if variants:
        compare_search(results, variants, by_variant)
    if args.out and not args.replay:
        out = {"sizes": results, "projection": projection}
        if variants:
            out["variants"] = [
                {"overrides": v, "sizes": rs, "projection": p}
                for v, rs, p in zip(variants, by_variant, projections, strict=True)
            ]
        args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


CACHED_STAGES = ("data", "features")  # a variant finds them in the baseline's resume cache


def borrow_cached_stages(variant: dict, base: dict) -> None:
    """A variant reuses the baseline's bars and feature store (a cache hit of a second or so):
    its figures take those stages' time and memory from the baseline run on the same data, so
    its projection and cost per row describe a whole phase. Idempotent."""
    if variant.get("borrowed_stages"):
        return
    for s in CACHED_STAGES:
        if s in base["stages"]:
            variant["wall_pipeline_s"] += base["stages"][s] - variant["stages"].get(s, 0.0)
            variant["stages"][s] = base["stages"][s]
        if s in base.get("stage_peak_gb", {}):
            variant.setdefault("stage_peak_gb", {})[s] = base["stage_peak_gb"][s]
    peaks = [
        variant["peak_memory_gb"],
        *(base.get("stage_peak_gb", {}).get(s, 0) for s in CACHED_STAGES),
    ]
    variant["peak_memory_gb"] = max(peaks)
    variant["borrowed_stages"] = list(CACHED_STAGES)


def _progress(n: int, r: dict) -> None:
    print(
        f"size {n}: {r['status']}, {r['wall_pipeline_s']:.0f} s pipeline, "
        f"search {r['stages'].get('search', 0):.0f} s, peak {r['peak_memory_gb']:.2f} GB, "
        f"load {r['load_before']} -> {r['load_after']}",
        flush=True,
    )


def compare_search(base: list[dict], variants: list[list[str]], runs: list[list[dict]]) -> None:
    """Search stage of each variant against the baseline's on the same data, per size: wall time
    and the trials' CPU time (the fairer measure when the machine is shared), the search stage's
    peak memory, folds fitted and the chosen configuration's quality."""
    print("\nsearch stage against the baseline (same data, same benchmark run):")
    print(
        f"{'tickers':>7} {'variant':<44} {'wall s':>7} {'x base':>6} {'CPU s':>7} {'x base':>6} "
        f"{'peak GB':>7} {'folds':>5} {'complete':>8} {'stopped':>7} {'searched':>9} "
        f"{'CV logloss':>10} {'OOS acc':>7} {'OOS logloss':>11}"
    )
    for i, b in enumerate(base):
        rows = [("baseline", b)]
        rows += [(" ".join(v), rs[i]) for v, rs in zip(variants, runs, strict=True)]
        base_s = b["stages"].get("search", float("nan"))
        base_cpu = b.get("search_cpu_s") or float("nan")
        for name, r in rows:
            if r["status"] == "STOPPED":
                print(f"{r['tickers']:>7} {name:<44} STOPPED: {r.get('stopped')}")
                continue
            s, oos = r["search"], r["oos"]
            t = r["stages"].get("search", float("nan"))
            cpu = r.get("search_cpu_s") or float("nan")
            peak = r.get("stage_peak_gb", {}).get("search", float("nan"))
            print(
                f"{r['tickers']:>7} {name:<44} {t:>7.1f} {t / base_s:>6.2f} {cpu:>7.1f} "
                f"{cpu / base_cpu:>6.2f} {peak:>7.2f} {r.get('fold_fits') or 0:>5} "
                f"{s.get('trials_completed', s.get('trials', 0)):>8} "
                f"{s.get('trials_stopped_early', 0):>7} {s.get('samples', r['samples']):>9,} "
                f"{r['cv_log_loss']:>10.5f} {oos['accuracy']:>7.4f} {oos['log_loss']:>11.5f}"
            )
    print("  baseline: " + " ".join(base[0].get("variant") or []) if base else "")


if __name__ == "__main__":
    raise SystemExit(main())
