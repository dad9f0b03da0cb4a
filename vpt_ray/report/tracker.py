"""The scaling tracker: the seed's two tables, one row per phase holding its latest run, and the
full history of runs below them.

The tracker is a markdown file a team can commit. Every run lands in it, marked as what it is:
a phase run fills both tables, a training run (`vpt train`, `scripts/train_model.py`,
`scripts/phase1_train.py`) the training table, a standalone backtest of a saved model
(`python -m vpt_ray.backtest`) the backtesting table ("backtest of RUN"); each table's row of a
phase is the newest run that filled it, and every run has a history row. Only phase runs are a
phase's `latest` row, which the next phase's decision compares with: a training run or a backtest
decides nothing. Its rows are kept as JSON in an HTML
comment at the end of the file, so a rewrite never has to parse its own tables; every rewrite is
atomic. Next to it, a small PNG chart of the key metrics across phases (`SCALING_TRACKER.png`, about
60 KB) is redrawn with every update and shown at the top of the markdown, so the trend reads on
any git host without running anything. `paths.tracker` may be a gs:// object.

Several runs may finish at once (two terminals, jobs on a cluster): `update` is a read-modify-
write under a lock (`storage.update_text`: a file lock locally, a generation-match precondition
on GCS), so every run's row lands. A damaged state (`load_state`) is an `ArtifactError` naming the
file and the fix; a run checks it before its compute starts.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re

from vpt_ray.core import storage
from vpt_ray.core.storage import ArtifactError, Location
from vpt_ray.report import outlook
from vpt_ray.report.evidence import tracker_note

log = logging.getLogger("vpt_ray.tracker")

STATE_RE = re.compile(r"<!-- vpt-ray-tracker (\{.*?\}) -->", re.S)
PHASES = (1, 2, 3, 4, 5)
# the seed's two tables, and the kinds of run that fill each (state key -> kinds)
TABLE_KINDS = {"training": ("phase", "train"), "backtesting": ("phase", "backtest")}
KIND_LABELS = {"phase": "phase run", "train": "training run (no backtest)"}


def load_state(path: Location) -> dict:
    """The tracker's state (latest row per phase, history); empty when the file is absent."""
    if not storage.exists(path):
        return {"latest": {}, "history": []}
    try:
        text = storage.read_text(path)
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: not a text file ({exc.reason}); {_FIX}") from None
    return parse_state(text, path)


_FIX = "move it away (a new tracker is started) or point paths.tracker elsewhere"


def parse_state(text: str | None, path: Location) -> dict:
    """The state kept in the tracker markdown `text` (None: no tracker yet); ArtifactError naming
    `path` when the state comment is missing or damaged."""
    if text is None:
        return {"latest": {}, "history": []}
    m = STATE_RE.search(text)
    if not m:
        raise ArtifactError(f"{path}: not a vpt-ray tracker (no state comment); {_FIX}")
    try:
        state = json.loads(m.group(1))
    except ValueError as exc:
        raise ArtifactError(f"{path}: damaged tracker state ({exc}); {_FIX}") from None
    ok = (
        isinstance(state, dict)
        and isinstance(state.get("latest"), dict)
        and isinstance(state.get("history"), list)
    )
    if not (ok and all(_row_ok(r) for r in [*state["history"], *state["latest"].values()])):
        raise ArtifactError(
            f"{path}: damaged tracker state (want 'latest' per phase and a 'history' of rows); "
            + _FIX
        )
    return state


def _row_ok(row: object) -> bool:
    """A state row readers can use: a run id, and a phase 1-5."""
    return (
        isinstance(row, dict)
        and isinstance(row.get("run_id"), str)
        and str(row.get("phase")) in {str(p) for p in PHASES}
    )


def row_from_metrics(metrics: dict) -> dict:
    """The tracker's figures for one run, from its metrics.json content: a phase run's, a
    standalone backtest's (`kind` "backtest", no CV figures, notes naming the model run) or a
    training run's (`kind` "train", no backtest figures)."""
    bt, cv = metrics.get("backtest") or {}, metrics.get("cv") or {}
    kind = metrics.get("kind", "phase")
    if kind == "backtest":
        notes = [f"backtest of {metrics['model_run_id']} on {metrics['windows']['backtest']}"]
    elif kind == "train":
        notes = [f"training run (no backtest) on {metrics['windows']['train']}"]
    else:
        notes = [f"verdict: {metrics['decision']['verdict']}"]
    if metrics["data"]["synthetic"]:
        notes.insert(0, "SYNTHETIC data")
    if metrics.get("optimized_from"):
        o = metrics["optimized_from"]
        notes.append(
            f"optimized from {o['run_id']}: "
            + ("recovered" if o["recovered"] else "did not recover")
        )
    if (metrics.get("optimize") or {}).get("file"):
        notes.append(f"reduced config: {metrics['optimize']['file']}")
    conc = bt.get("concentration") or {}
    if conc.get("top_ticker_share") is not None:
        notes.append(
            f"top ticker {conc['top_ticker']} {conc['top_ticker_share']:.0%} of PnL, "
            f"{conc['tickers_profitable_share']:.0%} of tickers profitable"
        )
    if skill := tracker_note(metrics):
        notes.append(skill)
    notes.append(memory_note(metrics.get("resources", {})))
    decision = metrics.get("decision") or {}
    reasons = [decision["summary"]] if decision.get("summary") else decision.get("reasons") or []
    return {
        "phase": metrics["phase"],
        "run_id": metrics["run_id"],
        "kind": kind,
        "model_run_id": metrics.get("model_run_id"),
        "synthetic": bool(metrics["data"]["synthetic"]),
        "samples": cv.get("samples"),
        "features": metrics["features"]["count"],
        "cv_accuracy": cv.get("accuracy"),
        "cv_auc": cv.get("auc"),
        "cv_log_loss": cv.get("log_loss"),
        "accuracy": (metrics.get("oos") or {}).get("accuracy"),
        "accuracy_se": _finite((metrics.get("oos") or {}).get("accuracy_se")),  # for "optimize"
        "benchmark_return": (metrics.get("benchmark") or {}).get("total_return"),
        "trades": bt.get("trades"),
        "total_return": bt.get("total_return"),
        "sharpe": bt.get("sharpe"),
        "sharpe_se": _finite(bt.get("sharpe_se")),
        "backtest_on": metrics.get("backtest_on", "training tickers"),  # phase 5: its universe
        "max_drawdown": bt.get("max_drawdown"),
        "max_drawdown_daily": bt.get("max_drawdown_daily"),
        "top_ticker_share": conc.get("top_ticker_share"),
        "win_rate": bt.get("win_rate"),
        **memory_fields(metrics.get("resources", {})),
        "notes": "; ".join(notes + reasons[:1]),
        "scaling": outlook.tracker_record(metrics),  # the next phase fits and charts on it
    }


def _finite(v: object) -> float | None:
    """A float for the state's JSON, None when missing or not finite (no NaN in the file)."""
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


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
    earlier = [int(p) for p in latest if int(p) < phase]  # phase runs only: see `update`
    return latest[str(max(earlier))] if earlier else None


def _fmt(v: object, pct: bool = False, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.2%}" if pct else f"{v:.{digits}f}"
    return str(v)


def table_rows(state: dict, table: str) -> dict:
    """The rows of one of the seed's tables ("training" or "backtesting"), per phase: the newest
    run that filled it. A tracker written before training runs and backtests had table rows of
    their own holds phase runs only: its `latest` rows."""
    rows = state.get(table)
    return rows if isinstance(rows, dict) else dict(state["latest"])


def kind_label(row: dict) -> str:
    """What a row's run was: "phase run", "training run (no backtest)", "backtest of RUN"."""
    kind = row.get("kind", "phase")
    if kind == "backtest":
        return f"backtest of {row.get('model_run_id')}"
    return KIND_LABELS.get(kind, str(kind))


def marked(row: dict, *figures: str) -> str:
    """A table's Notes cell: what the run was (unless its notes already say: a backtest's and a
    training run's do), then `figures`, then the notes."""
    label, notes = kind_label(row), str(row.get("notes", ""))
    return "; ".join([*([] if label in notes else [label]), *figures, notes])


def _table(latest: dict, title: str, columns: tuple[str, ...], cells) -> list[str]:
    """One of the seed's tables: a row per phase (its newest run), blank for phases not run."""
    head = ("Phase", "Run ID", *columns)
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
    for p in PHASES:
        r = latest.get(str(p))
        values = (p, r["run_id"], *cells(r)) if r else (p, *[""] * (len(head) - 1))
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    return lines


def render(state: dict, chart: str | None = None, outlook_chart: str | None = None) -> str:
    """The tracker markdown; `chart` (and `outlook_chart`, the scaling outlook's) is the chart
    image's path relative to the markdown file."""
    lines = [
        "# Scaling Tracker: Volume Price Trade Model",
        "",
        "Written by vpt-ray after each run: each table holds the newest run per phase that fills",
        "it (a phase run fills both, a training run the first, a backtest the second; the Notes",
        "say which), the history every run. Do not edit by hand: the state comment at the end is",
        "what the next run reads.",
        "",
    ]
    if chart:
        lines += [f"![Key metrics across phases]({chart})", ""]
    lines += _table(
        table_rows(state, "training"),
        "Training Metrics (CV Average)",
        ("Samples", "Features", "Accuracy", "AUC", "Log Loss", "Notes"),
        lambda r: (
            r["samples"],
            r["features"],
            _fmt(r["cv_accuracy"]),
            _fmt(r["cv_auc"]),
            _fmt(r["cv_log_loss"]),
            marked(r),
        ),
    )
    lines += [""]
    lines += _table(
        table_rows(state, "backtesting"),
        "Backtesting Metrics",
        ("Trades", "Total Return", "Sharpe", "Max DD", "Win Rate", "Notes"),
        lambda r: (
            r["trades"],
            _fmt(r["total_return"], pct=True),
            _fmt(r["sharpe"], digits=2),
            _fmt(r["max_drawdown"], pct=True),
            _fmt(r["win_rate"], pct=True),
            marked(r, f"OOS accuracy {_fmt(r['accuracy'])}"),
        ),
    )
    lines += ["", *outlook.tracker_lines(state, outlook_chart)]
    lines += [f"### History ({len(state['history'])} runs, newest first)", ""]
    head = ("Run ID", "Phase", "Kind", "CV Accuracy", "OOS Accuracy", "Trades", "Total Return",
            "Buy & Hold", "Sharpe", "Max DD", "Notes")  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in state["history"]:
        lines.append(
            "| " + " | ".join(str(v) for v in (
                r["run_id"], r["phase"], kind_label(r),
                _fmt(r.get("cv_accuracy")), _fmt(r.get("accuracy")), _fmt(r.get("trades")),
                _fmt(r.get("total_return"), pct=True), _fmt(r.get("benchmark_return"), pct=True),
                _fmt(r.get("sharpe"), digits=2), _fmt(r.get("max_drawdown"), pct=True),
                str(r.get("notes", "")).replace("|", "/"),
            )) + " |"
        )  # fmt: skip
    lines += ["", f"<!-- vpt-ray-tracker {json.dumps(state, default=str)} -->", ""]
    return "\n".join(lines)


def chart_path(path: Location) -> Location:
    """Where the chart twin of the tracker at `path` lives: same name, .png."""
    return path.with_suffix(".png")


def outlook_chart_path(path: Location) -> Location:
    """Where the scaling outlook's chart of the tracker at `path` lives: name.outlook.png."""
    return path.with_suffix(".outlook.png")


def update(path: Location, row: dict) -> None:
    """Put `row` in the seed's tables its kind fills (`TABLE_KINDS`), as its phase's latest run
    if it is a finished phase run's (not a run STOPPED on memory, whose row says `status`), and
    prepend it to the history, as one locked read-modify-write (`storage.update_text`):
    concurrent runs each add their row. The chart is redrawn inside the lock, before the
    markdown that shows it."""

    def change(text: str | None) -> str:
        state = parse_state(text, path)
        kind = row.get("kind", "phase")
        finished = row.get("status", "FINISHED") == "FINISHED"
        for table, kinds in TABLE_KINDS.items():
            rows = state[table] = table_rows(state, table)
            if kind in kinds and finished:
                rows[str(row["phase"])] = row
        if kind == "phase" and finished:
            state["latest"][str(row["phase"])] = row
        state["history"] = [row] + [h for h in state["history"] if h["run_id"] != row["run_id"]]
        chart = None
        try:
            chart = write_chart(chart_path(path), state).name
        except Exception:  # noqa: BLE001 - a chart must never cost the tracker its new row
            log.exception("tracker chart not drawn")
        outlook_chart = None
        try:
            if newest := outlook.newest_record(state):
                outlook_chart = outlook_chart_path(path)
                storage.write_bytes(outlook_chart, outlook.outlook_png(*newest))
                outlook_chart = outlook_chart.name
        except Exception:  # noqa: BLE001 - the same for the outlook's chart
            outlook_chart = None
            log.exception("tracker outlook chart not drawn")
        return render(state, chart, outlook_chart)

    storage.update_text(path, change)


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
            and h.get("kind", "phase") == "phase"  # backtests re-test a model: not a phase's dot
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
