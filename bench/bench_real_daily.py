"""The two real daily runs of issue 26 at full size (phase 1's search as shipped), with the
evidence the decision reads: accuracy, the naive predictor, the skill over it and the lower
bounds, next to the seed's rule on point estimates.

    .venv/bin/python bench/bench_real_daily.py                 # both runs
    .venv/bin/python bench/bench_real_daily.py --runs goog     # backtesting.py's GOOG only

- goog: backtesting.py's GOOG sample (`backtesting.test.GOOG`, daily 2004-08-19..2013-03-01),
  train 2004-08-19..2011-12-30, backtest 2012-01-10..2013-03-01, labels 15 sessions;
- bokeh: bokeh-sampledata's AAPL, GOOG, IBM, MSFT (Quandl daily), train 2005-01-03..2010-12-31,
  backtest 2011-01-10..2013-02-28 (the README's real-data command).

Each run imports its CSV with `vpt data import` into a temp workspace and runs
`python -m vpt_ray.phase 1` with `data.sources=[local]`, `data.bar=1day` there (one Ray
instance). Neither may advance: `known-truth violations` counts those that do (exit 1).
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

RUNS = {
    "goog": [
        "data.tickers=[GOOG]",
        "data.start=2004-08-19",
        "data.end=2011-12-30",
        "backtest.start=2012-01-10",
        "backtest.end=2013-03-01",
    ],
    "bokeh": [
        "data.tickers=[AAPL,GOOG,IBM,MSFT]",
        "data.start=2005-01-03",
        "data.end=2010-12-31",
        "backtest.start=2011-01-10",
        "backtest.end=2013-02-28",
    ],
}


def export(name: str, ws: Path) -> Path:
    """The run's input as a user would have it: one CSV."""
    if name == "goog":
        from backtesting.test import GOOG

        path = ws / "GOOG.csv"
        GOOG.to_csv(path)
    else:
        from bokeh_sampledata.stocks import data

        path = ws / "stocks.csv.gz"
        data[data["ticker"] != "FB"].to_csv(path, index=False)
    return path


def check(m: dict, rule: str) -> dict:
    return next((c for c in m["decision"]["checks"] if c["rule"] == rule), {})


def point_estimate_rule(m: dict) -> str:
    """The advance rule before issue 26, on this run's figures: OOS accuracy > 0.52, Sharpe > 1
    and deflated Sharpe >= 0.95 on the point estimates (stop and optimize unchanged)."""
    if m["decision"]["verdict"] in ("stop", "optimize"):
        return m["decision"]["verdict"]
    rules = {c["rule"]: c for c in m["decision"]["checks"]}
    seeds = [c["fired"] for r, c in rules.items() if r.startswith("seed rule")]
    dsr = rules.get("deflated Sharpe (probability)", {}).get("fired", False)
    return "advance" if seeds and all(seeds) and dsr else "hold"


def evidence_row(m: dict) -> dict:
    """The closing note's columns for one run."""
    o, bt = m["oos"], m["backtest"]
    acc, skill, sharpe = (check(m, r) for r in ("OOS accuracy", "skill over the naive predictor",
                                                 "Sharpe (daily, annualized)"))  # fmt: skip

    def f(v, d=4):
        return "n/a" if v is None else f"{v:.{d}f}"

    return {
        "OOS acc (SE)": f"{f(o['accuracy'])} ({f(o.get('accuracy_se'))})",
        "naive acc": f"{f(o.get('naive_accuracy'))} (always {o.get('naive_direction')})",
        "skill (SE)": f"{f(o.get('skill'))} ({f(o.get('skill_se'))})",
        "acc LB": f(acc.get("bound")),
        "skill LB": f(skill.get("bound")),
        "Sharpe (SE)": f"{f(bt.get('sharpe'), 2)} ({f(bt.get('sharpe_se'), 2)})",
        "Sharpe LB": f(sharpe.get("bound"), 2),
        "DSR": f((m.get("overfitting") or {}).get("dsr"), 3),
        "trades": bt["trades"],
        "n_eff": f(o.get("effective_samples"), 0),
        "point-estimate rule": point_estimate_rule(m),
        "verdict": m["decision"]["verdict"],
    }


def run(name: str, extra: list[str]) -> dict:
    from vpt_ray.core.config import load_config
    from vpt_ray.data.__main__ import main as data_main
    from vpt_ray.pipeline.phase import run_phase

    ws = Path(tempfile.mkdtemp(prefix=f"vpt-real-{name}-"))
    base = ["--config", str(REPO / "config" / "base.yaml")]
    if data_main(["import", str(export(name, ws)), "--data-dir", str(ws / "data"), *base]) != 0:
        raise SystemExit(f"{name}: import failed")
    sets = [
        "data.bar=1day",
        "data.sources=[local]",
        f"data.dir={ws / 'data'}",
        f"paths.artifacts={ws / 'artifacts'}",
        f"paths.logs={ws / 'logs'}",
        f"paths.tracker={ws / 'artifacts' / 'SCALING_TRACKER.md'}",
        *RUNS[name],
        *extra,
    ]
    t0 = time.monotonic()
    m = run_phase(load_config(1, overrides=sets), run_id=f"real-{name}")
    return {"run": name, **evidence_row(m), "wall s": round(time.monotonic() - t0), "_m": m}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--set", dest="extra", action="append", default=[])
    args = parser.parse_args(argv)
    rows = []
    for name in args.runs:
        r = run(name, args.extra)
        m = r.pop("_m")
        rows.append(r)
        print(json.dumps(r), flush=True)
        for reason in m["decision"]["reasons"]:
            print(f"    - {reason}", flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")
    bad = [r for r in rows if r["verdict"] == "advance"]
    print(f"\nknown-truth violations: {len(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
