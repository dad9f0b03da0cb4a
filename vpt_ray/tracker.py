"""The scaling tracker: the seed's two tables, one row per phase holding its latest run.

The tracker is a markdown file a team can commit. Its rows are kept as JSON in an HTML comment at
the end of the file, so a rewrite never has to parse its own tables; every rewrite is atomic.
Next to it, a small PNG chart of the key metrics across phases (`SCALING_TRACKER.png`, about
60 KB) is redrawn with every update and shown at the top of the markdown, so the trend reads on
any git host without running anything. `paths.tracker` may be a gs:// object: the markdown and
the chart are then read, modified and written back as whole objects (last writer wins, as locally).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re

from vpt_ray import storage
from vpt_ray.storage import Location

log = logging.getLogger(__name__)

STATE_RE = re.compile(r"<!-- vpt-ray-tracker (\{.*?\}) -->", re.S)
PHASES = (1, 2, 3, 4, 5)


def load_state(path: Location) -> dict:
    if not storage.exists(path):
        return {"latest": {}, "history": []}
    m = STATE_RE.search(storage.read_text(path))
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
    notes.append(memory_note(metrics.get("resources", {})))
    return {
        "phase": metrics["phase"],
        "run_id": metrics["run_id"],
        "synthetic": bool(metrics["data"]["synthetic"]),
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
        **memory_fields(metrics.get("resources", {})),
        "notes": "; ".join(notes + metrics["decision"]["reasons"][:1]),
    }


def memory_fields(res: dict) -> dict:
    """The row's memory: peak of the run in total (every node) and per node, GB."""
    nodes = res.get("nodes") or {}
    return {
        "peak_memory_gb": res.get("peak_memory_gb"),
        "node_peak_gb": {n: v.get("peak_gb") for n, v in nodes.items()},
    }


def memory_note(res: dict) -> str:
    """`peak memory 1.84 GB` (a local run) or `peak memory 2.10 GB on 2 nodes (a1b2c3d4 0.71,
    e5f6a7b8 1.39)`: the notes' memory figures."""
    total = res.get("peak_memory_gb")
    text = f"peak memory {_fmt(total, digits=2)} GB"
    nodes = res.get("nodes") or {}
    if res.get("measured") == "per node" and nodes:
        each = ", ".join(f"{n} {_fmt(v.get('peak_gb'), digits=2)}" for n, v in nodes.items())
        text += f" on {len(nodes)} nodes ({each})"
    return text


def previous_phase_row(path: Location, phase: int) -> dict | None:
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


def _table(latest: dict, title: str, columns: tuple[str, ...], cells) -> list[str]:
    """One of the seed's tables: a row per phase (its latest run), blank for phases not run."""
    head = ("Phase", "Run ID", *columns)
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
    for p in PHASES:
        r = latest.get(str(p))
        values = (p, r["run_id"], *cells(r)) if r else (p, *[""] * (len(head) - 1))
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    return lines


def render(state: dict, chart: str | None = None) -> str:
    """The tracker markdown; `chart` is the chart image's path relative to the markdown file."""
    latest = state["latest"]
    lines = [
        "# Scaling Tracker: Volume Price Trade Model",
        "",
        "Written by vpt-ray after each run (latest run per phase). Do not edit by hand: the state",
        "comment at the end is what the next run reads.",
        "",
    ]
    if chart:
        lines += [f"![Key metrics across phases]({chart})", ""]
    lines += _table(
        latest,
        "Training Metrics (CV Average)",
        ("Samples", "Features", "Accuracy", "AUC", "Log Loss", "Notes"),
        lambda r: (
            r["samples"],
            r["features"],
            _fmt(r["cv_accuracy"]),
            _fmt(r["cv_auc"]),
            _fmt(r["cv_log_loss"]),
            r["notes"],
        ),
    )
    lines += [""]
    lines += _table(
        latest,
        "Backtesting Metrics",
        ("Trades", "Total Return", "Sharpe", "Max DD", "Win Rate", "Notes"),
        lambda r: (
            r["trades"],
            _fmt(r["total_return"], pct=True),
            _fmt(r["sharpe"], digits=2),
            _fmt(r["max_drawdown"], pct=True),
            _fmt(r["win_rate"], pct=True),
            f"OOS accuracy {_fmt(r['accuracy'])}; {r['notes']}",
        ),
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


def chart_path(path: Location) -> Location:
    """Where the chart twin of the tracker at `path` lives: same name, .png."""
    return path.with_suffix(".png")


def update(path: Location, row: dict) -> None:
    """Put `row` as its phase's latest run, prepend it to the history, rewrite atomically
    (the chart first, then the markdown that shows it)."""
    state = load_state(path)
    state["latest"][str(row["phase"])] = row
    state["history"] = [row] + [h for h in state["history"] if h["run_id"] != row["run_id"]]
    chart = None
    try:
        chart = write_chart(chart_path(path), state).name
    except Exception:  # noqa: BLE001 - a chart must never cost the tracker its new row
        log.exception("tracker chart not drawn")
    storage.write_text(path, render(state, chart))


def _is_synthetic(row: dict) -> bool:
    return bool(row.get("synthetic", "SYNTHETIC" in str(row.get("notes", ""))))


def _num(v: object) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan


CHART_PANELS = (
    ("Accuracy", (("cv_accuracy", "CV accuracy"), ("cv_auc", "CV AUC"),
                  ("accuracy", "OOS accuracy")), "accuracy", 0.5),
    ("Sharpe (daily, annualized)", (("sharpe", "Sharpe"),), "sharpe", 0.0),
    ("Return and drawdown (%)", (("total_return", "total return"),
                                 ("max_drawdown", "max drawdown")), "total_return", 0.0),
    ("Training samples", (("samples", "samples"),), "samples", None),
)  # fmt: skip


def chart_png(state: dict) -> bytes:
    """PNG of the key metrics by phase: lines join each phase's latest run, grey dots are the
    earlier runs kept in the history, hollow markers are runs on synthetic data."""
    from matplotlib.figure import Figure

    latest = {int(p): r for p, r in state["latest"].items()}
    phases = [p for p in PHASES if p in latest]
    fig = Figure(figsize=(10, 5.6), dpi=90, layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    pct = {"total_return", "max_drawdown"}
    for ax, (title, series, history_key, ref) in zip(axes, CHART_PANELS, strict=True):
        scale = 100.0 if history_key in pct else 1.0
        earlier = [
            h
            for h in state["history"]
            if latest.get(int(h["phase"]), {}).get("run_id") != h["run_id"]
        ]
        ax.scatter(
            [int(h["phase"]) for h in earlier],
            [_num(h.get(history_key)) * scale for h in earlier],
            s=14,
            color="#afb8c1",
            zorder=1,
        )
        for key, label in series:
            ys = [_num(latest[p].get(key)) * scale for p in phases]
            (line,) = ax.plot(phases, ys, marker="", label=label, zorder=2)
            for p, y in zip(phases, ys, strict=True):
                hollow = _is_synthetic(latest[p])
                ax.plot(
                    [p], [y], marker="o", ms=7, color=line.get_color(), zorder=3,
                    markerfacecolor="white" if hollow else line.get_color(),
                )  # fmt: skip
        if ref is not None:
            ax.axhline(ref, color="#6e7781", lw=0.8, ls=":")
        if history_key == "samples":
            from matplotlib.ticker import NullFormatter

            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xticks(PHASES)
        ax.set_xlim(0.6, 5.4)
        ax.set_xlabel("phase", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(
        "Key metrics by phase (line: latest run; grey: earlier runs; hollow: synthetic data)",
        fontsize=10,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def write_chart(path: Location, state: dict) -> Location:
    """Write the chart PNG atomically (temp file + rename, or one object upload)."""
    storage.write_bytes(path, chart_png(state))
    return path
