"""`vpt compare RUN_A RUN_B`: two runs side by side, to see what a change of config bought.

Reads each run's `metrics.json` and `config.yaml` from `artifacts/reports/{run_id}/` and prints a
markdown comparison: the config settings that differ (and only those), the headline metrics with
the change from A to B, and the resources each run used. The same text is written to
`artifacts/reports/compare-{A}-vs-{B}.md` so it can be pasted into a review.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from vpt_ray.run import read_status, write_text_atomic

# (label, dotted key in metrics.json, format): "pct" = fraction shown in percent
METRIC_ROWS = (
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
    ("win rate", "backtest.win_rate", "pct"),
    ("profit factor", "backtest.profit_factor", "num2"),
    ("exposure", "backtest.exposure", "pct"),
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


def load(run_dir: Path) -> tuple[dict, dict]:
    """(metrics, config) of one run; config is empty when config.yaml is missing."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg_path = run_dir / "config.yaml"
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    return metrics, config or {}


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested dicts to dotted keys; lists stay whole values."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


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


def compare_markdown(a_id: str, a: tuple[dict, dict], b_id: str, b: tuple[dict, dict]) -> str:
    """The side-by-side comparison of runs A and B as markdown."""
    (ma, ca), (mb, cb) = a, b
    lines = [f"# Run comparison: A = {a_id} vs B = {b_id}", ""]
    for label, m in (("A", ma), ("B", mb)):
        d = m.get("data", {})
        lines.append(
            f"- {label}: phase {m.get('phase')}, "
            f"{'SYNTHETIC data' if d.get('synthetic') else 'real data'}, "
            f"train {dig(m, 'windows.train')}, backtest {dig(m, 'windows.backtest')}, "
            f"config {m.get('config_fingerprint')}, git {str(m.get('git_commit'))[:12]}"
        )
    diff = config_diff(ca, cb)
    lines += ["", f"## Config: {len(diff)} settings differ", ""]
    if diff:
        lines += _table(("setting", "A", "B"), [(k, fmt(va), fmt(vb)) for k, va, vb in diff])
    else:
        lines.append("Same resolved config." if ca and cb else "A config.yaml is missing.")
    lines += ["", "## Metrics", ""]
    rows = []
    for label, key, kind in METRIC_ROWS:
        va, vb = dig(ma, key), dig(mb, key)
        if va is None and vb is None:
            continue
        rows.append((label, fmt(va, kind), fmt(vb, kind), delta(va, vb, kind)))
    lines += _table(("metric", "A", "B", "B - A"), rows)
    lines += ["", "## Resources", ""]
    ra, rb = ma.get("resources", {}), mb.get("resources", {})
    res_rows = [
        ("peak memory (GB)", ra.get("peak_memory_gb"), rb.get("peak_memory_gb"), "num2"),
        ("wall (s)", ra.get("wall_seconds"), rb.get("wall_seconds"), "num2"),
        ("Ray CPUs", dig(ra, "ray.num_cpus"), dig(rb, "ray.num_cpus"), "int"),
    ]
    stages = list(dict.fromkeys([*ra.get("stages", {}), *rb.get("stages", {})]))
    res_rows += [
        (f"stage {s} (s)", ra.get("stages", {}).get(s), rb.get("stages", {}).get(s), "num2")
        for s in stages
    ]
    lines += _table(
        ("resource", "A", "B", "B - A"),
        [(n, fmt(va, k), fmt(vb, k), delta(va, vb, k)) for n, va, vb, k in res_rows],
    )
    for label, m in (("A", ma), ("B", mb)):
        reasons = "; ".join(dig(m, "decision.reasons") or [])
        lines.append(f"\n{label} decision: **{dig(m, 'decision.verdict')}**: {reasons}")
    return "\n".join(lines) + "\n"


def compare_runs(run_a: str, run_b: str, artifacts: Path = Path("artifacts")) -> tuple[str, Path]:
    """Compare two runs; writes the markdown and returns (text, path written)."""
    da, db = report_dir(run_a, artifacts), report_dir(run_b, artifacts)
    text = compare_markdown(da.name, load(da), db.name, load(db))
    out = artifacts / "reports" / f"compare-{da.name}-vs-{db.name}.md"
    write_text_atomic(out, text)
    return text, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vpt compare",
        description="Compare two runs side by side: the config settings that differ, the "
        "metrics (with B - A) and the resources. Prints markdown and writes it to "
        "artifacts/reports/compare-A-vs-B.md.",
    )
    parser.add_argument("run_a", metavar="RUN_A", help="run id (or report directory) A")
    parser.add_argument("run_b", metavar="RUN_B", help="run id (or report directory) B")
    parser.add_argument(
        "--artifacts",
        default="artifacts",
        metavar="DIR",
        help="artifacts root holding reports/ (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        text, out = compare_runs(args.run_a, args.run_b, Path(args.artifacts))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
