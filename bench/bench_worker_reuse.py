"""Ray's idle-worker limit and the CPU a tiny phase spends on worker processes.

    .venv/bin/python bench/bench_worker_reuse.py [--runs 3] [--limit 4]

Ray keeps at most `num_workers_soft_limit` workers (default: the node's CPUs) and kills idle ones
above it after a second. A search's trial actors count: while 2 trials run on 2 CPUs, the 2 idle
task workers that built the features are killed, and the backtest after the search spawns 2 new
ones, which import pandas, XGBoost and scikit-learn again (~2.7 s each here) before they work.
The test suite raises the limit (tests/conftest.py); this measures what that saves.

Each case is a fresh process with its own local Ray (2 CPUs, the raylet reads the limit at
start): a warm-up phase 1 on the tests' tiny config, then `--runs` more, each in a new workspace
(so features and search are computed, not read from a cache). Printed per case: the median run's
wall seconds, the machine's CPU seconds during it (every process: the driver, Ray's workers and
daemons; run on an otherwise idle machine), the driver's own CPU seconds and the backtest stage,
Ray's default limit (the baseline) and `--limit`, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUNS = r"""
import json, os, sys, time
from pathlib import Path
import psutil, ray
sys.path.insert(0, sys.argv[1])
from tests.conftest import tiny_overrides  # it sets the suite's limit: this case's is argv[4]
from vpt_ray.core.config import load_config

if sys.argv[4] == "default":
    os.environ.pop("RAY_num_workers_soft_limit", None)
else:
    os.environ["RAY_num_workers_soft_limit"] = sys.argv[4]
from vpt_ray.pipeline.phase import run_phase

def busy():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")

ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False,
         configure_logging=False, log_to_driver=False)
me, base, out = psutil.Process(), Path(sys.argv[2]), []
for i in range(int(sys.argv[3]) + 1):
    ws = base / f"w{i}"
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir(parents=True)
    # one CPU a trial (phase 1's default; the suite's TINY runs both trials in one actor)
    cfg = load_config(1, overrides=tiny_overrides(ws, "search.cpus_per_trial=1"))
    b, c, t = busy(), sum(me.cpu_times()[:2]), time.perf_counter()
    m = run_phase(cfg, run_id=f"r{i}")
    out.append({"wall": time.perf_counter() - t, "machine_cpu": busy() - b,
                "driver_cpu": sum(me.cpu_times()[:2]) - c,
                "backtest": m["resources"]["stages"]["backtest"]})
print("RESULT " + json.dumps(out[1:]))  # the first run warms Ray up: not counted
"""


def case(limit: int | None, runs: int) -> dict[str, float]:
    env = {**os.environ, "VPT_RAY_NO_DASHBOARD": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="bench-reuse-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", RUNS, str(ROOT), tmp, str(runs), str(limit or "default")],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"the case with limit {limit} failed:\n{proc.stderr[-3000:]}")
    rows = json.loads(line.removeprefix("RESULT "))
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="measured runs per case (after a warm-up)")
    ap.add_argument("--limit", type=int, default=4, help="num_workers_soft_limit to compare")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    cases = {"Ray's default (2 CPUs)": case(None, args.runs)}
    cases[f"soft limit {args.limit}"] = case(args.limit, args.runs)
    print(f"median of {args.runs} tiny phase-1 runs, each in a new workspace, one Ray per case:")
    print(
        f"{'case':<24} {'wall s':>7} {'machine CPU s':>14} {'driver CPU s':>13} {'backtest s':>11}"
    )
    for name, r in cases.items():
        print(
            f"{name:<24} {r['wall']:7.1f} {r['machine_cpu']:14.1f} {r['driver_cpu']:13.1f} "
            f"{r['backtest']:11.1f}"
        )
    base, new = cases.values()
    print(
        f"limit {args.limit} against the default: wall x{new['wall'] / base['wall']:.2f}, "
        f"machine CPU x{new['machine_cpu'] / base['machine_cpu']:.2f}"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
