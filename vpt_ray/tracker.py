"""The scaling tracker: the seed's two tables, one row per phase holding its latest run.

The tracker is a markdown file a team can commit. Its rows are kept as JSON in an HTML comment at
the end of the file, so a rewrite never has to parse its own tables; every rewrite is atomic.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vpt_ray.run import write_text_atomic

STATE_RE = re.compile(r"<!-- vpt-ray-tracker (\{.*?\}) -->", re.S)
PHASES = (1, 2, 3, 4, 5)


def load_state(path: Path) -> dict:
    if not path.exists():
        return {"latest": {}, "history": []}
    m = STATE_RE.search(path.read_text())
    if not m:
        raise ValueError(
            f"{path}: not a vpt-ray tracker (no state comment); move it away or point "
            "paths.tracker elsewhere"
        )
    return json.loads(m.group(1))


def row_from_metrics(metrics: dict) -> dict:
    """The tracker's figures for one run, from its metrics.json content."""
    bt, cv = metrics["backtest"], metrics["cv"]
    notes = [f"verdict: {metrics['decision']['verdict']}"]
    if metrics["data"]["synthetic"]:
        notes.insert(0, "SYNTHETIC data")
    return {
        "phase": metrics["phase"],
        "run_id": metrics["run_id"],
        "samples": metrics["cv"]["samples"],
        "features": metrics["features"]["count"],
        "cv_accuracy": cv["accuracy"],
        "cv_auc": cv["auc"],
        "cv_log_loss": cv["log_loss"],
        "accuracy": metrics["oos"]["accuracy"],
        "trades": bt["trades"],
        "total_return": bt["total_return"],
        "sharpe": bt["sharpe"],
        "max_drawdown": bt["max_drawdown"],
        "win_rate": bt["win_rate"],
        "notes": "; ".join(notes + metrics["decision"]["reasons"][:1]),
    }


def previous_phase_row(path: Path, phase: int) -> dict | None:
    """The latest row of the closest earlier phase, for the "metrics degrade" rule."""
    latest = load_state(path)["latest"]
    earlier = [int(p) for p in latest if int(p) < phase]
    return latest[str(max(earlier))] if earlier else None


def _fmt(v: object, pct: bool = False, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.2%}" if pct else f"{v:.{digits}f}"
    return str(v)


def render(state: dict) -> str:
    latest = state["latest"]
    lines = [
        "# Scaling Tracker: Volume Price Trade Model",
        "",
        "Written by vpt-ray after each run (latest run per phase). Do not edit by hand: the state",
        "comment at the end is what the next run reads.",
        "",
        "### Training Metrics (CV Average)",
        "",
        "| Phase | Run ID | Samples | Features | Accuracy | AUC | Log Loss | Notes |",
        "|-------|--------|---------|----------|----------|-----|----------|-------|",
    ]
    for p in PHASES:
        r = latest.get(str(p))
        if r is None:
            lines.append(f"| {p} |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {p} | {r['run_id']} | {r['samples']} | {r['features']} | "
            f"{_fmt(r['cv_accuracy'])} | {_fmt(r['cv_auc'])} | {_fmt(r['cv_log_loss'])} | "
            f"{r['notes']} |"
        )
    lines += [
        "",
        "### Backtesting Metrics",
        "",
        "| Phase | Run ID | Trades | Total Return | Sharpe | Max DD | Win Rate | Notes |",
        "|-------|--------|--------|--------------|--------|--------|----------|-------|",
    ]
    for p in PHASES:
        r = latest.get(str(p))
        if r is None:
            lines.append(f"| {p} |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {p} | {r['run_id']} | {r['trades']} | {_fmt(r['total_return'], pct=True)} | "
            f"{_fmt(r['sharpe'], digits=2)} | {_fmt(r['max_drawdown'], pct=True)} | "
            f"{_fmt(r['win_rate'], pct=True)} | OOS accuracy {_fmt(r['accuracy'])}; {r['notes']} |"
        )
    lines += ["", "### History (newest first)", ""]
    lines += ["| Run ID | Phase | OOS Accuracy | Sharpe | Verdict |", "|---|---|---|---|---|"]
    for r in state["history"][:50]:
        verdict = r["notes"].split("verdict: ")[-1].split(";")[0]
        lines.append(
            f"| {r['run_id']} | {r['phase']} | {_fmt(r['accuracy'])} | "
            f"{_fmt(r['sharpe'], digits=2)} | {verdict} |"
        )
    lines += ["", f"<!-- vpt-ray-tracker {json.dumps(state, default=str)} -->", ""]
    return "\n".join(lines)


def update(path: Path, row: dict) -> None:
    """Put `row` as its phase's latest run, prepend it to the history, rewrite atomically."""
    state = load_state(path)
    state["latest"][str(row["phase"])] = row
    state["history"] = [row] + [h for h in state["history"] if h["run_id"] != row["run_id"]]
    write_text_atomic(path, render(state))
