"""The run report: `metrics.json` (read by other tools: keep its keys), trades and equity as
parquet, and a short `summary.md`. Synthetic runs say so at the top of every human-facing file.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa

from vpt_ray.core.run import write_json_atomic, write_text_atomic
from vpt_ray.data.local import write_parquet_atomic
from vpt_ray.report.evidence import baseline_lines

PREDICTIONS_FILE = "predictions.parquet"  # labelled OOS bars: ticker, timestamp, y, p, fwd_ret
# every bar of the clock: timestamp, equity, gross_exposure, net_exposure (shares of the equity)
BAR_EQUITY_FILE = "equity_bars.parquet"
TICKER_PNL_FILE = "ticker_pnl.parquet"  # date, one column per ticker: its cumulative net PnL
BENCHMARK_FILE = "benchmark.parquet"  # date, benchmark: equal-weight buy-and-hold equity
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
    bar_equity: pd.DataFrame | None = None,
    benchmark: pd.Series | None = None,
    ticker_pnl: pd.DataFrame | None = None,
) -> None:
    """The run's files. equity.parquet: the portfolio at each session's close (date, equity);
    equity_bars.parquet (with `bar_equity`): at every bar of its clock, where the intraday
    drawdown is measured (timestamp UTC, equity, gross_exposure, net_exposure);
    ticker_pnl.parquet (with `ticker_pnl`): each ticker's cumulative net PnL by session."""
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
    if bar_equity is not None and not bar_equity.empty:
        write_parquet_atomic(
            pa.Table.from_pandas(bar_equity, preserve_index=False), report_dir / BAR_EQUITY_FILE
        )
    if predictions is not None and not predictions.empty:
        write_parquet_atomic(
            pa.Table.from_pandas(predictions, preserve_index=False), report_dir / PREDICTIONS_FILE
        )
    if benchmark is not None and len(benchmark):
        b = benchmark.rename("benchmark").rename_axis("date").reset_index()
        b["date"] = pd.to_datetime(b["date"])
        write_parquet_atomic(
            pa.Table.from_pandas(b, preserve_index=False), report_dir / BENCHMARK_FILE
        )
    if ticker_pnl is not None and not ticker_pnl.empty:
        tp = ticker_pnl.rename_axis("date").reset_index()
        tp["date"] = pd.to_datetime(tp["date"])
        tp.columns = [str(c) for c in tp.columns]
        write_parquet_atomic(
            pa.Table.from_pandas(tp, preserve_index=False), report_dir / TICKER_PNL_FILE
        )
    if summary:
        summary_fn = backtest_summary_markdown if metrics.get("kind") == "backtest" else None
        write_text_atomic(report_dir / "summary.md", (summary_fn or summary_markdown)(metrics))
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
    from vpt_ray.data.universe import summary_line as universe_line
    from vpt_ray.model.search_result import summary_line as search_line
    from vpt_ray.report.outlook import summary_line as scaling_summary_line
    from vpt_ray.validation.oracle import summary_line as oracle_summary_line  # imports Ray

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
        f"accuracy {num(cv['accuracy'])}{_se(cv.get('accuracy_se'))}, AUC {num(cv['auc'])}, "
        f"log loss {num(cv['log_loss'])}, train accuracy {num(cv['train_accuracy'])}, "
        f"train-validation gap {num(cv['train_val_gap'])}{_se(cv.get('train_val_gap_se'))}"
        + (f"; {cv['early_stopping']}" if cv.get("early_stopping") else ""),
        *(
            [
                f"- Sampling: --sample-days {cv['sample_days']}: trained and searched on "
                f"{cv.get('sessions', '?')} sessions, one drawn per equal stratum (seeded)"
            ]
            if cv.get("sample_days")
            else []
        ),
        search_line(m["search"]),
        *_budget_lines(m["search"]),
        f"- Out of sample ({oos['samples']:,} labelled bars): accuracy {num(oos['accuracy'])}"
        f"{_se(oos.get('accuracy_se'))}, "
        f"AUC {num(oos['auc'])}, log loss {num(oos['log_loss'])}",
        *baseline_lines(m),  # the naive predictor, the robustness of the backtest
        f"- Backtest (one pool of {_money(bt.get('capital'))}, every ticker on one "
        f"clock): {bt['trades']} trades, total return {pct(bt['total_return'])}, "
        f"Sharpe {num(bt['sharpe'], 2)} (daily returns x sqrt(252)), max drawdown "
        f"{pct(bt['max_drawdown'])} (intraday, bar closes; close to close "
        f"{pct(bt.get('max_drawdown_daily'))}), "
        f"win rate {pct(bt['win_rate'])}, profit factor {num(bt.get('profit_factor'), 2)}, "
        f"mean gross exposure {pct(bt.get('exposure'))}",
        *portfolio_lines(bt),
        *filter(None, [benchmark_line(m)]),
        *filter(None, [oracle_summary_line(m)]),
        *filter(None, [scaling_summary_line(m)]),
        f"- Resources: peak memory {res['peak_memory_gb']:.2f} GB, "
        f"wall {res['wall_seconds']:.0f} s; stages {res['stages']}",
        *filter(None, [node_memory_line(res)]),
        *_ensemble_lines(m.get("ensemble")),
        *([f"- {m['optimized_from']['summary']}"] if m.get("optimized_from") else []),
        "",
        f"## Decision: {m['decision']['verdict'].upper()}",
        "",
        *[f"- {r}" for r in m["decision"]["reasons"]],
        "",
        *_optimize_lines(m.get("optimize")),
        "## Per ticker",
        "",
        *per_ticker_lines(bt),
    ]
    return "\n".join(lines) + "\n"


def benchmark_line(m: dict) -> str | None:
    """The strategy against equal-weight buy-and-hold of the same tickers, when measured."""
    b = m.get("benchmark") or {}
    if b.get("total_return") is None:
        return None
    return (
        f"- Benchmark (equal-weight buy-and-hold, no costs): total return "
        f"{pct(b['total_return'])}, Sharpe {num(b.get('sharpe'), 2)}, max drawdown "
        f"{pct(b.get('max_drawdown'))}; excess return of the strategy {pct(b.get('excess_return'))}"
    )


def per_ticker_lines(bt: dict) -> list[str]:
    """The per-ticker table: each ticker's contribution to the portfolio (issue 21's columns
    when the run has them)."""
    lines = [
        "Each ticker's contribution to the portfolio: its net PnL, share of the net PnL, return on "
        "the portfolio's capital and the Sharpe of its daily contributions.",
        "",
        "| Ticker | Trades | PnL | Share of PnL | Return on capital | Sharpe | Max DD | Win Rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, s in bt.get("per_ticker", {}).items():
        pnl = s.get("pnl")
        lines.append(
            f"| {t} | {s['trades']} | {'n/a' if pnl is None else f'{pnl:,.0f}'} | "
            f"{pct(s.get('pnl_share'))} | {pct(s['total_return'])} | {num(s['sharpe'], 2)} | "
            f"{pct(s['max_drawdown'])} | {pct(s['win_rate'])} |"
        )
    return lines


def backtest_summary_markdown(m: dict) -> str:
    """summary.md of a standalone backtest: a saved model re-tested on another window."""
    d, oos, bt, res = m["data"], m["oos"], m["backtest"], m.get("resources", {})
    lines = [f"# vpt-ray backtest {m['run_id']} (backtest of {m['model_run_id']})", ""]
    if d.get("synthetic"):
        lines += [SYNTHETIC_BANNER, ""]
    lines += [
        f"- Model: run {m['model_run_id']} (phase {m['phase']}), {m['model_dir']}; trained on "
        f"{m['windows']['train']}",
        f"- Data: {len(d['tickers'])} tickers, {d.get('bars', 0):,} bars ({d.get('bar')}); "
        f"sources: {', '.join(sorted(d.get('sources_used', [])))}",
        f"- Window: backtest {m['windows']['backtest']} (features warm up from {d.get('start')})",
        f"- Out of sample ({oos['samples']:,} labelled bars): accuracy {num(oos['accuracy'])}, "
        f"AUC {num(oos['auc'])}, log loss {num(oos['log_loss'])}",
        f"- Backtest (one pool of {_money(bt.get('capital'))}): {bt['trades']} trades, total "
        f"return {pct(bt['total_return'])}, Sharpe {num(bt['sharpe'], 2)} (daily returns), max "
        f"drawdown {pct(bt['max_drawdown'])} (intraday; close to close "
        f"{pct(bt.get('max_drawdown_daily'))}), win rate {pct(bt['win_rate'])}, profit factor "
        f"{num(bt.get('profit_factor'), 2)}, mean gross exposure {pct(bt.get('exposure'))}",
        *portfolio_lines(bt),
        *filter(None, [benchmark_line(m)]),
        f"- Resources: peak memory {res.get('peak_memory_gb', 0):.2f} GB, "
        f"wall {res.get('wall_seconds', 0):.0f} s",
        "",
        "No decision: a backtest re-tests a model; the phase run that trained it decides.",
        "",
        "## Per ticker",
        "",
        *per_ticker_lines(bt),
    ]
    return "\n".join(lines) + "\n"


def _se(v: float | None) -> str:
    return "" if v is None or v != v else f" (SE {v:.4f})"


def _optimize_lines(o: dict | None) -> list[str]:
    """The reduced configuration an optimize / overfitting-stop verdict wrote."""
    if not o:
        return []
    if "error" in o:
        return ["## Optimize: no reduced configuration", "", f"- failed: {o['error']}", ""]
    top = ", ".join(
        f"{r['feature']} {r['importance']:+.5f}"
        for r in o["importance"][: min(8, len(o["features"]))]
    )
    return [
        "## Optimize: reduced configuration",
        "",
        f"- {o['rule']}.",
        f"- Full feature set: CV log loss {num(o['reference_log_loss'], 5)} (SE "
        f"{num(o['reference_se'], 5)}); chosen: {num(o['chosen_log_loss'], 5)}",
        f"- Features {len(o['features_before'])} -> {len(o['features'])}, max_depth "
        f"{o['max_depth_before']} -> {o['max_depth']}, n_estimators {o['n_estimators_before']} "
        f"-> {o['n_estimators']}; most important (permutation, rise in log loss): {top}",
        f"- Written to {o['file']}: `{o['command']}`"
        + (f" ({o['note']})" if o.get("note") else ""),
        "",
    ]


def _budget_lines(search: dict) -> list[str]:
    """Where the search's time budget came from and how many trials it completed."""
    b = search.get("budget")
    if not b:
        return []
    origin = (
        f"hardware.max_hours {b['max_hours']:g} h less the other stages' expected "
        f"{b['other_stages_expected_s']:.0f} s on {b['bars'] / 1e6:.1f} M bars (x2 margin)"
        if b["source"] == "hardware.max_hours"
        else "search.time_budget_s"
    )
    return [
        f"- Search budget: {b['time_budget_s']:.0f} s ({origin}); {b['trials_planned']} of "
        f"{b['trials_requested']} trials planned to fit it (expected {b['search_expected_s']:.0f}"
        f" s), {search.get('trials_completed', '?')} completed every fold in "
        f"{search.get('elapsed_s', 0):.0f} s"
    ]


def concentration_line(c: dict) -> str:
    """Who made the PnL, in one line (console and summary.md)."""
    if c.get("top_ticker_share") is None:
        head = "no net profit to attribute"
    else:
        head = (
            f"top ticker {c['top_ticker']} makes {pct(c['top_ticker_share'])} of the net PnL, "
            f"top 5 {pct(c['top5_share'])}"
        )
    return (
        f"{head}; {pct(c['tickers_profitable_share'])} of tickers profitable, median ticker "
        f"Sharpe {num(c['median_ticker_sharpe'], 2)}"
    )


def _money(v: float | None) -> str:
    return "the capital" if v is None else f"${v:,.0f}"


def portfolio_lines(bt: dict) -> list[str]:
    """Concentration and costs of the portfolio (runs before issue 21 have neither)."""
    lines = []
    if bt.get("concentration"):
        lines.append(f"- Concentration: {concentration_line(bt['concentration'])}")
    c = bt.get("costs")
    if c:
        share = c.get("cost_share_of_gross")
        lines.append(
            f"- Costs: commissions ${c['commissions']:,.0f} + slippage ${c['slippage']:,.0f} = "
            + (f"{share:.0%} of the gross PnL (${c['gross_pnl']:,.0f})" if share is not None
               else f"more than the gross PnL (${c['gross_pnl']:,.0f})")
            + f"; {num(c.get('commission_bps_per_fill'), 2)} bps commission per fill; "
            f"{bt.get('trades_skipped', 0)} of {bt.get('trades_planned', 0)} planned trades "
            "skipped (no room or under one share)"
        )  # fmt: skip
        from vpt_ray.backtest.portfolio_stats import cost_warning

        warning = cost_warning(c["check"], bt.get("capital") or 0.0) if c.get("check") else None
        if warning:
            lines.append(f"- **Warning**: {warning}")
    return lines


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
        + (
            f"; ensemble - single: OOS accuracy {num(d['oos_accuracy'])} (SE "
            f"{num(d['oos_accuracy_se'])}), Sharpe {num(d['sharpe'], 2)} (SE "
            f"{num(d['sharpe_se'], 2)}), paired on the same bars and sessions"
            if (d := e.get("differences"))
            else ""
        )
    ]
