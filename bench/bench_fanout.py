"""Ray fan-out of the backtest vs the engine's single-process time, on the same machine and run.

Issue 5's target: the fan-out of 100 tickers x 6 months of minute bars finishes within 1.3x of
the engine's single-process time divided across the cores. Both sides do the same per-ticker
work as the real backtest task: read the ticker's parquet (validated, like `read_bars` in
`run_backtests`), draw its fixed probabilities (seeded per ticker) and plan its trades with the
engine (`plans.plan_trades`, which runs `simulate`), returning the plan. The single-process
side loops over the tickers in the driver; the fan-out
submits one `@ray.remote(num_cpus=1, max_retries=0)` task per ticker and consumes results as
they finish through `vpt_ray.core.progress.track`, as `run_backtests` does.

The synthetic bars are generated once (~0.3 s a ticker on an idle core) and cached as parquet in
--cache; only the backtests are timed. The fan-out runs twice: "cold" (fresh workers: imports
and the kernel's first call in each) and "warm" (the same workers again); the ratio to the target
uses the warm run, the cold one is printed next to it. Run:

    .venv/bin/python bench/bench_fanout.py [--tickers 100] [--start 2024-07-01]
                                           [--end 2024-12-31] [--cpus N] [--cache DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = 1.3


def tickers(n: int) -> list[str]:
    """n made-up symbols (the synthetic market generates any name)."""
    return [f"F{i:03d}" for i in range(n)]


def ensure_bars(names: list[str], start: dt.date, end: dt.date, cache: Path) -> dict[str, str]:
    """Generate each ticker's synthetic minute bars once; later runs reuse the parquet."""
    from vpt_ray.data.local import write_bars
    from vpt_ray.data.synthetic import SyntheticParams, generate_ticker

    params = SyntheticParams(seed=7, signal_strength=1.0, missing_minute_rate=0.002)
    paths = {}
    t0, made = time.perf_counter(), 0
    for t in names:
        path = cache / f"{t}_{start}_{end}.parquet"
        if not path.exists():
            write_bars(generate_ticker(params, t, start, end), path)
            made += 1
        paths[t] = str(path)
    if made:
        print(f"generated {made} tickers in {time.perf_counter() - t0:.1f} s into {cache}")
    return paths


def one_ticker(path: str, seed: int, capital: float) -> tuple[int, int]:
    """The per-ticker work: read + validate bars, fixed probabilities, the trade plan."""
    from vpt_ray.backtest.engine import SimSettings
    from vpt_ray.backtest.plans import plan_trades
    from vpt_ray.data.local import read_bars

    bars = read_bars(Path(path))
    proba = np.random.default_rng(seed).uniform(0.40, 0.60, len(bars))
    plan = plan_trades(bars, proba, SimSettings(capital=capital))
    return len(bars), plan.n_trades


def single_process(paths: dict[str, str], capital: float) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    bars = trades = 0
    for i, p in enumerate(paths.values()):
        b, n = one_ticker(p, i, capital)
        bars, trades = bars + b, trades + n
    return time.perf_counter() - t0, bars, trades


def fan_out(paths: dict[str, str], capital: float) -> tuple[float, int, int]:
    import ray

    from vpt_ray.core.progress import track

    task = ray.remote(num_cpus=1, max_retries=0)(one_ticker)
    t0 = time.perf_counter()
    refs = {task.remote(p, i, capital): t for i, (t, p) in enumerate(paths.items())}
    out = list(track(refs, "bench backtest", unit="ticker"))
    return time.perf_counter() - t0, sum(b for b, _ in out), sum(n for _, n in out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickers", type=int, default=100)
    ap.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2024, 7, 1))
    ap.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2024, 12, 31))
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vpt_bench_fanout")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    paths = ensure_bars(tickers(args.tickers), args.start, args.end, args.cache)
    capital = 100_000.0 / len(paths)

    one_ticker(next(iter(paths.values())), 0, capital)  # compile / load the kernel: warm driver
    single, bars, trades = single_process(paths, capital)

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    cores = int(ray.cluster_resources()["CPU"])
    cold, bars_c, trades_c = fan_out(paths, capital)
    warm, bars_w, trades_w = fan_out(paths, capital)
    ray.shutdown()
    if not (bars == bars_c == bars_w and trades == trades_c == trades_w):
        raise SystemExit(
            f"fan-out did different work: bars {bars}/{bars_c}/{bars_w}, "
            f"trades {trades}/{trades_c}/{trades_w}"
        )

    ideal = single / cores
    load = os.getloadavg()
    print(
        f"\n{len(paths)} tickers x {args.start}..{args.end}: {bars:,} minute bars, "
        f"{trades:,} trades; {cores} cores; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    rate = bars / single / 1e6
    print(f"  single process (driver loop, warm)  {single:7.2f} s  {rate:6.2f} M bars/s")
    print(f"  single / cores (the ideal)          {ideal:7.2f} s")
    print(f"  Ray fan-out, cold workers           {cold:7.2f} s  ratio {cold / ideal:.2f}x")
    print(f"  Ray fan-out, warm workers           {warm:7.2f} s  ratio {warm / ideal:.2f}x")
    verdict = "meets" if warm / ideal <= TARGET else "misses"
    print(f"  target: fan-out <= {TARGET}x single/cores -> warm {verdict} it")


if __name__ == "__main__":
    main()
