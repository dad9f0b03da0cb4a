"""Known-truth benchmark of the decision at full size: phase 3 as shipped (30 tickers, 3.5 years,
ASHA over 12 trials) on the synthetic market with its planted edge, on the null market and on the
drift-only market, with the verdict next to what the previous rules would have said on the same
run's figures, and the evidence the advance tests read (issue 26: accuracy, the naive predictor,
the skill over it, the lower bounds).

    .venv/bin/python bench/bench_known_truth.py                  # phase 3, planted + null + drift
    .venv/bin/python bench/bench_known_truth.py --phase 1 --signals 1.0
    .venv/bin/python bench/bench_known_truth.py --phase 1 --signals --drift 3.0   # drift only
    .venv/bin/python bench/bench_known_truth.py --set search.num_samples=24

`--signals` are the planted/null markets (drift 0); `--drift D` (default 3.0; 0 to skip) adds
the drift-only market: signal 0, `synthetic.drift: D`, where the naive predictor (always up)
beats 0.52 by itself and no model can beat it.

Every cell is a whole phase (`vpt_ray.pipeline.phase.run_phase`) in its own temp workspace on one
Ray instance. The baseline ("old rule") is the decision before issue 20, applied to this run's own
figures: stop if PBO > decision.max_pbo (whatever the number of trials) or the train-validation
gap > decision.max_train_val_gap; advance if OOS accuracy > 0.52, Sharpe > 1 and DSR >= 0.95.
(Its CV figures would also have been flattered by early stopping on the validation fold: this
bench cannot show that part; `python -m vpt_ray.phase 1` before/after does.)

The question it answers: on the planted edge, does the phase stop for overfitting while the
oracle says the model captured the edge (it must not)? On the null market or the drift-only
market, does it advance (it must not)?
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_real_daily import evidence_row  # noqa: E402 - after the path


def old_rule(m: dict, rules: dict) -> str:
    """The decision before issue 20 on this run's figures (no previous phase)."""
    over = m["overfitting"]
    pbo = over.get("pbo")
    if m["cv"]["train_val_gap"] > rules["max_train_val_gap"] or (
        pbo is not None and pbo > rules["max_pbo"]
    ):
        return "stop"
    sharpe, dsr = m["backtest"].get("sharpe"), over.get("dsr")
    ok = (
        m["oos"]["accuracy"] > rules["min_accuracy"]
        and sharpe is not None
        and sharpe > rules["min_sharpe"]
        and dsr is not None
        and dsr >= rules["min_dsr"]
    )
    return "advance" if ok else "hold"


def run_cell(phase: int, signal: float, extra: list[str], drift: float = 0.0) -> dict:
    from vpt_ray.core.config import load_config
    from vpt_ray.pipeline.phase import run_phase

    ws = Path(tempfile.mkdtemp(prefix=f"vpt-known-truth-p{phase}-s{signal}-d{drift}-"))
    sets = [
        "data.sources=[local,synthetic]",
        f"synthetic.signal_strength={signal}",
        f"synthetic.drift={drift}",
        f"data.dir={ws / 'data'}",
        f"paths.artifacts={ws / 'artifacts'}",
        f"paths.logs={ws / 'logs'}",
        f"paths.tracker={ws / 'artifacts' / 'SCALING_TRACKER.md'}",
        *extra,
    ]
    cfg = load_config(phase, overrides=sets)
    t0 = time.monotonic()
    m = run_phase(cfg, run_id=f"known-truth-p{phase}-s{signal}-d{drift}")
    m["_wall"] = time.monotonic() - t0
    m["_rules"] = cfg.decision.model_dump()
    return m


def row(m: dict) -> dict:
    over, o = m["overfitting"], m.get("oracle") or {}
    cap = (o.get("edge_captured") or {}).get("accuracy")
    stop_overfit = any(c["rule"] == "overfitting" and c["fired"] for c in m["decision"]["checks"])
    return {
        "signal": m["data"].get("signal_strength"),
        "drift": m["_drift"],
        "tickers": len(m["data"]["tickers"]),
        "bars": m["data"]["bars"],
        "trials (completed)": f"{over['n_trials']} ({over['n_trials_completed']})",
        "PBO": over.get("pbo"),
        "trials distinct": over.get("trials_distinct"),
        "gap +- SE": f"{m['cv']['train_val_gap']:.4f} +- {m['cv']['train_val_gap_se']:.4f}",
        "CV acc": m["cv"]["accuracy"],
        "OOS acc +- SE": f"{m['oos']['accuracy']:.4f} +- {m['oos']['accuracy_se']:.4f}",
        "edge captured (acc)": cap,
        **{k: v for k, v in evidence_row(m).items() if k not in ("OOS acc (SE)", "verdict")},
        "verdict": m["decision"]["verdict"],
        "overfitting stop": stop_overfit,
        "old rule": old_rule(m, m["_rules"]),
        "wall s": round(m["_wall"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", type=int, default=3)
    parser.add_argument("--signals", type=float, nargs="*", default=[1.0, 0.0])
    parser.add_argument("--drift", type=float, default=3.0)
    parser.add_argument("--set", dest="extra", action="append", default=[])
    args = parser.parse_args(argv)
    rows = []
    cells = [(s, 0.0) for s in args.signals] + ([(0.0, args.drift)] if args.drift else [])
    for signal, drift in cells:
        m = run_cell(args.phase, signal, args.extra, drift)
        m["_drift"] = drift
        rows.append(row(m))
        print(json.dumps(rows[-1]), flush=True)
        for r in m["decision"]["reasons"]:
            print(f"    - {r}", flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()]
        print("| " + " | ".join(cells) + " |")
    bad = [
        r
        for r in rows
        if (r["signal"] and r["overfitting stop"] and (r["edge captured (acc)"] or 0) >= 0.5)
        or (not r["signal"] and r["verdict"] == "advance")  # null or drift-only: never
    ]
    print(f"\nknown-truth violations: {len(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
