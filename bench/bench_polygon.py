"""Request count and pacing of a one-ticker, one-year Polygon fetch against the local test server.

Runs the real `PolygonSource` (official client, real HTTP on 127.0.0.1) over a year of 1-minute
bars with extended hours, as Polygon serves them. By default the pacer runs on a virtual clock at
the configured rate (5/min for the free tier), so the run takes seconds yet reports the exact
schedule a real fetch would follow; `--real-rpm N` paces in real time instead and reports the gaps
the server observed.

    .venv/bin/python bench/bench_polygon.py                 # config rate, virtual clock
    .venv/bin/python bench/bench_polygon.py --real-rpm 120  # real waits, server-side gaps
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from polygon_server import PolygonServer  # noqa: E402
from remote_fixtures import minute_bars  # noqa: E402

from vpt_ray.core.config import load_config  # noqa: E402
from vpt_ray.data.polygon import PolygonSource  # noqa: E402
from vpt_ray.data.polygon_transport import Pacer

KEY = "bench-key"


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--year", type=int, default=2024)
    ap.add_argument("--rpm", type=float, default=None, help="default: polygon.requests_per_minute")
    ap.add_argument("--chunk-days", type=int, default=None, help="default: polygon.chunk_days")
    ap.add_argument("--page-size", type=int, default=50_000, help="server page size")
    ap.add_argument("--real-rpm", type=float, default=None, help="pace in real time at this rate")
    args = ap.parse_args(argv)

    cfg = load_config(1).polygon
    start, end = dt.date(args.year, 1, 1), dt.date(args.year, 12, 31)
    t0 = time.perf_counter()
    bars = minute_bars(start, end, seed=1)
    gen_s = time.perf_counter() - t0

    with PolygonServer(api_key=KEY, page_size=args.page_size) as srv:
        srv.add_bars("AAPL", bars)
        over = {"base_url": srv.base_url}
        if args.chunk_days:
            over["chunk_days"] = args.chunk_days
        if args.real_rpm:
            over["requests_per_minute"] = args.real_rpm
            pacer, clock = None, None
            rate = args.real_rpm
        else:
            rate = args.rpm or cfg.requests_per_minute
            clock = VirtualClock()
            pacer = Pacer(rate, clock=clock, sleep=clock.sleep)
        pcfg = cfg.model_copy(update=over)
        src = PolygonSource(pcfg, env={pcfg.api_key_env: KEY}, pacer=pacer)
        chunks: list[int] = []
        t0 = time.perf_counter()
        df = src.fetch("AAPL", start, end, on_chunk=lambda c: chunks.append(len(c)))
        wall = time.perf_counter() - t0
        requests = list(srv.requests)

    st = src.stats
    if clock is not None:
        gaps = np.diff(st.request_times)
        paced_span = st.request_times[-1] - st.request_times[0]
        timing = "virtual clock (no real waiting)"
    else:
        gaps = np.diff([r.time for r in requests])
        paced_span = requests[-1].time - requests[0].time
        timing = "real time, gaps seen by the server"
    print(f"one-ticker one-year fetch: AAPL {start}..{end}, bar=1min, rate={rate:g}/min ({timing})")
    print(f"  server bars (extended hours): {len(bars):,}   generated in {gen_s:.2f}s")
    print(f"  chunk_days={pcfg.chunk_days}  page_size={args.page_size:,}")
    print(f"  HTTP requests: {st.requests}  (chunks {st.chunks}, retries {st.retries})")
    print(f"  pages per chunk: max {max(r.page for r in requests)}")
    print(f"  bars delivered (regular session): {len(df):,} in {len(chunks)} on_chunk calls")
    if len(gaps):
        print(
            f"  gap between request starts: min {gaps.min():.2f}s  mean {gaps.mean():.2f}s  "
            f"(target {60 / rate:.2f}s)"
        )
    print(f"  paced schedule, first to last request: {paced_span:.1f}s")
    print(f"  wall time of this run: {wall:.2f}s  ({len(df) / wall:,.0f} bars/s end to end)")


if __name__ == "__main__":
    main()
