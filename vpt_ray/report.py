"""The run report: `metrics.json` (read by other tools: keep its keys), trades and equity as
parquet, and a short `summary.md`. Synthetic runs say so at the top of every human-facing file.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa

from vpt_ray.data.local import write_parquet_atomic
from vpt_ray.run import write_json_atomic, write_text_atomic

PREDICTIONS_FILE = "predictions.parquet"  # labelled OOS bars: ticker, timestamp, y, p, fwd_ret
SYNTHETIC_BANNER = (
    "**SYNTHETIC DATA**: this run used the built-in synthetic market, not real prices. "
    "Its figures measure the pipeline, not a tradable edge."
)


def json_safe(obj: object) -> object:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(
    report_dir: Path,
    metrics: dict,
    trades: pd.DataFrame,
    equity: pd.Series,
    summary: bool = True,
    predictions: pd.DataFrame | None = None,
) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    if not trades.empty:
        write_parquet_atomic(
            pa.Table.from_pandas(trades, preserve_index=False), report_dir / "trades.parquet"
        )
    eq = equity.rename("equity").rename_axis("date").reset_index()
    eq["date"] = pd.to_datetime(eq["date"])
    write_parquet_atomic(
        pa.Table.from_pandas(eq, preserve_index=False), report_dir / "equity.parquet"
    )
    if predictions is not None and not predictions.empty:
        write_parquet_atomic(
            pa.Table.from_pandas(predictions, preserve_index=False), report_dir / PREDICTIONS_FILE
        )
    if summary:
        write_text_atomic(report_dir / "summary.md", summary_markdown(metrics))
    write_json_atomic(report_dir / "metrics.json", json_safe(metrics))


def pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.2%}"


def num(v: float | None, d: int = 4) -> str:
    return "n/a" if v is None or v != v else f"{v:.{d}f}"


def node_memory_line(res: dict) -> str | None:
    """summary.md's per-node memory of a run measured node by node (on a cluster): each node's
    peak and its object store's peak use, the driver's node marked; None for a local run."""
    nodes = res.get("nodes") or {}
    if res.get("measured") != "per node" or not nodes:
        return None
    parts = []
    for name, n in nodes.items():
        store = n.get("object_store_peak_gb")
        parts.append(
            f"{name}{' (driver)' if n.get('driver') else ''} {n['peak_gb']:.2f} GB"
            + (f" (object store {store:.2f} GB)" if store else "")
        )
    return (
        f"- Peak memory per node ({len(nodes)} nodes; all together {res['peak_memory_gb']:.2f} "
        f"GB): {'; '.join(parts)}"
    )


def summary_markdown(m: dict) -> str:
    from vpt_ray.oracle import summary_line as oracle_summary_line  # imports Ray
    from vpt_ray.search import summary_line as search_line
    from vpt_ray.universe import summary_line as universe_line

    d, cv, oos, bt, res = m["data"], m["cv"], m["oos"], m["backtest"], m["resources"]
    lines = [f"# vpt-ray run {m['run_id']} (phase {m['phase']})", ""]
    if d["synthetic"]:
        lines += [SYNTHETIC_BANNER, ""]
    lines += [
        f"- Data: {len(d['tickers'])} tickers, {d['bars']:,} bars, {d['start']} .. {d['end']} "
        f"({d['bar']}); sources: {', '.join(sorted(d['sources_used']))}",
        *(
            [f"- Skipped (no data in any source): {', '.join(d['skipped'])}"]
            if d.get("skipped")
            else []
        ),
        f"- Windows: train {m['windows']['train']}, backtest {m['windows']['backtest']}",
        *filter(None, [universe_line(m.get("universe"))]),
        f"- CV ({cv['folds_count']} purged walk-forward folds, "
        f"{m['search'].get('samples', cv['samples']):,} samples searched): "
        f"accuracy {num(cv['accuracy'])}, AUC {num(cv['auc'])}, log loss {num(cv['log_loss'])}, "
        f"train accuracy {num(cv['train_accuracy'])}",
        *(
            [
                f"- Sampling: --sample-days {cv['sample_days']}: trained and searched on "
                f"{cv.get('sessions', '?')} sessions, one drawn per equal stratum (seeded)"
            ]
            if cv.get("sample_days")
            else []
        ),
        search_line(m["search"]),
        f"- Out of sample ({oos['samples']:,} labelled bars): accuracy {num(oos['accuracy'])}, "
        f"AUC {num(oos['auc'])}, log loss {num(oos['log_loss'])}",
        f"- Backtest: {bt['trades']} trades, total return {pct(bt['total_return'])}, "
        f"Sharpe {num(bt['sharpe'], 2)}, max drawdown {pct(bt['max_drawdown'])}, "
        f"win rate {pct(bt['win_rate'])}, profit factor {num(bt.get('profit_factor'), 2)}, "
        f"exposure {pct(bt.get('exposure'))}",
        *filter(None, [oracle_summary_line(m)]),
        f"- Resources: peak memory {res['peak_memory_gb']:.2f} GB, "
        f"wall {res['wall_seconds']:.0f} s; stages {res['stages']}",
        *filter(None, [node_memory_line(res)]),
        *_ensemble_lines(m.get("ensemble")),
        "",
        f"## Decision: {m['decision']['verdict'].upper()}",
        "",
        *[f"- {r}" for r in m["decision"]["reasons"]],
        "",
        "## Per ticker",
        "",
        "| Ticker | Trades | Total Return | Sharpe | Max DD | Win Rate |",
        "|---|---|---|---|---|---|",
    ]
    for t, s in bt["per_ticker"].items():
        lines.append(
            f"| {t} | {s['trades']} | {pct(s['total_return'])} | {num(s['sharpe'], 2)} | "
            f"{pct(s['max_drawdown'])} | {pct(s['win_rate'])} |"
        )
    return "\n".join(lines) + "\n"


def _ensemble_lines(e: dict | None) -> list[str]:
    """The ensemble against the best single model (phase 5), when the run built one."""
    if not e:
        return []
    cv, oos, bt = e["cv"], e["oos"], e["backtest"]
    return [
        f"- Ensemble ({e['used']} of {e['candidates']} members weighted, weights chosen on "
        f"out-of-fold CV predictions) vs best single model: CV log loss "
        f"{num(cv['ensemble']['log_loss'], 5)} vs {num(cv['single']['log_loss'], 5)}, "
        f"OOS accuracy {num(oos['ensemble']['accuracy'])} vs {num(oos['single']['accuracy'])}, "
        f"Sharpe {num(bt['ensemble']['sharpe'], 2)} vs {num(bt['single']['sharpe'], 2)}"
    ]
