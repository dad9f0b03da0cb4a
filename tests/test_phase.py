"""The spine end to end on a tiny synthetic market: outputs, honesty checks and failure modes.

One local Ray cluster serves the whole session (`ray_session`); each run uses a temp workspace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.pipeline.phase import run_phase
from vpt_ray.report import tracker

pytestmark = pytest.mark.slow


def _run(ws: Path, *extra: str, run_id: str = "t") -> dict:
    cfg = load_config(1, overrides=tiny_overrides(ws, *extra))
    return run_phase(cfg, run_id=run_id)


@pytest.fixture(scope="module")
def planted(ray_session, tmp_path_factory) -> tuple[Path, dict]:
    """A planted edge on 2 tickers x 4 months: large enough for the signal to show."""
    ws = tmp_path_factory.mktemp("planted")
    m = _run(
        ws,
        "data.start=2023-09-01",
        "data.end=2024-02-29",
        "synthetic.signal_strength=3.0",
        "decision.max_train_val_gap=0.5",
        run_id="planted",
    )
    return ws, m


def test_phase_writes_every_output(planted):
    ws, m = planted
    report = ws / "artifacts" / "reports" / "planted"
    model = ws / "artifacts" / "models" / "planted"
    for name in ("metrics.json", "summary.md", "trades.parquet", "equity.parquet", "config.yaml"):
        assert (report / name).exists(), name
    assert json.loads((report / "status.json").read_text())["status"] == "FINISHED"
    assert (model / "model.ubj").exists() and (model / "meta.json").exists()
    meta = json.loads((model / "meta.json").read_text())
    assert meta["synthetic"] is True and len(meta["feature_names"]) >= 12
    assert all(v["sha256"] for v in meta["data_fingerprint"].values())
    assert (ws / "logs" / "run-planted.log").read_text().count("SYNTHETIC") >= 1
    on_disk = json.loads((report / "metrics.json").read_text())
    for key in ("run_id", "phase", "data", "cv", "oos", "backtest", "resources", "decision"):
        assert key in on_disk
    assert on_disk["data"]["synthetic"] is True
    assert set(on_disk["backtest"]["per_ticker"]) == {"AAA", "BBB"}
    assert on_disk["decision"]["verdict"] in {"advance", "stop", "optimize", "hold"}
    assert on_disk["resources"]["peak_memory_gb"] > 0
    stages = on_disk["resources"]["stages"]
    assert set(stages) >= {"ray_init", "data", "features", "cv", "search", "train", "backtest",
                           "oracle", "report"}  # fmt: skip
    # the wall covers every stage (and what lies between them), the report's included
    assert sum(stages.values()) <= on_disk["resources"]["wall_seconds"]
    summary = (report / "summary.md").read_text()
    assert f"wall {on_disk['resources']['wall_seconds']:.0f} s" in summary
    assert "SYNTHETIC DATA" in summary
    text = (ws / "artifacts" / "SCALING_TRACKER.md").read_text()
    assert "| 1 | planted |" in text and "SYNTHETIC" in text


def test_the_run_log_has_dates_the_summary_and_the_decision(planted):
    import re

    ws, m = planted
    log = (ws / "logs" / "run-planted.log").read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in log), log[0]
    text = "\n".join(log)
    assert re.search(
        rf"vpt_ray.summary:   decision +{m['decision']['verdict'].upper()}$", text, re.M
    )
    for reason in m["decision"]["reasons"]:
        assert f"- {reason}" in text
    assert re.search(r"vpt_ray.summary:   report +\S+/reports/planted/report.html$", text, re.M)


def test_the_memory_limit_is_the_smaller_of_the_config_and_the_machine(planted):
    """hardware.memory_limit_gb is 32 GB (the reference workstation's); on a smaller machine its
    memory is the limit, and the decision line, the chart thresholds and the summary say so."""
    from vpt_ray.core.resources import machine_memory_gb
    from vpt_ray.report.html.resources import memory_thresholds

    _, m = planted
    lim, machine = m["resources"]["ray"]["memory_limit"], machine_memory_gb()
    assert lim["config_limit_gb"] == 32 and lim["limit_gb"] == min(32, machine)
    line = next(r for r in m["decision"]["reasons"] if r.startswith("peak memory"))
    if machine < 32:
        assert lim["source"] == "machine"
        assert lim["warn_gb"] == pytest.approx(28 * machine / 32, abs=0.01)
        said = f"limit {machine:g} GB (this machine's memory; hardware.memory_limit_gb 32 GB"
        assert said in line
    else:
        assert lim["source"] == "hardware.memory_limit_gb" and "limit 32 GB (hardware." in line
    chart = memory_thresholds(m, {"hardware": {"memory_warn_gb": 28, "memory_limit_gb": 32}})
    assert (chart["memory_warn_gb"], chart["memory_limit_gb"]) == (lim["warn_gb"], lim["limit_gb"])


def test_planted_signal_is_found(planted):
    _, m = planted
    assert m["oos"]["samples"] > 10_000
    assert m["oos"]["accuracy"] > 0.53, m["oos"]
    assert m["oos"]["auc"] > 0.54, m["oos"]


def test_the_portfolio_is_one_pool_with_its_intraday_drawdown_concentration_and_costs(planted):
    """Issue 21 end to end: the files and figures the portfolio adds, consistent with each other."""
    import pandas as pd

    ws, m = planted
    report = ws / "artifacts" / "reports" / "planted"
    bt = m["backtest"]
    bars = pd.read_parquet(report / "equity_bars.parquet")
    daily = pd.read_parquet(report / "equity.parquet")
    assert list(bars.columns) == ["timestamp", "equity", "gross_exposure", "net_exposure"]
    assert (bars["net_exposure"].abs() <= bars["gross_exposure"] + 1e-9).all()  # |net| <= gross
    assert len(bars) > 10 * len(daily) and bars["equity"].iloc[-1] == daily["equity"].iloc[-1]
    path = [bt["capital"], *bars["equity"]]
    peak = pd.Series(path).cummax()
    assert bt["max_drawdown"] == pytest.approx((pd.Series(path) / peak - 1).min(), abs=1e-12)
    assert bt["max_drawdown"] <= bt["max_drawdown_daily"] <= 0
    trades = pd.read_parquet(report / "trades.parquet")
    assert bt["final_equity"] == pytest.approx(bt["capital"] + trades["pnl"].sum(), rel=1e-9)
    per = bt["per_ticker"]
    assert sum(s["pnl"] for s in per.values()) == pytest.approx(trades["pnl"].sum(), rel=1e-9)
    c, costs = bt["concentration"], bt["costs"]
    if c["top_ticker_share"] is not None:
        assert c["top_ticker_share"] == pytest.approx(per[c["top_ticker"]]["pnl_share"])
    assert costs["gross_pnl"] - costs["commissions"] - costs["slippage"] == pytest.approx(
        costs["net_pnl"], rel=1e-9, abs=1e-6
    )
    assert any(
        r.startswith(("concentration", "hold: concentration")) for r in m["decision"]["reasons"]
    )
    text = (report / "summary.md").read_text()
    assert "- Concentration: " in text and "- Costs: " in text and "(intraday" in text
    assert m["search"]["budget"]["trials_planned"] == m["search"]["trials_requested"]
    # the oracle is traded by the same portfolio: the model's side is the reported backtest
    assert m["oracle"]["model"]["sharpe"] == pytest.approx(bt["sharpe"])


def test_each_seed_table_holds_the_newest_run_that_fills_it(planted, tmp_path):
    """A phase run fills both tables, a training run the training table, a backtest the
    backtesting table; only phase runs are `latest` (what the next phase compares with)."""
    _, m = planted
    path = tmp_path / "T.md"
    phase = tracker.row_from_metrics(m)
    tracker.update(path, phase)
    train = {**phase, "run_id": "tr", "kind": "train", "trades": None, "cv_accuracy": 0.61}
    tracker.update(path, train)
    bt = {**phase, "run_id": "bt", "kind": "backtest", "model_run_id": "tr", "trades": 7}
    tracker.update(path, bt)
    state = tracker.load_state(path)
    assert state["latest"]["1"]["run_id"] == m["run_id"]
    assert state["training"]["1"]["run_id"] == "tr" and state["backtesting"]["1"]["run_id"] == "bt"
    lines = path.read_text().splitlines()
    assert any(x.startswith("| 1 | tr |") and "training run (no backtest)" in x for x in lines)
    assert any(x.startswith("| 1 | bt | 7 |") and "backtest of tr" in x for x in lines)
    assert [h["run_id"] for h in state["history"]] == ["bt", "tr", m["run_id"]]
    # a tracker written before the tables had rows of their own: its phase rows stay in both
    old = {"latest": {"1": phase}, "history": [phase]}
    path.write_text(tracker.render(old))
    tracker.update(path, {**phase, "phase": 2, "run_id": "tr2", "kind": "train"})
    state = tracker.load_state(path)
    assert state["backtesting"]["1"]["run_id"] == m["run_id"]
    assert {p: r["run_id"] for p, r in state["training"].items()} == {"1": m["run_id"], "2": "tr2"}


def test_learning_curve_is_refitted_and_scored_on_the_oos_labels(planted):
    """The learning curve's full point is the phase's own model on the phase's own OOS labels
    (so it reproduces metrics.json `oos`); the fractions are nested sessions of the training
    set, each fitted on fewer samples; the stage is timed and compared with the final fit."""
    _, m = planted
    sec = m["scaling"]
    lc = sec["learning_curve"]
    points = lc["points"]
    assert [p["label"] for p in points] == ["1/16", "1/8", "1/4", "full"]
    full = points[-1]
    assert full["accuracy"] == pytest.approx(m["oos"]["accuracy"], abs=1e-12)
    assert full["log_loss"] == pytest.approx(m["oos"]["log_loss"], rel=1e-6)
    assert full["samples"] == m["cv"]["samples"] and full["oos_samples"] == m["oos"]["samples"]
    sizes = [p["samples"] for p in points]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert all(p["oos_samples"] == m["oos"]["samples"] for p in points)  # the same labels
    stages = m["resources"]["stages"]
    assert lc["stage_s"] == stages["learning_curve"] and lc["final_fit_s"] == stages["train"]
    assert lc["cost_vs_final_fit"] == pytest.approx(
        stages["learning_curve"] / stages["train"], rel=0.01
    )
    for f in sec["forecast"]:
        assert f["accuracy_lo"] <= f["accuracy"] <= f["accuracy_hi"]
        assert f["wall_s"] > 0 and f["peak_gb"] > 0 and f["samples"] > m["cv"]["samples"]


def test_learning_curve_never_rises_past_the_oracle(planted):
    """Known truth on a strong planted edge: no point of the learning curve, nor the fitted
    asymptote's interval, lies beyond the oracle's expected accuracy on these bars. (That the
    curve rises is not testable here: on a strong edge 1/16 of these few sessions already learns
    most of it, and the OOS SE is ~0.016. Phase 1 as shipped shows it: 0.5238 at 1/16 to 0.5293
    in full, +0.0007 [+0.0002, +0.0017] per doubling; docs/scale.md.)"""
    _, m = planted
    points = m["scaling"]["learning_curve"]["points"]
    ceiling = m["oracle"]["oracle"]["expected_accuracy"]
    for p in points:
        assert p["accuracy"] <= ceiling + 2 * p["accuracy_se"], (p, ceiling)
    assert m["scaling"]["fit"]["accuracy"]["asymptote_lo"] <= ceiling
    # not vacuous: the model learned the edge at every size (well above the naive predictor)
    assert all(p["skill"] > 2 * p["skill_se"] for p in points), points


def test_tracker_keeps_one_row_per_phase(planted, tmp_path):
    _, m = planted
    path = tmp_path / "T.md"
    row = tracker.row_from_metrics(m)
    tracker.update(path, row)
    tracker.update(path, {**row, "run_id": "second", "accuracy": 0.6})
    tracker.update(path, {**row, "phase": 2, "run_id": "p2"})
    state = tracker.load_state(path)
    assert state["latest"]["1"]["run_id"] == "second"
    assert [h["run_id"] for h in state["history"]] == ["p2", "second", m["run_id"]]
    text = path.read_text()
    assert text.count("| 1 | second |") == 2 and "| 2 | p2 |" in text
    assert tracker.previous_phase_row(path, 2)["run_id"] == "second"
    assert not list(tmp_path.glob(".*tmp"))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vpt_ray.phase", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )


def test_bad_config_exits_nonzero_with_clear_message(tmp_path):
    out = _cli("1", "--set", "labels.horizn=3", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown key 'labels.horizn'" in out.stderr and "did you mean 'horizon'" in out.stderr
    assert not (tmp_path / "artifacts").exists()


def test_bad_data_file_fails_cleanly_and_leaves_nothing_complete(ray_session, workspace):
    (workspace / "data" / "AAA.parquet").write_bytes(b"PAR1 not really parquet")
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    with pytest.raises(Exception, match="AAA.parquet") as err:
        run_phase(cfg, run_id="bad")
    assert "unreadable parquet" in str(err.value)
    status = json.loads((workspace / "artifacts" / "reports" / "bad" / "status.json").read_text())
    assert status["status"] == "FAILED" and "AAA.parquet" in status["error"]
    assert not (workspace / "artifacts" / "models" / "bad").exists()
    assert not (workspace / "artifacts" / "reports" / "bad" / "metrics.json").exists()
    assert not (workspace / "artifacts" / "SCALING_TRACKER.md").exists()


def test_saved_model_backtests_outside_its_training_window(planted):
    import datetime as dt

    from vpt_ray.backtest.__main__ import main as backtest_main
    from vpt_ray.pipeline.backtest_cli import run as backtest_run

    ws, _ = planted
    model_dir = ws / "artifacts" / "models" / "planted"
    m = backtest_run(model_dir, dt.date(2024, 4, 1), dt.date(2024, 4, 12), [])
    assert m["backtest"]["trades"] > 0 and m["oos"]["samples"] > 1000
    assert (ws / "artifacts" / "reports" / m["run_id"] / "metrics.json").exists()
    code = backtest_main(
        ["--model-dir", str(model_dir), "--start-date", "2024-01-02", "--end-date", "2024-01-31"]
    )
    assert code == 2  # overlaps the training window: refused


def test_train_entry_point_stops_after_the_model(ray_session, workspace):
    from vpt_ray.model.train import load_model

    cfg = load_config(1, overrides=tiny_overrides(workspace))
    out = run_phase(cfg, run_id="trainonly", stop_after="train")
    booster, meta = load_model(out["model_dir"])
    assert meta["run_id"] == "trainonly" and booster.num_features() == len(meta["feature_names"])
    # a training run is recorded: metrics.json (CV, no backtest), summary.md, the training table
    report = workspace / "artifacts" / "reports" / "trainonly"
    m = json.loads((report / "metrics.json").read_text())
    assert m["kind"] == "train" and "backtest" not in m and "decision" not in m
    assert m["cv"]["accuracy"] == pytest.approx(out["cv"]["accuracy"]) and m["cv"]["samples"] > 0
    assert 0 < m["cv"]["accuracy_se"] < 0.1 and m["features"]["count"] == len(meta["feature_names"])
    assert m["next"].endswith("--start-date 2024-03-05 --end-date 2024-03-28")
    assert f"--model-dir {out['model_dir']}" in m["next"] or "--model-dir artifacts" in m["next"]
    assert sum(m["resources"]["stages"].values()) <= m["resources"]["wall_seconds"]
    assert m["next"] in (report / "summary.md").read_text()
    state = tracker.load_state(workspace / "artifacts" / "SCALING_TRACKER.md")
    assert state["training"]["1"]["run_id"] == "trainonly" and state["latest"] == {}
    assert state["backtesting"] == {} and state["history"][0]["kind"] == "train"
    text = (workspace / "artifacts" / "SCALING_TRACKER.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 1 | trainonly |"))
    assert f"| {m['cv']['samples']} | {m['features']['count']} | {m['cv']['accuracy']:.4f} |" in row
    assert "training run (no backtest)" in row


def test_crash_mid_run_leaves_nothing_that_looks_complete(ray_session, workspace, monkeypatch):
    from vpt_ray.pipeline import stages

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash in the backtest stage")

    monkeypatch.setattr(stages, "backtest", boom)
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_phase(cfg, run_id="crash")
    arts = workspace / "artifacts"
    status = json.loads((arts / "reports" / "crash" / "status.json").read_text())
    assert status["status"] == "FAILED" and "simulated crash" in status["error"]
    assert not (arts / "models" / "crash").exists()  # the trained model was never published
    assert not (arts / "reports" / "crash" / "metrics.json").exists()
    assert not (arts / "SCALING_TRACKER.md").exists()
