"""How long dead endpoints cost a run: a GCS endpoint that accepts and never answers, and Polygon
offline with a key set. Default config, real sockets, each scenario in a fresh subprocess.

    .venv/bin/python bench/bench_dead_endpoints.py [--baseline-code DIR] [--limit-s 600]

`--baseline-code DIR`: a checkout of other code (e.g. `git archive main | tar -x -C DIR`) run
with the same scenarios in the same run, as the baseline; a scenario still running after
`--limit-s` is killed and reported as such. Prints seconds until the command ended (with its
exit code) and the last line it printed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLYGON = """
import os, sys, time
os.environ["POLYGON_API_KEY"] = "pk-bench-offline"
from vpt_ray.core.config import load_config
from vpt_ray.pipeline import stages
cfg = load_config(1, overrides=["data.tickers=[AAA,BBB,CCC,DDD]", "data.start=2024-01-02",
    "data.end=2024-01-12", "backtest.start=2024-01-17", "backtest.end=2024-01-19",
    f"data.dir={sys.argv[1]}", "data.sources=[local,polygon,synthetic]",
    "polygon.base_url=https://api.polygon-bench-offline.invalid"])
t = time.monotonic()
stages.load_data(cfg)
print(f"4 tickers resolved (synthetic fallback) in {time.monotonic() - t:.1f} s")
"""


def silent_server() -> str:
    """A loopback port that accepts connections and never answers (threads hold them open)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def run(cmd: list[str], code: Path, limit_s: float) -> tuple[str, str]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, cwd=code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = proc.communicate(timeout=limit_s)
        took = f"{time.monotonic() - t0:.0f} s (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        took = f"> {limit_s:.0f} s (still waiting, killed)"
    lines = [line for line in out.splitlines() if line.strip()]
    return took, (lines[-1][:160] if lines else "(nothing printed)")


def scenarios(tmp: Path) -> dict[str, list[str]]:
    url = silent_server()
    return {
        "gcs silent endpoint, `vpt data fetch` 1 ticker": [
            sys.executable, "-m", "vpt_ray.data", "fetch", "--phase", "1",
            "--set", "data.tickers=[AAA]", "--set", "data.sources=[gcs]",
            "--set", f"gcs.endpoint_url={url}", "--set", "gcs.token=anon",
            "--set", f"data.dir={tmp / 'gcs'}",
        ],
        "polygon offline with a key, 4 tickers": [
            sys.executable, "-c", POLYGON, str(tmp / "polygon"),
        ],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-code", type=Path, default=None)
    parser.add_argument("--limit-s", type=float, default=600.0)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs")
    codes = {"this code": REPO}
    if args.baseline_code:
        codes["baseline"] = args.baseline_code.resolve()
    with tempfile.TemporaryDirectory(prefix="vpt-bench-dead-") as tmp:
        runs = {label: scenarios(Path(tmp) / label.replace(" ", "-")) for label in codes}
        for name in runs["this code"]:
            for label, code in codes.items():
                took, last = run(runs[label][name], code, args.limit_s)
                print(f"{name} | {label}: {took}\n    last line: {last}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
