"""report.html as a whole: every chart the run's files allow (`build_figures`), the page with
one section per question in order (`render_html`), its header, style and table sorting, and the
`vpt report` command (`python -m vpt_ray.html_report`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from vpt_ray.backtest import tearsheet
from vpt_ray.core.run import write_text_atomic
from vpt_ray.core.storage import ArtifactError
from vpt_ray.report.html.backtest import (
    benchmark_text,
    drawdowns_table,
    fig_equity,
    fig_monthly,
    fig_rolling_sharpe,
    fig_turnover,
    monthly_returns,
    portfolio_text,
    rolling_window,
)
from vpt_ray.report.html.common import (
    figure_html,
    missing_note,
    model_run_text,
    scroll_wrap,
    show,
)
from vpt_ray.report.html.decision import decision_section, kpi_html
from vpt_ray.report.html.inputs import RunFiles, load_run
from vpt_ray.report.html.learning import (
    cv_table,
    fig_cv_folds,
    fig_param_importance,
    fig_search_objective,
    fig_search_parallel,
    param_importance,
    trials_table,
)
from vpt_ray.report.html.oracle import has_oracle, oracle_section
from vpt_ray.report.html.pnl import builders as pnl_builders
from vpt_ray.report.html.pnl import pnl_section
from vpt_ray.report.html.predictions import (
    calibration_table,
    fig_calibration,
    fig_feature_importance,
    oos_text,
)
from vpt_ray.report.html.resources import (
    fig_resources,
    memory_thresholds,
    provenance_section,
    resources_text,
)
from vpt_ray.report.html.risk import builders as risk_builders
from vpt_ray.report.html.risk import cagr_text, risk_section
from vpt_ray.report.html.scaling import fig_scaling, scaling_html
from vpt_ray.report.html.trades import (
    fig_per_ticker,
    fig_prices,
    fig_trades,
    per_ticker_html,
    price_window_text,
)

log = logging.getLogger("vpt_ray.html_report")

REPORT_FILE = "report.html"


def build_figures(run: RunFiles) -> dict[str, go.Figure]:
    """Every chart the run's files allow, by key; missing inputs are noted in `run.notes`."""
    m = run.metrics
    builders: dict[str, Callable[[], go.Figure | None]] = {
        "cv_folds": lambda: fig_cv_folds(m["cv"]) if m.get("cv", {}).get("folds") else None,
        "search_objective": lambda: (
            fig_search_objective(run.trials) if len(run.trials) else None
        ),
        "search_parallel": lambda: fig_search_parallel(run.trials) if len(run.trials) else None,
        "search_importance": lambda: (
            fig_param_importance(param_importance(run.trials)) if len(run.trials) >= 5 else None
        ),
        "feature_importance": lambda: (
            fig_feature_importance(run.importance) if run.importance is not None else None
        ),
        "calibration": lambda: (
            fig_calibration(
                run.predictions,
                calibration_table(run.predictions),
                run.config.get("backtest", {}),
            )
            if run.predictions is not None and len(run.predictions)
            else None
        ),
        "equity": lambda: (
            fig_equity(run.equity, run.capital, run.benchmark)
            if run.equity is not None and len(run.equity) else None
        ),
        "rolling_sharpe": lambda: (
            fig_rolling_sharpe(run.equity, run.capital, run.benchmark,
                               rolling_window(len(run.equity)))
            if run.equity is not None and len(run.equity) >= 10 else None
        ),
        "turnover": lambda: (
            fig_turnover(tearsheet.daily_turnover(run.trades, run.equity, run.capital))
            if run.equity is not None and len(run.equity) and len(run.trades) else None
        ),
        "prices": lambda: fig_prices(run.prices, run.trades) if run.prices else None,
        "per_ticker": lambda: (
            fig_per_ticker(m["backtest"]["per_ticker"])
            if m.get("backtest", {}).get("per_ticker")
            else None
        ),
        "trades": lambda: fig_trades(run.trades) if len(run.trades) else None,
        "monthly": lambda: (
            fig_monthly(monthly_returns(run.equity, run.capital))
            if run.equity is not None and len(run.equity)
            else None
        ),
        "scaling": lambda: (
            fig_scaling(m["scaling"]) if (m.get("scaling") or {}).get("sentence") else None
        ),
        "resources": lambda: (
            fig_resources(m["resources"], memory_thresholds(m, run.config))
            if m.get("resources", {}).get("memory_samples")
            else None
        ),
    }  # fmt: skip
    builders |= {**pnl_builders(run), **risk_builders(run)}  # sections in their own modules
    figs = {}
    for key, build in builders.items():
        try:
            fig = build()
        except Exception as exc:  # noqa: BLE001 - one broken chart must not cost the whole page
            log.exception("report chart %s failed", key)
            run.notes[key] = f"chart failed: {type(exc).__name__}: {exc}"
            continue
        if fig is not None:
            figs[key] = fig
    return figs


def _header(run: RunFiles) -> str:
    m, d, w = run.metrics, run.metrics.get("data", {}), run.metrics.get("windows", {})
    status = (run.status or {}).get("status", "unknown")
    if status == "RUNNING":  # the phase writes this page before it marks the run FINISHED
        status = "complete"
    commit = m.get("git_commit") or (run.meta or {}).get("git_commit")
    items = [
        ("run", m.get("run_id")),
        ("phase", m.get("phase")),
        ("status", status),
        ("data", f"{', '.join(d.get('sources_used', [])) or 'n/a'}; "
                 f"{len(d.get('tickers', []))} tickers ({', '.join(d.get('tickers', [])[:12])}"
                 f"{', ...' if len(d.get('tickers', [])) > 12 else ''}), "
                 f"{show(d.get('bars'))} {d.get('bar', '')} bars"),
        ("train window", w.get("train")),
        ("backtest window", w.get("backtest")),
        ("label horizon / embargo", f"{w.get('label_horizon')} / {w.get('embargo_bars')} bars"),
        *([("model run", m.get("model_run_id"))] if m.get("kind") == "backtest" else []),
        ("config hash", m.get("config_fingerprint")),
        ("git commit", commit[:12] if commit else "n/a"),
    ]  # fmt: skip
    dl = "".join(
        f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd></div>" for k, v in items
    )
    banner = ""
    if d.get("synthetic"):
        tick = ", ".join(d.get("synthetic_tickers", []))
        banner = (
            '<div id="synthetic-banner" class="banner">SYNTHETIC DATA: this run used the built-in '
            f"synthetic market ({html.escape(tick)}; signal strength "
            f"{html.escape(str(d.get('signal_strength')))}), not real prices. Its figures measure "
            "the pipeline, not a tradable edge.</div>"
        )
    return f"{banner}<dl class=header>{dl}</dl>{kpi_html(m)}"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;
padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 16px 16px;
margin:14px 0}
.banner{background:#cf222e;color:#fff;font-weight:700;padding:10px 14px;border-radius:6px;
margin:8px 0;letter-spacing:.2px}
dl.header{display:flex;flex-wrap:wrap;gap:4px 22px;margin:8px 0}dl.header div{min-width:120px}
dt{font-size:11px;color:#656d76;text-transform:uppercase}dd{margin:0;font-weight:600}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:12px 0}
.kpi{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px}
.kpi .k{font-size:11px;color:#656d76;text-transform:uppercase}
.kpi .v{font-size:22px;font-weight:700}
.kpi .s{font-size:12px;color:#656d76}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}th,td{padding:3px 9px;
border-bottom:1px solid #eaeef2;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f6f8fa;cursor:pointer;user-select:none;position:sticky;top:0}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
.tablewrap{max-height:420px;overflow:auto}
.verdict{display:inline-block;font-size:20px;font-weight:800;padding:4px 14px;border-radius:6px;
color:#fff;background:#6e7781}.v-advance{background:#1a7f37}.v-stop{background:#cf222e}
.v-optimize{background:#bc4c00}.v-hold{background:#9a6700}
.note{color:#9a6700}pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
nav a{margin-right:12px}
"""


SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, i) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var asc = th.dataset.dir !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


NAV = {
    "decision": "Decision",
    "scaling": "Scaling outlook",
    "learn": "Cross-validation",
    "search": "Search",
    "oos": "Calibration",
    "where": "Features",
    "backtest": "Backtest",
    "pnl": "PnL and costs",
    "risk": "Risk",
    "oracle": "Oracle",
    "cost": "Resources",
    "provenance": "Provenance",
}


def render_html(run: RunFiles, figs: dict[str, go.Figure]) -> str:
    """The whole page: header, decision, then one section per question."""
    m = run.metrics

    def fig(key: str) -> str:
        return figure_html(key, figs[key]) if key in figs else ""

    bt = m.get("backtest", {})
    sections = [
        ("decision", "Should I scale? The decision", decision_section(run)),
        *([("scaling", "Does more data still pay? The scaling outlook",
            scaling_html(m["scaling"]) + fig("scaling") + missing_note(run, "scaling"))]
          if (m.get("scaling") or {}).get("sentence") else []),
        (
            "learn",
            "Did it learn? Cross-validation",
            model_run_text(run, "cross-validation")
            + (cv_table(m["cv"]) if m.get("cv", {}).get("folds") else "")
            + fig("cv_folds"),
        ),
        (
            "search",
            f"Tune search ({len(run.trials)} trials)" if not run.is_backtest else "Tune search",
            fig("search_objective")
            + fig("search_parallel")
            + fig("search_importance")
            + (scroll_wrap(trials_table(run.trials)) if len(run.trials) else "")
            + model_run_text(run, "search")
            + missing_note(run, "search_objective", "search_parallel", "search_importance"),
        ),
        (
            "oos",
            "Out of sample: calibration of the probabilities",
            oos_text(run) + fig("calibration") + missing_note(run, "calibration"),
        ),
        (
            "where",
            "Where does the edge come from? Features",
            fig("feature_importance") + missing_note(run, "importance", "feature_importance"),
        ),
        (
            "backtest",
            "Backtest",
            f"<p>{show(bt.get('trades'))} trades; total return "
            f"{show(bt.get('total_return'), 'pct')}, "
            f"{cagr_text(bt)}, Sharpe {show(bt.get('sharpe'), digits=2)}, "
            f"Sortino {show(bt.get('sortino'), digits=2)}, max drawdown "
            f"{show(bt.get('max_drawdown'), 'pct')}, win rate {show(bt.get('win_rate'), 'pct')}, "
            f"profit factor {show(bt.get('profit_factor'), digits=2)}, exposure "
            f"{show(bt.get('exposure'), 'pct')}, turnover {show(bt.get('turnover'), digits=1)}x "
            f"capital, commissions ${show(bt.get('commissions'), digits=2)}.</p>"
            + portfolio_text(bt)
            + benchmark_text(m.get("benchmark"))
            + fig("equity")
            + fig("rolling_sharpe")
            + drawdowns_table(run)
            + fig("monthly")
            + fig("turnover")
            + fig("per_ticker")
            + (per_ticker_html(bt["per_ticker"]) if bt.get("per_ticker") else "")
            + fig("trades")
            + price_window_text(run)
            + fig("prices")
            + missing_note(run, "equity", "rolling_sharpe", "monthly", "turnover", "per_ticker",
                    "trades", "prices"),
        ),
        ("pnl", "PnL, costs and exposure", pnl_section(run, fig)),
        ("risk", "Risk: daily returns against the benchmark", risk_section(run, fig)),
        *([("oracle", "Known truth: the model against the oracle", oracle_section(m))]
          if has_oracle(m) else []),
        (
            "cost",
            "What did it cost? Resources",
            resources_text(run) + fig("resources") + missing_note(run, "resources"),
        ),
        ("provenance", "Provenance", provenance_section(run)),
    ]  # fmt: skip
    nav = "".join(f'<a href="#{k}">{html.escape(NAV.get(k, k))}</a>' for k, _, _ in sections)
    body = "".join(
        f'<section id="{k}"><h2>{html.escape(t)}</h2>{content}</section>'
        for k, t, content in sections
    )
    synthetic = " [SYNTHETIC]" if m.get("data", {}).get("synthetic") else ""
    title = f"vpt-ray run {m.get('run_id')} (phase {m.get('phase')}){synthetic}"
    if run.is_backtest:
        title = (
            f"vpt-ray backtest {m.get('run_id')} (backtest of {m.get('model_run_id')}){synthetic}"
        )
    generated = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f'<body data-figures="{len(figs)}"><main><h1>{html.escape(title)}</h1>'
        f"<nav>{nav}</nav>{_header(run)}{body}"
        f'<p class="note">Written by vpt-ray on {generated} from the files in '
        f"<code>{html.escape(str(run.report_dir))}</code>.</p></main>"
        f"<script>{SORT_JS}</script></body></html>"
    )


def parse_window(text: str) -> tuple[dt.date, dt.date]:
    """`START..END` (ISO dates) -> (start, end), for `--window`."""
    try:
        a, b = (dt.date.fromisoformat(p.strip()) for p in text.split(".."))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--window {text!r}: expected START..END as YYYY-MM-DD..YYYY-MM-DD"
        ) from None
    if b < a:
        raise argparse.ArgumentTypeError(f"--window {text!r}: END is before START")
    return a, b


def write_html_report(
    report_dir: Path,
    model_dir: Path | None = None,
    price_window: tuple[dt.date, dt.date] | None = None,
) -> Path:
    """Build `report_dir/report.html` from the run's files on disk; returns its path."""
    run = load_run(Path(report_dir), model_dir, price_window)
    figs = build_figures(run)
    path = Path(report_dir) / REPORT_FILE
    write_text_atomic(path, render_html(run, figs))
    log.info("HTML report: %s (%d charts)", path, len(figs))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vpt report",
        description="Build (or rebuild) a run's self-contained HTML report, "
        "artifacts/reports/RUN_ID/report.html, from the files the run left on disk.",
    )
    parser.add_argument("run", metavar="RUN_ID", help="run id, or the path of a report directory")
    parser.add_argument(
        "--artifacts",
        default="artifacts",
        metavar="DIR",
        help="artifacts root (default: artifacts)",
    )
    parser.add_argument(
        "--model-dir", default=None, metavar="DIR", help="model directory (default: the run's)"
    )
    parser.add_argument(
        "--window",
        type=parse_window,
        default=None,
        metavar="START..END",
        help="sessions of the price panel, e.g. 2024-07-08..2024-07-12 (default: the five "
        "sessions around the worst day)",
    )
    args = parser.parse_args(argv)
    report_dir = Path(args.run)
    if not (report_dir / "metrics.json").exists():
        report_dir = Path(args.artifacts) / "reports" / args.run
    try:
        path = write_html_report(
            report_dir, Path(args.model_dir) if args.model_dir else None, args.window
        )
    except (FileNotFoundError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
