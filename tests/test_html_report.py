"""The reports people look at, checked against the files they are drawn from.

One tiny synthetic phase (built once for the module) feeds every test: the HTML report's charts and
figures must equal metrics.json, trades, equity and the saved model; the page must render in a
real headless Chromium without console errors or network requests and show the SYNTHETIC banner;
the report rebuilds standalone from disk; `vpt compare`, the tracker's chart, the `vpt` entry
point and the search's progress callback are exercised on the same run.
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
import xgboost as xgb
import yaml

from tests.browser import find_chromium, render_page
from tests.conftest import REPO, tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.model.metrics import classification
from vpt_ray.pipeline.phase import run_phase
from vpt_ray.report import compare, tracker
from vpt_ray.report.html import backtest as html_backtest
from vpt_ray.report.html import decision, inputs, predictions
from vpt_ray.report.html import page as html_page

pytestmark = pytest.mark.slow
RUN_ID = "rep"
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
SECRET = "pk_test_never_logged_7d1e"  # a Polygon key in the environment: must reach no file


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory) -> dict:
    """A finished tiny phase-1 run on the synthetic market: its workspace, dirs and metrics;
    logged to an MLflow sqlite store in the workspace (the default kind of store, MLflow's
    recommended local one) when MLflow is installed."""
    ws = tmp_path_factory.mktemp("report")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    mlflow = ["tracking.mlflow=true", f"tracking.uri=sqlite:///{ws / 'mlflow.db'}"]
    cfg = load_config(1, overrides=tiny_overrides(ws, *(mlflow if HAS_MLFLOW else [])))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLYGON_API_KEY", SECRET)  # data.sources has no polygon: only a bystander
        metrics = run_phase(cfg, run_id=RUN_ID)
    art = ws / "artifacts"
    return {
        "ws": ws,
        "artifacts": art,
        "report": art / "reports" / RUN_ID,
        "model": art / "models" / RUN_ID,
        "metrics": metrics,
    }


@pytest.fixture(scope="module")
def loaded(run) -> tuple[inputs.RunFiles, dict]:
    files = inputs.load_run(run["report"], run["model"])
    return files, html_page.build_figures(files)


def _trace(fig, name: str, axis: str = "x"):
    return next(t for t in fig.data if t.name == name and (t.xaxis or "x") == axis)


# ------------------------------------------------------------------------------ report data


def test_phase_writes_report_html_and_predictions(run):
    report = run["report"]
    assert (report / "report.html").stat().st_size > 1_000_000  # plotly.js is inside
    assert json.loads((report / "status.json").read_text())["status"] == "FINISHED"
    pred = pd.read_parquet(report / "predictions.parquet")
    assert set(pred.columns) >= {"ticker", "timestamp", "y", "p"}
    assert not list(report.glob(".*tmp"))


def test_every_chart_is_drawn_with_nothing_missing(loaded):
    files, figs = loaded
    assert files.notes == {}
    expected = {
        "rolling_sharpe",
        "turnover",
        "prices",
        "cv_folds",
        "search_objective",
        "search_parallel",
        "feature_importance",
        "calibration",
        "equity",
        "per_ticker",
        "trades",
        "monthly",
        "resources",
        "scaling",
    }
    assert expected <= set(figs)
    assert ("search_importance" in figs) == (len(files.trials) >= 5)


def test_cv_chart_equals_metrics_folds(run, loaded):
    _, figs = loaded
    folds = run["metrics"]["cv"]["folds"]
    fig = figs["cv_folds"]
    for axis, m in (("x", "accuracy"), ("x2", "auc"), ("x3", "log_loss")):
        assert list(_trace(fig, "validation", axis).y) == [f[f"val_{m}"] for f in folds]
        assert list(_trace(fig, "train", axis).y) == [f[f"train_{m}"] for f in folds]


def test_search_charts_equal_the_trials(run, loaded):
    files, figs = loaded
    m = run["metrics"]
    table = pd.DataFrame(m["search"]["table"])
    assert len(files.trials) == m["search"]["trials"]
    obj = figs["search_objective"]
    trial_y = np.asarray(_trace(obj, "trial").y, dtype=float)
    assert sorted(trial_y) == pytest.approx(sorted(table["val_log_loss"]))
    best = np.asarray(_trace(obj, "best so far").y, dtype=float)
    assert best[-1] == pytest.approx(m["cv"]["log_loss"])  # the chosen trial is the best
    assert np.all(np.diff(best) <= 0)
    dims = {
        d.label: np.asarray(d.values, dtype=float)
        for d in figs["search_parallel"].data[0].dimensions
    }
    assert sorted(dims["max_depth"]) == sorted(table["max_depth"])
    assert sorted(10 ** dims["log10 learning_rate"]) == pytest.approx(
        sorted(table["learning_rate"])
    )


def test_feature_importance_is_the_saved_models_gain(run, loaded):
    _, figs = loaded
    booster = xgb.Booster()
    booster.load_model(run["model"] / "model.ubj")
    gain = booster.get_score(importance_type="gain")
    bar = figs["feature_importance"].data[0]
    shown = dict(zip(bar.y, np.asarray(bar.x, dtype=float), strict=True))
    assert set(shown) <= set(run["metrics"]["features"]["names"])
    top = max(gain, key=gain.get)
    assert shown[top] == pytest.approx(gain[top]) and shown[top] == max(shown.values())
    for f, g in shown.items():
        assert g == pytest.approx(gain.get(f, 0.0))


def test_oos_predictions_reproduce_metrics_oos(run, loaded):
    files, figs = loaded
    oos = run["metrics"]["oos"]
    pred = files.predictions
    c = classification(pred["y"].to_numpy(), pred["p"].to_numpy())
    assert c["samples"] == oos["samples"]
    assert c["accuracy"] == pytest.approx(oos["accuracy"], abs=1e-9)
    assert c["auc"] == pytest.approx(oos["auc"], abs=1e-6)
    assert c["base_rate"] == pytest.approx(oos["base_rate"], abs=1e-9)
    table = predictions.calibration_table(pred)
    assert table["n"].sum() == oos["samples"]
    weighted = float((table["observed"] * table["n"]).sum() / table["n"].sum())
    assert weighted == pytest.approx(oos["base_rate"], abs=1e-9)
    model = _trace(figs["calibration"], "model")
    assert list(model.y) == pytest.approx(list(table["observed"]))
    hist = _trace(figs["calibration"], "P(up)", "x2")
    assert int(np.sum(hist.y)) == oos["samples"]


def test_backtest_charts_equal_metrics(run, loaded):
    files, figs = loaded
    bt = run["metrics"]["backtest"]
    equity = _trace(figs["equity"], "equity")
    assert float(equity.y[-1]) == pytest.approx(bt["final_equity"])
    bench = np.asarray(_trace(figs["equity"], "buy-and-hold (equal weight)").y, dtype=float)
    b = run["metrics"]["benchmark"]
    assert bench[-1] / files.capital - 1 == pytest.approx(b["total_return"])
    excess = np.asarray(_trace(figs["equity"], "excess return", "x3").y, dtype=float)
    assert excess[-1] == pytest.approx(bt["total_return"] - b["total_return"])
    assert b["excess_return"] == pytest.approx(bt["total_return"] - b["total_return"])
    dd = np.asarray(_trace(figs["equity"], "drawdown", "x2").y, dtype=float)
    # the chart draws the daily closes (equity.parquet): the close-to-close drawdown; the
    # reported max_drawdown is intraday (equity_bars.parquet) and at least as deep
    assert dd.min() == pytest.approx(bt["max_drawdown_daily"], abs=1e-12)
    assert bt["max_drawdown"] <= bt["max_drawdown_daily"]
    heat = np.asarray(figs["monthly"].data[0].z, dtype=float)
    months = heat[np.isfinite(heat)]
    assert np.prod(1 + months) - 1 == pytest.approx(bt["total_return"], abs=1e-12)
    per = figs["per_ticker"].data[0]
    assert dict(zip(per.y, per.x, strict=True)) == pytest.approx(
        {t: s["total_return"] for t, s in bt["per_ticker"].items()}
    )
    trades = figs["trades"]
    by_side = sum(int(np.sum(t.y)) for t in trades.data if (t.xaxis or "x") == "x")
    exits = sum(int(np.sum(t.y)) for t in trades.data if t.xaxis == "x2")
    assert by_side == exits == bt["trades"] == len(files.trades)


def test_resources_chart_draws_samples_and_limits(run, loaded):
    _, figs = loaded
    res = run["metrics"]["resources"]
    cfg = yaml.safe_load((run["report"] / "config.yaml").read_text())["hardware"]
    fig = figs["resources"]
    mem = _trace(fig, "memory (GB, PSS)")
    samples = np.asarray(res["memory_samples"], dtype=float)
    assert list(mem.x) == list(samples[:, 0]) and list(mem.y) == list(samples[:, 1])
    assert max(mem.y) <= res["peak_memory_gb"] + 1e-9
    lines = {round(s.y0, 6) for s in fig.layout.shapes if s.type == "line"}
    # the run's limit: the config's, or the machine's memory when smaller (warning scaled alike)
    machine = res["ray"]["memory_limit"]["machine_gb"]
    limit = min(cfg["memory_limit_gb"], machine)
    warn = round(cfg["memory_warn_gb"] * limit / cfg["memory_limit_gb"], 2)
    assert {warn, limit} <= lines
    bands = [a.text for a in fig.layout.annotations if a.text]
    assert any(s in bands for s in res["stages"])


def test_decision_rules_carry_the_runs_figures(run):
    m = run["metrics"]
    cfg = yaml.safe_load((run["report"] / "config.yaml").read_text())
    rules = decision.decision_rules(m, cfg).set_index("rule")
    assert rules.loc["OOS accuracy", "value"] == m["oos"]["accuracy"]
    assert rules.loc["Sharpe (daily, annualized)", "value"] == m["backtest"]["sharpe"]
    gap = rules.loc["train - validation accuracy gap"]
    assert gap["value"] == m["cv"]["train_val_gap"] and gap["SE"] == m["cv"]["train_val_gap_se"]
    bar = cfg["decision"]["max_train_val_gap"] + cfg["decision"]["stop_se"] * gap["SE"]
    assert gap["passed"] == (m["cv"]["train_val_gap"] <= bar)  # noise-aware (docs/decision.md)
    if m["decision"]["verdict"] == "advance":
        assert rules["passed"].dropna().all()
    if any("train-validation accuracy gap" in r for r in m["decision"]["reasons"][:1]):
        assert gap["passed"] is False or not gap["passed"]


def test_page_shows_the_headline_figures(run):
    m = run["metrics"]
    page = (run["report"] / "report.html").read_text()
    assert 'id="synthetic-banner"' in page and "[SYNTHETIC]" in page
    for text in (
        m["run_id"],
        m["config_fingerprint"],
        m["git_commit"][:12],
        f"{m['oos']['accuracy']:.4f}",
        f"{m['cv']['accuracy']:.4f}",
        f"{m['backtest']['total_return']:.2%}",
        m["decision"]["verdict"].upper(),
        *m["decision"]["reasons"],
    ):
        assert html.escape(text) in page, text
    assert "Not shown:" not in page and "RUNNING" not in page
    assert not re.search(r"<script[^>]+src=", page), "no external scripts (works offline)"
    assert page.count("Plotly.newPlot") == int(re.search(r'data-figures="(\d+)"', page)[1])


def test_benchmark_is_buy_and_hold_of_the_backtested_bars(run):
    """The benchmark, recomputed from the bar files: capital / N at each ticker's first open of
    the backtest window, held to each session's close."""
    from vpt_ray.data.local import read_bars

    m = run["metrics"]
    start, end = (pd.Timestamp(d).date() for d in m["windows"]["backtest"].split(".."))
    capital = yaml.safe_load((run["report"] / "config.yaml").read_text())["backtest"]["capital"]
    value = 0.0
    for path in m["backtest_bars"].values():
        bars = read_bars(path, start, end)
        value += capital / len(m["backtest_bars"]) / bars["open"].iloc[0] * bars["close"].iloc[-1]
    assert m["benchmark"]["total_return"] == pytest.approx(value / capital - 1, rel=1e-9)
    saved = pd.read_parquet(run["report"] / "benchmark.parquet")
    assert saved["benchmark"].iloc[-1] == pytest.approx(value)


def test_new_backtest_panels_equal_their_inputs(run, loaded):
    from vpt_ray.backtest import tearsheet

    files, figs = loaded
    window = html_backtest.rolling_window(len(files.equity))
    rs = _trace(figs["rolling_sharpe"], f"strategy ({window} sessions)")
    r = files.equity.pct_change()
    r.iloc[0] = files.equity.iloc[0] / files.capital - 1
    tail = r.iloc[-window:]
    assert float(rs.y[-1]) == pytest.approx(tail.mean() / tail.std() * math.sqrt(252))
    turnover = np.asarray(figs["turnover"].data[0].y, dtype=float)
    trades = files.trades
    traded = (trades["shares"].abs() * (trades["entry_price"] + trades["exit_price"])).sum()
    assert turnover.sum() > 0 and run["metrics"]["backtest"]["turnover"] == pytest.approx(
        traded / files.capital
    )
    dd = tearsheet.worst_drawdowns(files.equity, files.capital)
    # worst drawdowns are of the daily equity: the close-to-close figure (max_drawdown is intraday)
    assert dd["depth"].iloc[0] == pytest.approx(run["metrics"]["backtest"]["max_drawdown_daily"])
    # the price panel: the chosen window's closes, and every trade entered in it as a marker
    a, b = files.price_window
    prices = figs["prices"]
    first = next(iter(files.prices))
    close = _trace(prices, f"{first} close")
    assert list(close.y) == list(files.prices[first]["close"])
    ts = files.prices[first]["timestamp"]
    mine = trades[trades["ticker"] == first]
    in_window = mine[mine["entry_time"].between(ts.min(), ts.max())]
    marked = sum(
        len(t.x) for t in prices.data if t.name.startswith(f"{first} ") and "entry" in t.name
    )
    assert marked == len(in_window) > 0
    assert len(prices.layout.updatemenus[0].buttons) == len(files.prices)
    other = inputs.load_run(run["report"], run["model"], (a, a))
    assert set(pd.to_datetime(other.prices[first]["timestamp"]).dt.tz_convert(
        "America/New_York").dt.date) == {a}  # fmt: skip


def test_parallel_coordinates_legend_names_the_colour_of_the_best(loaded):
    files, figs = loaded
    par = figs["search_parallel"]
    assert "yellow = lowest val_log_loss = best" in par.layout.title.text
    line = par.data[0].line
    # reversed Viridis: the lowest value maps to the scale's top colour, which is yellow
    assert line.reversescale is True and "darker" not in par.layout.title.text
    import plotly.colors

    # the scale runs purple -> yellow; reversed, the lowest value takes its yellow end
    assert line.colorscale[0][1].lower() == plotly.colors.sequential.Viridis[0].lower()
    assert line.colorscale[-1][1].lower() == "#fde725"  # Viridis' yellow
    assert list(line.color) == list(files.trials["val_log_loss"])


def test_pnl_panels_equal_the_trades_costs_and_book(run, loaded):
    """PnL before / after costs and by side, exposure and per-ticker equity (issue 28), against
    metrics.json and the run's parquet files read directly."""
    files, figs = loaded
    bt = run["metrics"]["backtest"]
    costs, trades = bt["costs"], files.trades
    pc = figs["pnl_costs"]
    assert float(_trace(pc, "after costs (net)").y[-1]) == pytest.approx(costs["net_pnl"])
    assert float(_trace(pc, "before costs (gross)").y[-1]) == pytest.approx(costs["gross_pnl"])
    stacked = float(_trace(pc, "- commissions (below slippage)").y[-1])
    assert stacked == pytest.approx(-(costs["commissions"] + costs["slippage"]))
    side = figs["side_pnl"]
    for s, name in ((1, "long"), (-1, "short")):
        net = float(_trace(side, f"{name} net").y[-1])
        assert net == pytest.approx(trades.loc[trades["side"] == s, "pnl"].sum())
    bars = pd.read_parquet(run["report"] / "equity_bars.parquet")
    assert {"gross_exposure", "net_exposure"} <= set(bars.columns)
    assert bars["gross_exposure"].mean() == pytest.approx(bt["exposure"])  # the pipeline's mean
    ny = pd.to_datetime(bars["timestamp"], utc=True).dt.tz_convert("America/New_York").dt.date
    by_day = bars.groupby(ny.to_numpy())
    ex = figs["exposure"]
    assert list(np.asarray(_trace(ex, "gross (session mean)").y, float)) == pytest.approx(
        list(by_day["gross_exposure"].mean())
    )
    assert list(np.asarray(_trace(ex, "net (mean)").y, float)) == pytest.approx(
        list(by_day["net_exposure"].mean())
    )
    te = figs["ticker_equity"]
    for t, st in bt["per_ticker"].items():  # flat at the close: the last session is realized
        assert float(_trace(te, t).y[-1]) * files.capital == pytest.approx(st["pnl"], abs=1e-6)
    page = _visible_text((run["report"] / "report.html").read_text())
    assert f"${costs['gross_pnl']:,.0f}" in page and f"${costs['net_pnl']:,.0f}" in page


def test_risk_panel_and_yearly_table_equal_the_equity(run, loaded):
    import empyrical

    from vpt_ray.backtest.tearsheet import daily_returns

    files, figs = loaded
    bt, b = run["metrics"]["backtest"], run["metrics"]["benchmark"]
    r = daily_returns(files.equity, files.capital)
    rb = daily_returns(files.benchmark.reindex(files.equity.index).ffill(), files.capital)
    hist = figs["daily_returns"]
    strat = next(t for t in hist.data if t.name.startswith("strategy"))
    assert int(np.sum(strat.y)) == len(files.equity) == bt["days"]
    var = [s for s in hist.layout.shapes if s.type == "line"]
    assert any(s.x0 == pytest.approx(empyrical.value_at_risk(r.to_numpy())) for s in var)
    page = (run["report"] / "report.html").read_text()
    text = _visible_text(page)
    rel = " ".join(re.search(r'<p id="relative">(.*?)</p>', page, re.S)[1].split())
    beta = float(re.search(r"beta <b>(-?[\d.]+(?:e[-+]\d+)?)</b>", rel)[1])
    assert beta == pytest.approx(empyrical.beta(r, rb), abs=1e-3)  # shown with 3 decimals
    ir = float(re.search(r"information ratio <b>(-?[\d.]+(?:e[-+]\d+)?)</b>", rel)[1])
    ref_ir = empyrical.excess_sharpe(r.to_numpy(), rb.to_numpy()) * 252**0.5
    assert ir == pytest.approx(ref_ir, abs=0.005)  # shown with 2 decimals
    yearly = re.search(r'<div id="yearly">(.*?)</div>', page, re.S)[1]
    assert f"{bt['total_return']:.2%}" in yearly and f"{b['total_return']:.2%}" in yearly
    assert bt["days"] < 252 and 'id="cagr-note"' in page  # a few weeks: CAGR is flagged
    assert f"annualized from {bt['days']} sessions" in text


def test_oracle_and_decision_tables_read_as_a_quant_reads_them(run):
    m = run["metrics"]
    page = (run["report"] / "report.html").read_text()
    o = m["oracle"]
    table = re.search(r'<div id="oracle-table">(.*?)</div>', page, re.S)[1]
    for key in ("accuracy", "auc"):
        assert f"{o['model'][key]:.4f}" in table and f"{o['oracle'][key]:.4f}" in table
    assert f"{o['oracle']['sharpe']:,.2f}" in table
    card = re.search(r'data-kpi="Sharpe".*?class="s">([^<]*)<', page, re.S)[1]
    assert card.startswith(f"SE {m['backtest']['sharpe_se']:.2f}")
    rules = decision.decision_rules(m, yaml.safe_load((run["report"] / "config.yaml").read_text()))
    for needs in rules["needs"]:
        assert not re.search(r"\d\.\d{5,}", needs), needs  # no raw floats like 0.00977712


# ---------------------------------------------------------------------------------- browser


def test_report_renders_in_headless_chromium(run, tmp_path):
    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    url = (run["report"] / "report.html").resolve().as_uri()
    script = """({
        figures: Number(document.body.dataset.figures),
        plots: document.querySelectorAll('.js-plotly-plot').length,
        drawn: Array.from(document.querySelectorAll('.js-plotly-plot'))
            .filter(p => p.querySelector('.main-svg') && p._fullLayout).length,
        banner: (document.getElementById('synthetic-banner') || {}).innerText || '',
        bannerHeight: (document.getElementById('synthetic-banner') || {}).offsetHeight || 0,
        verdict: document.getElementById('verdict').innerText,
        panels: ['equity', 'rolling_sharpe', 'turnover', 'prices'].filter(
            k => document.querySelector('#fig-' + k + ' .main-svg')),
        newPanels: ['pnl_costs', 'side_pnl', 'exposure', 'ticker_equity', 'daily_returns'].filter(
            k => document.querySelectorAll('#fig-' + k + ' .main-svg .trace').length > 0),
        tables: ['pnl-by-side', 'return-distribution', 'yearly', 'oracle-table'].filter(
            k => document.querySelectorAll('#' + k + ' tbody tr').length > 0),
        pageWidth: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
        sideways: Array.from(document.querySelectorAll('section, .tablewrap, section > div'))
            .filter(e => e.scrollWidth > e.clientWidth + 1)
            .map(e => (e.closest('section') || {}).id + ' ' + e.className + ' ' + e.scrollWidth),
        equityAxes: document.getElementById('fig-equity')._fullLayout._subplots.cartesian.length,
        priceMarkers: document.querySelectorAll('#fig-prices .scatterlayer .point').length,
        priceMenu: document.querySelectorAll('#fig-prices .updatemenu-header-group').length,
        drawdownRows: document.querySelectorAll('#worst-drawdowns tbody tr').length,
        benchmark: (document.getElementById('benchmark') || {}).innerText || '',
        parTitle: document.querySelector('#fig-search_parallel .gtitle').textContent,
        none: /\bNone\b/.test(document.body.innerText),
    })"""
    ready = (
        "document.readyState === 'complete' && document.querySelectorAll('.js-plotly-plot')"
        ".length === Number(document.body.dataset.figures)"
    )
    # 1,400 px: the width issue 28 found the trials table overflowing at
    page = render_page(url, script, ready=ready, width=1400, full_page=True)
    shot = tmp_path / "report.png"
    shot.write_bytes(page.screenshot)
    v = page.value
    assert page.errors == [], page.errors
    assert v["figures"] >= 10 and v["plots"] == v["figures"] and v["drawn"] == v["figures"]
    assert v["banner"].startswith("SYNTHETIC DATA") and v["bannerHeight"] > 0
    assert v["verdict"] == run["metrics"]["decision"]["verdict"].upper()
    assert v["panels"] == ["equity", "rolling_sharpe", "turnover", "prices"], v["panels"]
    assert v["newPanels"] == ["pnl_costs", "side_pnl", "exposure", "ticker_equity",
                              "daily_returns"], v["newPanels"]  # fmt: skip
    assert v["tables"] == ["pnl-by-side", "return-distribution", "yearly", "oracle-table"]
    assert v["pageWidth"][0] <= v["pageWidth"][1] and v["sideways"] == [], v["sideways"]
    assert v["equityAxes"] == 3  # equity + buy-and-hold, drawdown, excess return
    assert v["priceMarkers"] > 0 and v["priceMenu"] >= 1
    assert 1 <= v["drawdownRows"] <= 5 and "Excess return of the strategy" in v["benchmark"]
    assert "yellow = lowest" in v["parTitle"] and not v["none"]
    external = [u for u in page.requests if not u.startswith(("file:", "data:", "blob:"))]
    assert external == [], external
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_readme_picture_routine_masks_every_digit(run, tmp_path):
    """docs/report_png.py on this run's report: the picture it writes holds no figure that a
    later run would contradict (issue 28: the README's picture quoted a stale Sharpe)."""
    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    from PIL import Image

    spec = importlib.util.spec_from_file_location("report_png", REPO / "docs" / "report_png.py")
    report_png = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report_png)
    out = tmp_path / "report.png"
    seen = report_png.draw(run["report"], out, height=900)
    assert seen["left"] == [] and seen["masked"] > 50, seen
    assert seen["sections"][0] == "decision"
    text = Image.open(out).text
    assert text["vpt-ray:digits"] == "masked" and text["vpt-ray:run"] == RUN_ID
    assert Image.open(out).size == (1280, 900)


def test_browser_check_catches_errors_and_external_requests(tmp_path):
    """The checker above is only worth something if it sees a broken page."""
    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<html><body><p id=x>hi</p><script>console.error('boom'); notDefined();</script>"
        '<img src="http://127.0.0.1:9/x.png"></body></html>'
    )
    page = render_page(bad.as_uri(), "document.getElementById('x').innerText")
    assert page.value == "hi"
    assert any("boom" in e for e in page.errors)
    assert any("notDefined" in e for e in page.errors)
    assert "http://127.0.0.1:9/x.png" in page.requests


# ------------------------------------------------------------------------ tracking (MLflow)


def test_mlflow_holds_the_run_its_trials_and_no_secret(run):
    if not HAS_MLFLOW:
        pytest.skip("mlflow is not installed (pip install -e '.[mlflow]')")
    from mlflow import MlflowClient

    m = run["metrics"]
    uri = f"sqlite:///{run['ws'] / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("vpt-ray")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    phase = [r for r in runs if r.data.tags.get("vpt.kind") == "phase"]
    assert len(phase) == 1 and phase[0].data.tags["vpt.run_id"] == RUN_ID
    p = phase[0]
    assert p.info.status == "FINISHED" and p.data.tags["vpt.verdict"] == m["decision"]["verdict"]
    cfg = yaml.safe_load((run["report"] / "config.yaml").read_text())
    assert p.data.params["search.num_samples"] == str(cfg["search"]["num_samples"])
    assert p.data.params["data.tickers"] == str(cfg["data"]["tickers"])
    for key, value in (
        ("cv.accuracy", m["cv"]["accuracy"]),
        ("oos.accuracy", m["oos"]["accuracy"]),
        ("backtest.sharpe", m["backtest"]["sharpe"]),
        ("benchmark.excess_return", m["benchmark"]["excess_return"]),
        ("resources.peak_memory_gb", m["resources"]["peak_memory_gb"]),
    ):
        assert p.data.metrics[key] == pytest.approx(value), key
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
    assert len(trials) == m["search"]["trials"] and all(
        "val_log_loss" in t.data.metrics for t in trials
    )
    best = min(t.data.metrics["val_log_loss"] for t in trials)
    assert best == pytest.approx(m["cv"]["log_loss"])
    listed = {a.path for d in ("report", "model", "tracker")
              for a in client.list_artifacts(p.info.run_id, d)}  # fmt: skip
    assert {"report/report.html", "report/metrics.json", "model/model.ubj",
            "tracker/SCALING_TRACKER.md"} <= listed  # fmt: skip
    # the artifacts next to the database, not in the working directory's ./mlruns
    files = [
        run["ws"] / "mlflow.db",
        *(f for f in (run["ws"] / "mlruns").rglob("*") if f.is_file()),
    ]
    assert len(files) > 10 and not any(SECRET.encode() in f.read_bytes() for f in files)
    # the summary says where the run was logged, and how its trials were
    assert m["mlflow"]["run_id"] == p.info.run_id and m["mlflow"]["uri"] == uri
    assert "each search trial a nested run" in m["mlflow"]["where"]


def test_mlflow_logs_a_cached_search_s_trials_as_nested_runs(run, tmp_path, monkeypatch):
    """A search reused from the resume cache runs no trial, so Tune logs none: its trials table
    is logged as the nested runs instead, tagged as coming from the cache."""
    if not HAS_MLFLOW:
        pytest.skip("mlflow is not installed (pip install -e '.[mlflow]')")
    import pandas as pd
    from mlflow import MlflowClient

    from vpt_ray.core import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # Tune's callback exported it
    cfg = load_config(1, overrides=["tracking.mlflow=true"])
    assert tracking.tracking_uri(cfg, tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_run(cfg, "cached", tmp_path, {"vpt.kind": "phase"})
    trials = pd.read_parquet(run["artifacts"] / "runs" / RUN_ID / "trials.parquet")
    space = list(cfg.search.space.model_dump())
    tracking.log_cached_trials(trials, space)
    assert parent.trials.startswith(f"{len(trials)} search trials as nested runs, from the resume")
    tracking.finish_run(parent, "FINISHED")
    client = MlflowClient(tracking_uri=parent.uri)
    runs = client.search_runs([parent.experiment_id], max_results=100)
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.run_id]
    assert len(nested) == len(trials) and all(r.data.tags["vpt.from_cache"] for r in nested)
    by_id = {r.data.tags["vpt.trial_id"]: r for r in nested}
    for t in trials.to_dict(orient="records"):
        r = by_id[t["trial_id"]]
        assert r.data.params["max_depth"] == str(t["max_depth"]) and set(r.data.params) == set(
            space
        )
        assert r.data.metrics["val_log_loss"] == pytest.approx(t["val_log_loss"])
    # the artifacts go next to the database (the directory appears with the first artifact)
    experiment = client.get_experiment(parent.experiment_id)
    assert experiment.artifact_location == (tmp_path / "mlruns").resolve().as_uri()


# ----------------------------------------------------------------------- standalone backtest


@pytest.fixture(scope="module")
def standalone(run) -> dict:
    """The run's saved model backtested on its own, on a month after its backtest window."""
    import datetime as dt

    from vpt_ray.pipeline.backtest_cli import run as backtest_run

    m = backtest_run(run["model"], dt.date(2024, 4, 1), dt.date(2024, 4, 30))
    return {"metrics": m, "dir": run["artifacts"] / "reports" / m["run_id"]}


def _visible_text(page: str) -> str:
    page = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_standalone_backtest_writes_a_full_report(run, standalone):
    m, d = standalone["metrics"], standalone["dir"]
    for name in ("metrics.json", "summary.md", "report.html", "config.yaml", "trades.parquet",
                 "equity.parquet", "benchmark.parquet", "predictions.parquet"):  # fmt: skip
        assert (d / name).exists(), name
    assert m["kind"] == "backtest" and m["model_run_id"] == RUN_ID
    assert (d / "config.yaml").read_text().startswith(f"# backtest of model run {RUN_ID} (")
    assert json.loads((d / "status.json").read_text())["status"] == "FINISHED"
    summary = (d / "summary.md").read_text()
    assert f"(backtest of {RUN_ID})" in summary and "Benchmark (equal-weight" in summary
    text = _visible_text((d / "report.html").read_text())
    assert not re.search(r"\bNone\b", text), re.findall(r".{60}\bNone\b.{20}", text)
    assert "signal strength 1.0" in text and "15 / 15 bars" in text
    assert f"backtest of {RUN_ID}" in text and "belongs to the model run" in text
    assert "> None" not in text and "Not shown:" not in text
    assert "Five worst drawdowns" in text and "Excess return of the strategy" in text


def test_standalone_backtest_is_a_history_row_not_a_phase_row(run, standalone):
    path = run["artifacts"] / "SCALING_TRACKER.md"
    state = tracker.load_state(path)
    assert state["latest"]["1"]["run_id"] == RUN_ID  # a backtest decides nothing
    row = state["history"][0]
    assert row["run_id"] == standalone["metrics"]["run_id"] and row["kind"] == "backtest"
    assert row["notes"].startswith(f"SYNTHETIC data; backtest of {RUN_ID} on 2024-04-01..")
    text = path.read_text()
    assert f"| backtest of {RUN_ID} |" in text and "### History (2 runs, newest first)" in text


def test_compare_a_backtest_with_its_model_run_and_the_tracker_default(run, standalone, capsys):
    bt_id = standalone["metrics"]["run_id"]
    art = str(run["artifacts"])
    assert compare.main([RUN_ID, bt_id, "--artifacts", art]) == 0
    out = capsys.readouterr().out
    diff = re.search(r"## Config: (\d+) settings differ", out)
    keys = set(re.findall(r"^\| ((?:data|backtest)\.\w+) \|", out, re.M))
    assert int(diff[1]) == len(keys) and keys <= {"data.start", "data.end", "backtest.start",
                                                  "backtest.end"}  # fmt: skip
    assert f"- B: backtest of {RUN_ID}, SYNTHETIC data" in out
    assert re.search(r"^\| CV accuracy \| 0\.\d{4} \| n/a \|", out, re.M)
    assert "B: backtest of rep: no decision of its own" in out
    # the backtest's data window is its backtest window; the decision is a list, not one line
    assert ", backtest window 2024-04-01..2024-04-30 (the model was trained on 2024-01-02.." in out
    reasons = run["metrics"]["decision"]["reasons"]
    verdict = run["metrics"]["decision"]["verdict"]
    assert f"A decision: **{verdict}**\n\n" + "".join(f"- {r}\n" for r in reasons) in out
    # no runs named: the tracker's history, oldest first
    assert compare.main(["--artifacts", art]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Run comparison: A = {RUN_ID} vs B = {bt_id}")
    assert compare.main(["--artifacts", art, "--phase", "2"]) == 2
    assert "at least 2 finished runs" in capsys.readouterr().err


def test_compare_takes_n_runs(run, tmp_path, capsys):
    reports = tmp_path / "reports"
    for i, name in enumerate("abc"):
        shutil.copytree(run["report"], reports / name)
        mb = json.loads((reports / name / "metrics.json").read_text())
        mb["oos"]["accuracy"] += 0.01 * i
        (reports / name / "metrics.json").write_text(json.dumps(mb))
    assert compare.main(["a", "b", "c", "--artifacts", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Run comparison: A = a, B = b, C = c")
    assert "| metric | A | B | C | C - A |" in out and "+0.0200" in out
    assert (reports / "compare-a-vs-b-vs-c.md").read_text() == out.rstrip("\n") + "\n"


# ------------------------------------------------------------------------ rebuild and tools


def test_report_rebuilds_standalone_from_disk(run, tmp_path):
    src = run["report"]
    before = pd.read_parquet(src / "predictions.parquet")
    copy = tmp_path / "reports" / RUN_ID
    shutil.copytree(src, copy)
    (copy / "report.html").unlink()
    (copy / "predictions.parquet").unlink()
    # the copy has no feature store next to it: point at the run's model and store
    shutil.copytree(run["artifacts"] / "runs", tmp_path / "runs")
    assert html_page.main([str(copy), "--model-dir", str(run["model"])]) == 0
    after = pd.read_parquet(copy / "predictions.parquet")
    pd.testing.assert_frame_equal(before, after)
    assert "Not shown:" not in (copy / "report.html").read_text()


def test_report_without_model_or_store_says_what_is_missing(run, tmp_path):
    copy = tmp_path / "reports" / RUN_ID
    shutil.copytree(run["report"], copy, ignore=shutil.ignore_patterns("predictions.parquet"))
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["model_dir"] = str(tmp_path / "gone")
    (copy / "metrics.json").write_text(json.dumps(metrics))
    files = inputs.load_run(copy)
    assert set(files.notes) == {"importance", "calibration"}
    page = html_page.write_html_report(copy).read_text()
    assert page.count("Not shown:") == 2 and "equity" in page


def test_report_needs_metrics_json(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({"status": "FAILED"}))
    with pytest.raises(FileNotFoundError, match=r"no metrics\.json \(run status: FAILED\)"):
        html_page.write_html_report(tmp_path)
    assert html_page.main([str(tmp_path / "nope"), "--artifacts", str(tmp_path)]) == 2


def test_compare_shows_only_differing_settings(run, tmp_path, capsys):
    reports = tmp_path / "reports"
    a = reports / "a"
    shutil.copytree(run["report"], a)
    b = reports / "b"
    shutil.copytree(run["report"], b)
    cfg = yaml.safe_load((b / "config.yaml").read_text())
    cfg["search"]["num_samples"] += 3
    (b / "config.yaml").write_text(yaml.safe_dump(cfg))
    mb = json.loads((b / "metrics.json").read_text())
    mb["oos"]["accuracy"] += 0.01
    mb["resources"]["peak_memory_gb"] *= 2
    (b / "metrics.json").write_text(json.dumps(mb))
    assert compare.main(["a", "b", "--artifacts", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    written = (reports / "compare-a-vs-b.md").read_text()
    assert out.strip() == written.strip()
    n = cfg["search"]["num_samples"]
    assert "## Config: 1 settings differ" in written
    assert f"| search.num_samples | {n - 3} | {n} |" in written
    ma = run["metrics"]
    assert (
        f"| OOS accuracy | {ma['oos']['accuracy']:.4f} | {mb['oos']['accuracy']:.4f} |" in written
    )
    assert "+0.0100" in written
    peak = ma["resources"]["peak_memory_gb"]
    assert f"| peak memory (GB) | {peak:.2f} | {2 * peak:.2f} | {peak:+.2f} |" in written
    assert compare.main(["a", "missing", "--artifacts", str(tmp_path)]) == 2
    assert "finished runs under" in capsys.readouterr().err


def test_config_diff_handles_missing_and_nested_keys():
    a = {"x": {"y": 1, "z": [1, 2]}, "only_a": 1}
    b = {"x": {"y": 1, "z": [1, 3]}, "only_b": {"k": 2}}
    diff = {k: (va, vb) for k, va, vb in compare.config_diff(a, b)}
    assert diff == {
        "x.z": ([1, 2], [1, 3]),
        "only_a": (1, compare.MISSING),
        "only_b.k": (compare.MISSING, 2),
    }


def test_tracker_chart_is_written_next_to_the_tracker(run, tmp_path):
    phase_tracker = run["artifacts"] / "SCALING_TRACKER.md"
    assert tracker.chart_path(phase_tracker).exists()
    assert "![Key metrics across phases](SCALING_TRACKER.png)" in phase_tracker.read_text()
    path = tmp_path / "T.md"
    row = tracker.row_from_metrics(run["metrics"])
    assert row["synthetic"] is True
    tracker.update(path, row)
    first = tracker.chart_path(path).read_bytes()
    tracker.update(path, {**row, "phase": 2, "run_id": "p2", "synthetic": False, "sharpe": 9.0})
    second = tracker.chart_path(path).read_bytes()
    assert first[:8] == second[:8] == b"\x89PNG\r\n\x1a\n" and first != second
    assert tracker.chart_png(tracker.load_state(path)) == second  # redrawn from the state alone
    assert not list(tmp_path.glob(".*tmp"))


def test_scaling_outlook_in_the_report_summary_decision_and_tracker(run, loaded):
    """The learning curve's chart draws metrics.json `scaling` (its points, the forecast for the
    later phases and the fit's band); the page, summary.md and the tracker carry the sentence;
    the decision table shows the outlook as information that neither passes nor fails."""
    m = run["metrics"]
    sec = m["scaling"]
    _, figs = loaded
    fig = figs["scaling"]
    points = sec["learning_curve"]["points"]
    curve = _trace(fig, "learning curve (this run)")
    assert list(curve.x) == [p["samples"] for p in points]
    assert list(curve.y) == [p["accuracy"] for p in points]
    assert list(_trace(fig, "learning curve (this run)", "x2").y) == [p["log_loss"] for p in points]
    fc = _trace(fig, "forecast")
    assert list(fc.x) == [f["samples"] for f in sec["forecast"]]
    assert [f["phase"] for f in sec["forecast"]] == [2, 3, 4, 5]
    assert list(_trace(fig, "fit").x) == sec["band"]["samples"]
    page = (run["report"] / "report.html").read_text()
    assert 'id="scaling"' in page and html.escape(sec["sentence"]) in page
    assert "Scaling outlook" in (run["report"] / "summary.md").read_text()
    cfg = yaml.safe_load((run["report"] / "config.yaml").read_text())
    rules = decision.decision_rules(m, cfg).set_index("rule")
    assert rules.loc["scaling outlook", "passed"] is None
    assert rules.loc["scaling outlook", "if it fails"].startswith("nothing")
    phase_tracker = run["artifacts"] / "SCALING_TRACKER.md"
    text = phase_tracker.read_text()
    assert "### Scaling outlook" in text and "SCALING_TRACKER.outlook.png" in text
    assert tracker.outlook_chart_path(phase_tracker).read_bytes()[:4] == b"\x89PNG"
    row = tracker.load_state(phase_tracker)["latest"]["1"]["scaling"]
    assert row["accuracy"] == pytest.approx(m["oos"]["accuracy"], abs=1e-5)
    assert row["cost"]["samples"] == m["cv"]["samples"]


def test_tracker_render_keeps_its_old_signature(run):
    state = {"latest": {"1": tracker.row_from_metrics(run["metrics"])}, "history": []}
    assert "![" not in tracker.render(state)
    assert "| 1 | rep |" in tracker.render(state)


def _vpt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vpt_ray", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )


def test_vpt_entry_point_groups_the_commands(run):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["vpt"].split(":")
    assert callable(getattr(__import__(module, fromlist=[func]), func))
    out = _vpt("--help", cwd=run["ws"])
    assert out.returncode == 0
    for cmd in ("phase", "train", "backtest", "data", "audit", "compare", "report"):
        assert re.search(rf"^  {cmd}\s", out.stdout, re.M), cmd
    bad = _vpt("reprot", cwd=run["ws"])
    assert bad.returncode == 2 and "did you mean 'report'" in bad.stderr
    helped = _vpt("compare", "--help", cwd=run["ws"])
    assert helped.returncode == 0 and "usage: vpt compare" in helped.stdout
    (run["report"] / "report.html").unlink()
    built = _vpt("report", RUN_ID, cwd=run["ws"])
    assert built.returncode == 0, built.stderr
    assert (run["report"] / "report.html").exists()


# ------------------------------------------------------------------------- search progress


def test_search_progress_logs_each_trial_with_best_so_far(ray_session, tmp_path):
    import logging

    from ray import tune

    from vpt_ray.model.search_progress import SearchProgress

    values = [0.70, 0.60, 0.65, 0.50]
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("vpt_ray.search_progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    cb = SearchProgress(len(values), "val_log_loss", "min", time_budget_s=600)
    try:
        tune.Tuner(
            lambda config: tune.report({"val_log_loss": config["x"]}),
            param_space={"x": tune.grid_search(values)},
            tune_config=tune.TuneConfig(metric="val_log_loss", mode="min", max_concurrent_trials=1),
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0, callbacks=[cb]),
        ).fit()
    finally:
        logger.removeHandler(handler)
    lines = [r for r in records if r.startswith("search:")]
    assert len(lines) == len(values) and cb.done == len(values) and cb.failed == 0
    assert cb.best == min(values)
    bests = [float(re.search(r"best ([0-9.]+)", line)[1]) for line in lines]
    assert bests == list(np.minimum.accumulate(values))
    assert lines[-1].startswith(f"search: {len(values)}/{len(values)} trials done")
    assert all(re.search(r"ETA \d+s$", line) for line in lines)
    assert math.isclose(cb.eta(10.0), 0.0)
    with pytest.raises(ValueError, match="mode"):
        SearchProgress(3, "val_log_loss", "lowest")
