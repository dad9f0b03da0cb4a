"""OpenMP's wait policy and XGBoost's training time, with and without other work on the cores.

    .venv/bin/python bench/bench_omp.py [--rows 300000] [--rounds 60] [--threads 2]
                                        [--busy 0,1,2] [--repeats 3]

`import vpt_ray` sets `OMP_WAIT_POLICY=PASSIVE` (vpt_ray/__init__.py). This measures why: the same
XGBoost fit (`hist`, depth 5, 36 float32 features, `--threads` threads) in a fresh process per
policy (libgomp reads the variable once, when it loads), under libgomp's default (unset: spin
300,000 times, then sleep), PASSIVE and ACTIVE, each while `--busy` other processes spin on the
cores (0 = an idle machine; 1 = one core taken, as Ray's daemons or a second trial do now and then).
Printed per case: best and median wall seconds and the fit's CPU seconds, and PASSIVE's wall time
against the default's, measured in the same run. The load average before and after is printed:
with other tenants on the machine the "busy 0" row is not idle.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys

FIT = r"""
import json, sys, time
import numpy as np, xgboost as xgb
rows, rounds, threads, repeats = map(int, sys.argv[1:5])
rng = np.random.default_rng(0)
X = rng.standard_normal((rows, 36)).astype(np.float32)
y = (X[:, 0] * 0.05 + rng.standard_normal(rows) > 0).astype(np.float32)
d = xgb.QuantileDMatrix(X, y, max_bin=128, nthread=threads)
params = {"objective": "binary:logistic", "tree_method": "hist", "max_bin": 128,
          "nthread": threads, "max_depth": 5, "learning_rate": 0.05, "subsample": 0.8,
          "colsample_bytree": 0.8}
out = []
for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    xgb.train(params, d, num_boost_round=rounds)
    out.append((time.perf_counter() - t, time.process_time() - c))
print(json.dumps(out))
"""


def spin(stop: mp.Event) -> None:
    while not stop.is_set():
        sum(range(10_000))


def measure(policy: str | None, busy: int, args: argparse.Namespace) -> list[tuple[float, float]]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    stop = mp.Event()
    spinners = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    try:
        cmd = [sys.executable, "-c", FIT, str(args.rows), str(args.rounds), str(args.threads)]
        out = subprocess.run(
            [*cmd, str(args.repeats)], env=env, capture_output=True, text=True, check=True
        )
    finally:
        stop.set()
        for p in spinners:
            p.join()
    return [tuple(x) for x in json.loads(out.stdout)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--busy", default="0,1,2", help="spinning processes beside the fit")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    print(f"{args.rows:,} rows x 36 features, {args.rounds} rounds, nthread {args.threads}")
    print(f"{'busy':>4}  {'policy':<8} {'best s':>7} {'median s':>8} {'CPU s':>6}")
    for busy in (int(b) for b in args.busy.split(",")):
        walls = {}
        for policy in (None, "PASSIVE", "ACTIVE"):
            runs = measure(policy, busy, args)
            wall = [w for w, _ in runs]
            walls[policy] = statistics.median(wall)
            cpu = statistics.median(c for _, c in runs)
            print(
                f"{busy:>4}  {policy or 'default':<8} {min(wall):7.2f} "
                f"{statistics.median(wall):8.2f} {cpu:6.2f}"
            )
        print(
            f"      PASSIVE / default median wall: {walls['PASSIVE'] / walls[None]:.2f}x "
            f"(busy {busy})"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
