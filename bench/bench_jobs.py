"""What `ray job submit` costs, and what it measures: a tiny phase as a Ray job versus
`python -m vpt_ray.phase`.

    .venv/bin/python bench/bench_jobs.py [--repeats N] [--nodes 1|2] [--set k=v ...]

Both runs use the same tiny config (2 synthetic tickers, one month, 2 trials) on this machine,
measured in the same process run, alternating. The job goes through jobs/submit.sh --wait to a
real cluster on 127.0.0.1 (token auth, tests/ray_head.py): one node with 2 CPUs, or with
`--nodes 2` a head with no CPUs (driver, GCS, dashboard) and a worker node with the 2 CPUs, where
every task and trial then runs; the local run starts its own Ray with 2 CPUs, as a user's
workstation run does. Printed per run: the client's wall time (what the user waits), the phase's
own wall time from its metrics.json, for the job the time Ray's job server counted, and the
run's peak memory as its metrics.json reports it (the memory stop's figure: the local run's
process tree, the job's per-node sum; the job's per-node peaks too). The head's start-up is
printed separately: it is paid once per cluster, not per job.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from ray_head import LocalHead  # noqa: E402

TINY = [
    "data.tickers=[AAA,BBB]",
    "data.start=2024-01-02",
    "data.end=2024-01-31",
    "backtest.start=2024-02-05",
    "backtest.end=2024-02-16",
    "search.num_samples=2",
    "data.sources=[synthetic]",
    "hardware.num_cpus=2",  # the local run's Ray; a job takes the cluster's 2 CPUs instead
]


def phase_args(overrides: list[str], out: Path, run_id: str) -> list[str]:
    args = []
    for item in [
        *overrides,
        f"data.dir={out / 'data'}",  # absolute: every node of a multi-node cluster finds it
        f"paths.artifacts={out / 'artifacts'}",
        f"paths.tracker={out / 'TRACKER.md'}",
        f"paths.logs={out / 'logs'}",
    ]:
        args += ["--set", item]
    return [*args, "--run-id", run_id]


def phase_figures(out: Path, run_id: str) -> dict:
    """The phase's own wall time and memory figures, from its metrics.json."""
    res = json.loads((out / "artifacts" / "reports" / run_id / "metrics.json").read_text())[
        "resources"
    ]
    nodes = {n: v["peak_gb"] for n, v in res.get("nodes", {}).items()}
    return {
        "phase": float(res["wall_seconds"]),
        "peak_gb": float(res["peak_memory_gb"]),
        "nodes": nodes,
        "measured": res.get("measured"),
    }


def run_local(overrides: list[str], out: Path, run_id: str) -> dict:
    cmd = [sys.executable, "-m", "vpt_ray.phase", "1", *phase_args(overrides, out, run_id)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"local phase failed:\n{proc.stderr[-3000:]}")
    return {"client": wall, **phase_figures(out, run_id)}


def run_job(head: LocalHead, overrides: list[str], out: Path, run_id: str) -> dict:
    cmd = ["bash", str(REPO / "jobs" / "submit.sh"), "1", "--address", head.address, "--wait"]
    t0 = time.monotonic()
    proc = subprocess.run(
        [*cmd, "--", *phase_args(overrides, out, run_id)],
        env=head.client_env(),
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"job failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {head.token}"})
    info = client.get_job_info(proc.stdout.splitlines()[0])
    return {
        "client": wall,
        **phase_figures(out, run_id),
        "server": (info.end_time - info.start_time) / 1000.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1, help="pairs of runs (default 1)")
    ap.add_argument(
        "--nodes",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: one node with 2 CPUs; 2: a head with none and a worker node with 2",
    )
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra k=v")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    overrides = TINY + args.overrides
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    local, job = [], []
    head_cpus = 2 if args.nodes == 1 else 0
    with tempfile.TemporaryDirectory(prefix="vpt-bench-jobs-") as tmp, LocalHead(head_cpus) as head:
        print(f"head start-up (once per cluster): {head.start_seconds:.1f} s")
        if args.nodes == 2:
            t0 = time.monotonic()
            head.add_node(2)
            print(f"worker node joined in {time.monotonic() - t0:.1f} s (it gets the 2 CPUs)")
        for i in range(args.repeats):
            tag, base = secrets.token_hex(3), Path(tmp) / str(i)
            pair = [
                ("local", lambda b=base, t=tag: run_local(overrides, b / "l", f"local-{t}")),
                ("job", lambda b=base, t=tag: run_job(head, overrides, b / "j", f"job-{t}")),
            ]
            if i % 2:  # alternate the order so drift and warm caches do not favour one side
                pair.reverse()
            for name, fn in pair:
                result = fn()
                (local if name == "local" else job).append(result)
                extra = f", job server {result['server']:.1f} s" if "server" in result else ""
                nodes = ", ".join(f"{n} {gb:.2f}" for n, gb in sorted(result["nodes"].items()))
                print(
                    f"  {name:5s} run {i + 1}: client {result['client']:.1f} s, "
                    f"phase {result['phase']:.1f} s{extra}; peak memory "
                    f"{result['peak_gb']:.2f} GB ({result['measured']}: {nodes})"
                )
    med = {
        side: {
            k: statistics.median(r[k] for r in runs)
            for k in runs[0]
            if isinstance(runs[0][k], int | float)
        }
        for side, runs in (("local", local), ("job", job))
    }
    over = med["job"]["client"] - med["local"]["client"]
    print()
    print(f"{'median of ' + str(args.repeats):24s} {'user waits':>11s} {'phase wall':>11s}")
    print(
        f"{'python -m vpt_ray.phase':24s} {med['local']['client']:10.1f}s "
        f"{med['local']['phase']:10.1f}s"
    )
    print(
        f"{'jobs/submit.sh --wait':24s} {med['job']['client']:10.1f}s {med['job']['phase']:10.1f}s"
    )
    print(
        f"overhead of ray job submit: {over:+.1f} s ({over / med['local']['client']:+.0%}) "
        f"per tiny phase; outside the phase itself (submit, upload, driver start, log tail): "
        f"{med['job']['client'] - med['job']['phase']:.1f} s vs "
        f"{med['local']['client'] - med['local']['phase']:.1f} s locally"
    )
    ratio = med["job"]["peak_gb"] / med["local"]["peak_gb"]
    print(
        f"peak memory, median: job {med['job']['peak_gb']:.2f} GB vs local "
        f"{med['local']['peak_gb']:.2f} GB: {ratio:.2f}x ({ratio - 1:+.0%}; the target is within "
        "20%)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
