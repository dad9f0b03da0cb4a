"""The memory sampler of a local run: the same figures as before clusters were handled, cheaper.

    .venv/bin/python bench/bench_node_memory.py [--set k=v ...]

Runs one tiny phase 1 in this process (2 synthetic tickers, one month, 2 trials; its own local
Ray with 2 CPUs, as `python -m vpt_ray.phase 1` does) while a side thread samples, at the run's
own interval, the previous sampler's figure: the PSS of the driver and every process under it
read with psutil's `memory_full_info` every time (the code this replaced). Printed: the run's
peak (`metrics.json`, `vpt_ray.core.node_memory`) against that baseline's peak, and what one sample
of each costs in CPU and wall time, measured back to back on the same processes after the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TINY = [
    "data.tickers=[AAA,BBB]",
    "data.start=2024-01-02",
    "data.end=2024-01-31",
    "backtest.start=2024-02-05",
    "backtest.end=2024-02-16",
    "search.num_samples=2",
    "data.sources=[synthetic]",
    "hardware.num_cpus=2",
]


def old_tree_bytes(root: psutil.Process) -> int:
    """The previous sampler's figure: PSS (else RSS) of `root` and all its descendants."""
    total = 0
    procs = [root]
    with contextlib.suppress(psutil.Error):
        procs += root.children(recursive=True)
    for p in procs:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.AccessDenied:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def cost(fn, n: int = 20) -> tuple[float, float]:
    """Mean (CPU ms, wall ms) of one call."""
    c, w = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - c) / n * 1e3, (time.perf_counter() - w) / n * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra k=v")
    args = ap.parse_args()
    from vpt_ray.core.config import load_config
    from vpt_ray.pipeline.phase import run_phase

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="vpt-bench-sampler-") as tmp:
        out = Path(tmp)
        cfg = load_config(
            1,
            overrides=[
                *TINY,
                *args.overrides,
                f"data.dir={out / 'data'}",
                f"paths.artifacts={out / 'artifacts'}",
                f"paths.logs={out / 'logs'}",
                f"paths.tracker={out / 'TRACKER.md'}",
            ],
        )
        me, stop, old_peak = psutil.Process(), threading.Event(), [0]

        def baseline() -> None:
            while not stop.wait(cfg.hardware.sample_interval_s):
                old_peak[0] = max(old_peak[0], old_tree_bytes(me))

        side = threading.Thread(target=baseline, daemon=True)
        side.start()
        metrics = run_phase(cfg, run_id="bench-sampler")
        stop.set()
        side.join()
        new_peak = metrics["resources"]["peak_memory_gb"]

        import ray

        from vpt_ray.core.node_memory import ClusterMemory

        cluster = ClusterMemory.connect()  # the run's own measurement, on the Ray still running
        old_cpu, old_wall = cost(lambda: old_tree_bytes(me))
        new_cpu, new_wall = cost(cluster.sample)
        now_old, now_new = old_tree_bytes(me), sum(s.memory for s in cluster.sample().values())
        cluster.close()
        ray.shutdown()
    gb = 1024**3
    print(
        f"peak memory of the run: {new_peak:.3f} GB (vpt_ray.core.node_memory, process tree mode)"
    )
    print(f"previous sampler's peak, same run, same interval: {old_peak[0] / gb:.3f} GB")
    print(f"  ratio {new_peak / (old_peak[0] / gb):.3f}")
    print(f"after the run, same moment: {now_new / gb:.3f} GB vs previous {now_old / gb:.3f} GB")
    print(f"one sample: {new_cpu:.1f} ms CPU / {new_wall:.1f} ms wall now, previous sampler "
          f"{old_cpu:.1f} ms CPU / {old_wall:.1f} ms wall")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
