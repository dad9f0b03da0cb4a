"""`vpt compare RUN...`: runs side by side, to see what a change of config bought.

Reads each run's `metrics.json` and `config.yaml` from `artifacts/reports/{run_id}/` and prints a
markdown comparison, a table per section: the config settings that differ between the runs (and
only those), the headline metrics with the change from the first run (A) to the last, and the
resources each run used. With no run given, the runs are the scaling tracker's history (oldest
first; `--phase N` keeps one phase's, `--last K` the K newest). A standalone backtest compares
like any run: its CV and search rows read n/a and its kind names the model run it re-tests. The
same text is written to `artifacts/reports/compare-....md` so it can be pasted into a review.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from vpt_ray.core.bounded import load_yaml
from vpt_ray.core.run import read_status, write_text_atomic
from vpt_ray.core.storage import ArtifactError, read_json_object
from vpt_ray.core.tracking import flatten

# (label, dotted key in metrics.json, format): "pct" = fraction shown in percent
METRIC_ROWS = (
    ("status", "status", "text"),  # status.json's: FINISHED, STOPPED, ...
    ("data synthetic", "data.synthetic", "text"),
    ("bars", "data.bars", "int"),
    ("samples (CV)", "cv.samples", "int"),
    ("features", "features.count", "int"),
    ("search trials", "search.trials", "int"),
    ("CV accuracy", "cv.accuracy", "num"),
    ("CV AUC", "cv.auc", "num"),
    ("CV log loss", "cv.log_loss", "num"),
    ("train - validation gap", "cv.train_val_gap", "num"),
    ("OOS accuracy", "oos.accuracy", "num"),
    ("OOS AUC", "oos.auc", "num"),
    ("OOS log loss", "oos.log_loss", "num"),
    ("OOS bars", "oos.samples", "int"),
    ("trades", "backtest.trades", "int"),
    ("total return", "backtest.total_return", "pct"),
    ("CAGR", "backtest.cagr", "pct"),
    ("Sharpe", "backtest.sharpe", "num2"),
    ("Sortino", "backtest.sortino", "num2"),
    ("max drawdown", "backtest.max_drawdown", "pct"),
    ("max drawdown (daily closes)", "backtest.max_drawdown_daily", "pct"),
    ("top ticker share of PnL", "backtest.concentration.top_ticker_share", "pct"),
    ("costs / gross PnL", "backtest.costs.cost_share_of_gross", "pct"),
    ("win rate", "backtest.win_rate", "pct"),
    ("profit factor", "backtest.profit_factor", "num2"),
    ("exposure", "backtest.exposure", "pct"),
    ("turnover (x capital)", "backtest.turnover", "num2"),
    ("buy-and-hold return", "benchmark.total_return", "pct"),
    ("excess return", "benchmark.excess_return", "pct"),
    ("PBO", "overfitting.pbo", "num"),
    ("deflated Sharpe", "overfitting.dsr", "num"),
    ("verdict", "decision.verdict", "text"),
)


def report_dir(run: str, artifacts: Path) -> Path:
    """A run id under artifacts/reports, or a report directory given as a path."""
    as_path = Path(run)
    if (as_path / "metrics.json").exists():
        return as_path
    d = artifacts / "reports" / run
    if not (d / "metrics.json").exists():
        status = read_status(d)
        if status is not None:  # the run exists but never finished: say how it ended
            why = status.get("abandoned") or status.get("error") or "no metrics.json yet"
            raise FileNotFoundError(
                f"run {run!r} is {status['status']} ({why}): it has no metrics to compare"
            )
        known = sorted(p.parent.name for p in (artifacts / "reports").glob("*/metrics.json"))
        raise FileNotFoundError(
            f"run {run!r}: no {d / 'metrics.json'}; finished runs under {artifacts / 'reports'}: "
            f"{', '.join(known[-10:]) or 'none'}"
        )
    return d


SECTIONS = ("data", "cv", "oos", "backtest", "benchmark", "resources", "decision", "windows")


def load(run_dir: Path) -> tuple[dict, dict]:
    """(metrics, config) of one run; config is empty when config.yaml is missing. metrics
    carries the run's `status` (status.json's, FINISHED for a run from before status files).
    A damaged file is an ArtifactError naming it."""
    path = run_dir / "metrics.json"
    metrics = read_json_object(path, fix=f"rerun {run_dir.name} or leave it out")
    bad = [k for k in SECTIONS if not isinstance(metrics.get(k, {}), dict)]
    if bad or not isinstance(dig(metrics, "resources.stages") or {}, dict):
        raise ArtifactError(
            f"{path}: damaged: {', '.join(bad) or 'resources.stages'} is not a section of "
            f"figures; rerun {run_dir.name} or leave it out"
        )
    status = read_status(run_dir) or {}
    metrics = {**metrics, "status": status.get("status") or metrics.get("status") or "FINISHED"}
    cfg_path = run_dir / "config.yaml"
    try:
        config = load_yaml(cfg_path.read_bytes().decode()) if cfg_path.exists() else {}
    except (OSError, ValueError, yaml.YAMLError) as exc:  # not UTF-8, not YAML, too large
        raise ArtifactError(f"{cfg_path}: not a readable config ({exc})") from None
    return metrics, config if isinstance(config, dict) else {}


MISSING = object()


def config_diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, A's value, B's value) for every setting that differs; MISSING where one lacks it."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(set(fa) | set(fb))
    return [
        (k, fa.get(k, MISSING), fb.get(k, MISSING))
        for k in keys
        if fa.get(k, MISSING) != fb.get(k, MISSING)
    ]


def dig(d: dict, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v: object, kind: str = "num") -> str:
    if v is MISSING:
        return "(absent)"
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and not math.isfinite(v):
        return "n/a"
    if isinstance(v, list | tuple):
        return json.dumps(v, default=str) if len(v) <= 12 else f"[{len(v)} items]"
    if kind == "pct" and _is_num(v):
        return f"{v:.2%}"
    if kind == "int" and _is_num(v):
        return f"{int(v):,}"
    if kind == "num2" and _is_num(v):
        return f"{v:.2f}"
    if kind == "num" and isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def delta(a: object, b: object, kind: str) -> str:
    """B - A for numbers (percentage points for percentages), blank otherwise."""
    if not (_is_num(a) and _is_num(b)) or kind == "text":
        return ""
    d = float(b) - float(a)
    if kind == "pct":
        return f"{d * 100:+.2f} pp"
    if kind == "int":
        return f"{d:+,.0f}"
    return f"{d:+.2f}" if kind == "num2" else f"{d:+.4f}"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    cell = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *["| " + " | ".join(r) + " |" for r in cell],
    ]


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def label(i: int) -> str:
    """A, B, ..., Z, then R27, R28, ..."""
    return LETTERS[i] if i < len(LETTERS) else f"R{i + 1}"


def kind_text(m: dict) -> str:
    if m.get("kind") == "backtest":
        return f"backtest of {m.get('model_run_id')}"
    if m.get("kind") == "train":
        return f"phase {m.get('phase')} training run"
    return f"phase {m.get('phase')} run"


def windows_text(m: dict) -> str:
    """The run's data windows, named for what they were: a standalone backtest's data window is
    its backtest window (its training window is the model's); a training run has no backtest."""
    train, bt = dig(m, "windows.train"), dig(m, "windows.backtest")
    if m.get("kind") == "backtest":
        return f"backtest window {bt} (the model was trained on {train})"
    if m.get("kind") == "train":
        return f"train {train}, not backtested (out of sample: {dig(m, 'windows.out_of_sample')})"
    return f"train {train}, backtest {bt}"


def decision_lines(lab: str, m: dict) -> list[str]:
    """A run's decision: the verdict, then one line per reason (not one line of all of them)."""
    if m.get("kind") in ("backtest", "train"):
        return ["", f"{lab}: {kind_text(m)}: no decision of its own"]
    reasons = dig(m, "decision.reasons") or []
    return [
        "",
        f"{lab} decision: **{dig(m, 'decision.verdict')}**",
        "",
        *[f"- {r}" for r in reasons],
    ]


def config_diff_n(configs: list[dict]) -> list[tuple[str, list[object]]]:
    """(key, value per run) for every setting that is not the same in all runs."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for k in keys:
        values = [f.get(k, MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append((k, values))
    return rows


def compare_markdown_n(runs: list[tuple[str, tuple[dict, dict]]]) -> str:
    """Runs side by side as markdown: a table per section, columns A, B, ... and last - A."""
    if len(runs) < 2:
        raise ValueError(f"compare: {len(runs)} run(s) given; comparing needs at least 2")
    labels = [label(i) for i in range(len(runs))]
    last = labels[-1]
    title = ", ".join(f"{lab} = {rid}" for lab, (rid, _) in zip(labels, runs, strict=True))
    if len(runs) == 2:
        title = f"{labels[0]} = {runs[0][0]} vs {labels[1]} = {runs[1][0]}"
    lines = [f"# Run comparison: {title}", ""]
    for lab, (_, (m, _)) in zip(labels, runs, strict=True):
        d = m.get("data", {})
        lines.append(
            f"- {lab}: {kind_text(m)}, "
            f"{'SYNTHETIC data' if d.get('synthetic') else 'real data'}, {windows_text(m)}, "
            f"config {m.get('config_fingerprint')}, git {str(m.get('git_commit'))[:12]}"
        )
    configs = [c for _, (_, c) in runs]
    diff = config_diff_n(configs)
    lines += ["", f"## Config: {len(diff)} settings differ", ""]
    if diff:
        lines += _table(("setting", *labels), [(k, *map(fmt, vs)) for k, vs in diff])
    else:
        lines.append("Same resolved config." if all(configs) else "A config.yaml is missing.")
    lines += ["", "## Metrics", ""]
    rows = []
    metrics = [m for _, (m, _) in runs]
    for name, key, kind in METRIC_ROWS:
        values = [dig(m, key) for m in metrics]
        if all(v is None for v in values):
            continue
        rows.append((name, *(fmt(v, kind) for v in values), delta(values[0], values[-1], kind)))
    lines += _table(("metric", *labels, f"{last} - A"), rows)
    lines += ["", "## Resources", ""]
    res = [m.get("resources", {}) for m in metrics]
    res_rows = [
        ("peak memory (GB)", [r.get("peak_memory_gb") for r in res], "num2"),
        ("wall (s)", [r.get("wall_seconds") for r in res], "num2"),
        ("Ray CPUs", [dig(r, "ray.num_cpus") for r in res], "int"),
    ]
    stages = list(dict.fromkeys(s for r in res for s in r.get("stages", {})))
    res_rows += [
        (f"stage {s} (s)", [r.get("stages", {}).get(s) for r in res], "num2") for s in stages
    ]
    lines += _table(
        ("resource", *labels, f"{last} - A"),
        [(n, *(fmt(v, k) for v in vs), delta(vs[0], vs[-1], k)) for n, vs, k in res_rows],
    )
    lines += ["", "## Decisions"]
    for lab, m in zip(labels, metrics, strict=True):
        lines += decision_lines(lab, m)
    return "\n".join(lines) + "\n"


def compare_markdown(a_id: str, a: tuple[dict, dict], b_id: str, b: tuple[dict, dict]) -> str:
    """The side-by-side comparison of runs A and B as markdown."""
    return compare_markdown_n([(a_id, a), (b_id, b)])


def tracker_runs(tracker_path: Path, phase: int | None = None) -> list[str]:
    """Run ids of the tracker's history, oldest first (one phase's with `phase`)."""
    from vpt_ray.report.tracker import load_state

    history = load_state(tracker_path)["history"]
    return [
        str(r["run_id"])
        for r in reversed(history)
        if phase is None or int(r.get("phase", 0)) == phase
    ]


def output_name(ids: list[str]) -> str:
    if len(ids) <= 3:
        return "compare-" + "-vs-".join(ids) + ".md"
    return f"compare-{ids[0]}-and-{len(ids) - 1}-more.md"


def compare_runs(*runs: str, artifacts: Path = Path("artifacts")) -> tuple[str, Path]:
    """Compare runs (ids or report directories); writes the markdown, returns (text, path)."""
    dirs = [report_dir(r, artifacts) for r in runs]
    text = compare_markdown_n([(d.name, load(d)) for d in dirs])
    out = artifacts / "reports" / output_name([d.name for d in dirs])
    write_text_atomic(out, text)
    return text, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vpt compare",
        description="Compare runs side by side: the config settings that differ, the metrics "
        "(with last - A) and the resources, a table per section. With no RUN, the runs of the "
        "scaling tracker's history. Prints markdown and writes it to "
        "artifacts/reports/compare-....md.",
    )
    parser.add_argument(
        "runs", nargs="*", metavar="RUN", help="run ids (or report directories), 2 or more"
    )
    parser.add_argument(
        "--artifacts",
        default="artifacts",
        metavar="DIR",
        help="artifacts root holding reports/ (default: %(default)s)",
    )
    parser.add_argument(
        "--tracker",
        default=None,
        metavar="PATH",
        help="scaling tracker whose history is the default set (default: ARTIFACTS/"
        "SCALING_TRACKER.md)",
    )
    parser.add_argument("--phase", type=int, default=None, help="with no RUN: only this phase")
    parser.add_argument(
        "--last", type=int, default=None, metavar="K", help="with no RUN: the K newest runs"
    )
    args = parser.parse_args(argv)
    artifacts = Path(args.artifacts)
    runs = list(args.runs)
    try:
        if not runs:
            tracker_path = Path(args.tracker) if args.tracker else artifacts / "SCALING_TRACKER.md"
            if not tracker_path.exists():
                raise FileNotFoundError(
                    f"no runs given and no tracker at {tracker_path}: name the runs "
                    "(vpt compare RUN_A RUN_B ...) or point --tracker at one"
                )
            runs = tracker_runs(tracker_path, args.phase)
            runs = [r for r in runs if (artifacts / "reports" / r / "metrics.json").exists()]
            if args.last:
                runs = runs[-args.last :]
        if len(runs) < 2:
            print(
                f"error: compare needs at least 2 finished runs, got {len(runs)}: "
                f"{', '.join(runs) or 'none'}",
                file=sys.stderr,
            )
            return 2
        text, out = compare_runs(*runs, artifacts=artifacts)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
