"""Known-truth benchmark: the edge the pipeline captures on the synthetic market, by signal strength
and training size, as one table (see docs/oracle.md).

    .venv/bin/python bench/bench_oracle.py            # phase 1 and phase 2 sizes, 4 signals
    .venv/bin/python bench/bench_oracle.py --quick    # tiny windows: a smoke run in a few minutes
    .venv/bin/python bench/bench_oracle.py --signals 1 2 --sizes phase1 --set search.num_samples=16

Every cell is a whole phase (`vpt_ray.pipeline.phase.run_phase`) in its own temp workspace, on one
Ray instance for the whole bench. The sizes: `phase1` (5 tickers, 18 months of training) and
`phase2` (the same 5 tickers, 3 years of training): both are tested on the same tickers and the same
out-of-sample window, so their oracle figures are identical and only the model changes. Edge
captured = (model - 0.5) / (oracle - 0.5) in accuracy and AUC, the same against log 2 in log loss,
model Sharpe / oracle Sharpe after costs; n/a when the oracle has no edge (signal 0). The null
market (signal 0) has nothing to capture, so it runs at the first size only (a check that neither
the generator nor the pipeline invents an edge) unless --null-everywhere.

Measured (2 shared cores, load average ~5 from other work): the default grid, 7 phases, ~15 min;
--quick ~4 min. Sharpe over a 6-month window has a standard error of ~1.4, so its edge captured
is noisy; accuracy and AUC are the steadier rulers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = {"phase1": 1, "phase2": 2}
QUICK = {  # two tickers, four months of training, two of testing, a token search
    "phase1": [
        "data.tickers=[AAA,BBB]",
        "data.start=2024-01-02",
        "data.end=2024-04-30",
        "backtest.start=2024-05-06",
        "backtest.end=2024-06-28",
        "search.num_samples=2",
        "model.n_estimators=150",
        "cv.n_splits=2",
    ],
    "phase2": [  # the same test window and tickers, twice the training period
        "data.tickers=[AAA,BBB]",
        "data.start=2023-09-01",
        "data.end=2024-04-30",
        "backtest.start=2024-05-06",
        "backtest.end=2024-06-28",
        "search.num_samples=2",
        "model.n_estimators=150",
        "cv.n_splits=2",
    ],
}


def overrides(ws: Path, size: str, signal: float, quick: bool, extra: list[str]) -> list[str]:
    return [
        *(QUICK[size] if quick else []),
        "data.sources=[local,synthetic]",
        f"synthetic.signal_strength={signal}",
        f"data.dir={ws / 'data'}",
        f"paths.artifacts={ws / 'artifacts'}",
        f"paths.logs={ws / 'logs'}",
        f"paths.tracker={ws / 'artifacts' / 'SCALING_TRACKER.md'}",
        *extra,
    ]


def quiet_console() -> None:
    """Keep the phases' INFO lines in their run logs; the console shows the bench's table."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler._vpt_console = True  # type: ignore[attr-defined]  # setup_logging adds no other
    logging.getLogger("vpt_ray").addHandler(handler)


def run_cell(root: Path, size: str, signal: float, quick: bool, extra: list[str]) -> dict:
    from vpt_ray.core.config import load_config
    from vpt_ray.pipeline.phase import run_phase

    ws = root / f"{size}-signal{signal:g}"
    ws.mkdir(parents=True)
    cfg = load_config(SIZES[size], overrides=overrides(ws, size, signal, quick, extra))
    t0 = time.monotonic()
    m = run_phase(cfg, run_id=f"oracle-{size}-{signal:g}")
    o = m["oracle"] or {}
    return {
        "size": size,
        "signal": signal,
        "tickers": len(m["data"]["tickers"]),
        "train_samples": m["cv"]["samples"],
        "oos_bars": m["oos"]["samples"],
        "model": o.get("model"),
        "oracle": o.get("oracle"),
        "edge_captured": o.get("edge_captured"),
        "wall_s": round(time.monotonic() - t0, 1),
        "workspace": str(ws),
    }


def _f(v: float | None, d: int) -> str:
    return "n/a" if v is None or v != v else f"{v:.{d}f}"


def table(rows: list[dict]) -> str:
    head = (
        f"{'size':<7} {'signal':>6} {'train':>8} {'OOS bars':>9} | "
        f"{'acc model/oracle':>17} {'capt':>5} | {'AUC model/oracle':>17} {'capt':>5} | "
        f"{'logloss capt':>12} | {'Sharpe model/oracle':>19} {'capt':>5} | {'wall':>6}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        m, o, c = r["model"] or {}, r["oracle"] or {}, r["edge_captured"] or {}
        out.append(
            f"{r['size']:<7} {r['signal']:>6g} {r['train_samples']:>8,} {r['oos_bars']:>9,} | "
            f"{_f(m.get('accuracy'), 4):>8}/{_f(o.get('accuracy'), 4):<8} "
            f"{_f(c.get('accuracy'), 2):>5} | "
            f"{_f(m.get('auc'), 4):>8}/{_f(o.get('auc'), 4):<8} {_f(c.get('auc'), 2):>5} | "
            f"{_f(c.get('log_loss'), 2):>12} | "
            f"{_f(m.get('sharpe'), 2):>9}/{_f(o.get('sharpe'), 2):<9} "
            f"{_f(c.get('sharpe'), 2):>5} | {r['wall_s']:>5.0f}s"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny windows and search (smoke run)")
    ap.add_argument("--signals", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--set", dest="extra", action="append", default=[], help="config override")
    ap.add_argument("--null-everywhere", action="store_true", help="signal 0 at every size")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--keep", action="store_true", help="keep the temp workspaces")
    args = ap.parse_args()

    import ray

    from vpt_ray.core.config import load_config
    from vpt_ray.core.resources import init_ray

    quiet_console()
    init_ray(load_config(1).hardware)  # one Ray for every cell; run_phase joins it
    root = Path(tempfile.mkdtemp(prefix="vpt-bench-oracle-"))
    rows: list[dict] = []
    t0 = time.monotonic()
    try:
        for n, size in enumerate(args.sizes):
            for signal in args.signals:
                if signal == 0 and n > 0 and not args.null_everywhere:
                    continue
                rows.append(run_cell(root, size, signal, args.quick, args.extra))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        ray.shutdown()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"known-truth bench{' (quick)' if args.quick else ''}: {time.monotonic() - t0:.0f} s")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
