"""The pipeline on real data of any period and bar size (issue 15's five runs), and the two real
daily runs that must not advance (issue 26): bokeh-sampledata's four large caps and
backtesting.py's GOOG sample, whose labels went up 68.6% of the time out of sample.

1. Real daily bars from before 2015 (bokeh-sampledata's Quandl AAPL, GOOG, IBM, MSFT), imported
   with `vpt data import`, run phase-shaped with `data.bar=1day`: trades, stays real, shows no
   implausible edge, and no label crosses into a validation or the backtest window.
2. Daily bars under the default backtest settings (flat_at_close on): positions are held across
   sessions instead of 0 trades.
3. Minute bars on 2010 sessions (a synthetic file moved onto them with the calendar, stored as a
   user's real file), with a zero-volume ticker next to them: it is excluded by rule and reported.
4. A partial local file with `data.sources: [local]`: exit 2 naming the ticker and the sessions.

Each phase run is tiny and shared by the tests that read it (module fixtures).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, cli_error_line, tiny_overrides

from vpt_ray.core.calendar import get_calendar
from vpt_ray.core.config import ConfigError, load_config
from vpt_ray.data import local
from vpt_ray.data.__main__ import main as data_main
from vpt_ray.data.synthetic import SyntheticParams, generate_ticker
from vpt_ray.features.causal import build_features, clock_positions
from vpt_ray.features.store import load_matrix
from vpt_ray.model.cv import PurgedWalkForward
from vpt_ray.pipeline.phase import run_phase

pytestmark = pytest.mark.slow
NY = "America/New_York"
FAST = ["search.num_samples=1", "model.n_estimators=40", "cv.n_splits=2"]
REAL = [  # 4 real tickers, daily, 6 years of training before the 2011-2013 backtest
    "data.tickers=[AAPL,GOOG,IBM,MSFT]",
    "data.bar=1day",
    "data.sources=[local]",
    "data.start=2005-01-03",
    "data.end=2010-12-31",
    "backtest.start=2011-01-10",
    "backtest.end=2013-02-28",
    "labels.horizon=5",
    "labels.stride=1",
]


def onto_sessions(bars: pd.DataFrame, first: dt.date) -> pd.DataFrame:
    """Minute bars moved session by session onto the calendar's sessions from `first`: each bar
    keeps its offset from its session's open (bars past a shorter target session are dropped)."""
    cal = get_calendar("XNYS")
    local_ts = bars["timestamp"].dt.tz_convert(NY)
    day = local_ts.dt.normalize().dt.tz_localize(None)
    src = pd.DatetimeIndex(day.unique())
    target = cal.sessions[cal.sessions >= pd.Timestamp(first)][: len(src)]
    k = src.get_indexer(day)
    ns = bars["timestamp"].array.asi8
    src_open = pd.DatetimeIndex(cal.schedule.loc[src, "open"]).asi8[k]
    opens = pd.DatetimeIndex(cal.schedule.loc[target, "open"]).asi8[k]
    closes = pd.DatetimeIndex(cal.schedule.loc[target, "close"]).asi8[k]
    new = opens + (ns - src_open)
    keep = new < closes
    stamps = pd.DatetimeIndex(new[keep], tz="UTC").as_unit("ns")
    return bars.loc[keep].assign(timestamp=stamps).reset_index(drop=True)


def _phase(ws: Path, *extra: str, run_id: str) -> dict:
    cfg = load_config(1, overrides=tiny_overrides(ws, *FAST, *extra))
    return run_phase(cfg, run_id=run_id)


# -- 1. real daily bars from before 2015 ----------------------------------------------------------


@pytest.fixture(scope="module")
def real_daily(ray_session, tmp_path_factory) -> tuple[Path, dict]:
    from bokeh_sampledata.stocks import data as stocks

    ws = tmp_path_factory.mktemp("real_daily")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    src = ws / "stocks.csv.gz"  # the file a user would export: one table, many tickers
    stocks[stocks["ticker"] != "FB"].to_csv(src, index=False)
    base = ["--config", str(REPO / "config" / "base.yaml")]
    assert data_main(["import", str(src), "--data-dir", str(ws / "data"), *base]) == 0
    assert data_main(["check", "--data-dir", str(ws / "data"), *base]) == 0
    return ws, _phase(ws, *REAL, run_id="real")


def test_real_pre_2015_daily_run_trades_and_shows_no_implausible_edge(real_daily):
    ws, m = real_daily
    assert m["data"]["synthetic"] is False and m["data"]["sources_used"] == ["local"]
    assert m["data"]["excluded"] == {} and m["windows"]["holds_across_sessions"] is True
    assert m["windows"]["clock"] == {"calendar": "XNYS", "origin": "1990-01-02", "slots": 1}
    assert m["oos"]["samples"] > 1500  # ~540 sessions x 4 tickers
    assert abs(m["oos"]["accuracy"] - 0.5) <= 0.06, m["oos"]
    assert m["backtest"]["trades"] > 0
    trades = pd.read_parquet(ws / "artifacts" / "reports" / "real" / "trades.parquet")
    held = trades[trades["exit_reason"] == "hold"]
    assert len(held) and (held["exit_time"] > held["entry_time"]).all()
    days = (held["exit_time"] - held["entry_time"]).dt.days
    assert (days >= 5).all()  # 5 daily bars held: a week on the calendar, across sessions
    meta = json.loads((ws / "artifacts" / "models" / "real" / "meta.json").read_text())
    assert meta["synthetic"] is False and meta["clock"]["origin"] == "1990-01-02"
    assert "SYNTHETIC" not in (ws / "artifacts" / "reports" / "real" / "summary.md").read_text()


def test_daily_labels_never_reach_validation_or_backtest_windows(real_daily):
    ws, m = real_daily
    cfg = load_config(1, overrides=tiny_overrides(ws, *FAST, *REAL))
    fdir = ws / "artifacts" / "runs" / "real" / "features"
    store = {t: {"path": str(fdir / f"{t}.parquet")} for t in cfg.data.tickers}
    names = m["features"]["names"]
    mat = load_matrix(store, names, cfg.data.start, cfg.data.end, 1, 1)
    cal = get_calendar("XNYS")
    last_train = clock_positions(pd.Series([pd.Timestamp(cfg.data.end, tz=NY)]), 390)[0]
    first_bt = clock_positions(pd.Series([pd.Timestamp("2011-01-10", tz=NY)]), 390)[0]
    assert mat.label_end.max() <= last_train < first_bt  # training labels end in training
    assert (mat.label_end - mat.pos >= cfg.labels.horizon).all()  # daily labels span sessions
    assert mat.pos.min() >= cal.sessions.get_loc(pd.Timestamp("2005-01-03"))  # 1990 origin
    for train, val in PurgedWalkForward(2, cfg.embargo_bars, 0.3).split(mat.pos, mat.label_end):
        lo = mat.pos[val].min()
        assert mat.label_end[train].max() < lo and mat.pos[train].max() < lo - cfg.embargo_bars


def test_daily_features_on_real_bars_are_causal(real_daily):
    ws, _ = real_daily
    bars = local.read_bars(ws / "data" / "GOOG.parquet", dt.date(2008, 1, 2), dt.date(2009, 12, 31))
    cut = 300
    garbage = bars.copy()
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, len(bars) - cut)
    for c in ("open", "high", "low", "close", "vwap"):
        garbage.loc[cut:, c] = bars.loc[cut:, c].to_numpy() * scale
    garbage.loc[cut:, "volume"] = bars.loc[cut:, "volume"].to_numpy() * scale[::-1]
    a = build_features(bars, [5, 15, 60], 5, 390)
    b = build_features(garbage, [5, 15, 60], 5, 390)
    cols = [c for c in a.columns if c not in ("y", "fwd_ret")]
    pd.testing.assert_frame_equal(a.loc[: cut - 1, cols], b.loc[: cut - 1, cols])
    # labels change only where their horizon reaches the perturbed bars
    assert a.loc[: cut - 6, "y"].equals(b.loc[: cut - 6, "y"])


def test_real_daily_run_does_not_advance_and_names_the_naive_predictor(real_daily):
    _, m = real_daily
    assert m["decision"]["verdict"] != "advance", m["decision"]["reasons"]
    o = m["oos"]
    assert o["naive_direction"] in ("up", "down") and o["naive_accuracy"] is not None
    assert abs(o["accuracy"] - o["naive_accuracy"]) < 0.06  # the market's drift, not skill
    skill = next(c for c in m["decision"]["checks"] if c["rule"].startswith("skill"))
    assert (
        "skill over the naive predictor (always" in skill["line"] and "lower bound" in skill["line"]
    )


GOOG_DAILY = [  # issue 26's run: backtesting.py's GOOG, phase 1 on daily bars (labels: 15 days)
    "data.tickers=[GOOG]",
    "data.bar=1day",
    "data.sources=[local]",
    "data.start=2004-08-19",
    "data.end=2011-12-30",
    "backtest.start=2012-01-10",
    "backtest.end=2013-03-01",
]


@pytest.fixture(scope="module")
def goog_daily(ray_session, tmp_path_factory) -> tuple[Path, dict]:
    from backtesting.test import GOOG

    ws = tmp_path_factory.mktemp("goog_daily")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    GOOG.to_csv(ws / "GOOG.csv")  # a DatetimeIndex and Open/High/Low/Close/Volume
    base = ["--config", str(REPO / "config" / "base.yaml")]
    assert data_main(["import", str(ws / "GOOG.csv"), "--data-dir", str(ws / "data"), *base]) == 0
    return ws, _phase(ws, *GOOG_DAILY, run_id="goog")


def test_real_goog_daily_holds_naming_the_naive_predictor_and_the_bound(goog_daily):
    """On point estimates this run advanced (accuracy 0.6347 > 0.52, Sharpe 1.89 > 1) while
    always predicting "up" scored 0.686 on its 271 labels."""
    ws, m = goog_daily
    d, o = m["decision"], m["oos"]
    assert m["data"]["synthetic"] is False and o["samples"] == 271
    assert o["naive_direction"] == "up" and o["naive_accuracy"] == pytest.approx(o["base_rate"])
    assert o["base_rate"] > 0.65 and o["effective_samples"] == pytest.approx(271 / 15)
    assert d["verdict"] == "hold", d["reasons"]
    lead = d["reasons"][0]
    assert lead.startswith("hold: not enough evidence: OOS accuracy")
    assert "lower bound" in lead and "decision.min_effective_samples 100" in lead
    assert "skill over the naive predictor (always up, the training majority: accuracy" in (
        "\n".join(d["reasons"])
    )
    summary = (ws / "artifacts" / "reports" / "goog" / "summary.md").read_text()
    assert "- Against the naive predictor (the training labels' majority" in summary
    assert "seed rule on the point estimate (shown, not applied): OOS accuracy" in summary
    page = (ws / "artifacts" / "reports" / "goog" / "report.html").read_text()
    assert "<h3>Against the naive predictor</h3>" in page
    tracker = (ws / "artifacts" / "SCALING_TRACKER.md").read_text()
    assert (
        "OOS skill over naive (always up)" in tracker and "hold: not enough evidence (" in tracker
    )


# -- 2. daily bars under the default backtest settings --------------------------------------------


def test_saved_daily_model_backtests_with_its_clock_and_warm_up(real_daily):
    """The run above is `phase 1 --set data.bar=1day` with flat_at_close left on (the default);
    its saved model backtests on a real window of its own, warming up its daily features over
    enough sessions (240 bars), with the clock its meta.json records."""
    from vpt_ray.pipeline.backtest_cli import check_clock
    from vpt_ray.pipeline.backtest_cli import run as backtest_run

    ws, m = real_daily
    cfg = load_config(1, overrides=tiny_overrides(ws, *FAST, *REAL))
    assert cfg.backtest.flat_at_close is True and cfg.holds_across_sessions
    out = backtest_run(
        ws / "artifacts" / "models" / "real", dt.date(2011, 1, 10), dt.date(2011, 12, 30), []
    )
    assert out["backtest"]["trades"] > 0 and out["oos"]["samples"] > 800
    assert abs(out["oos"]["accuracy"] - 0.5) <= 0.08, out["oos"]
    meta = json.loads((ws / "artifacts" / "models" / "real" / "meta.json").read_text())
    other = {**meta, "clock": {**meta["clock"], "origin": "2015-01-02"}}  # the old epoch
    with pytest.raises(ConfigError, match="the model was trained on the clock"):
        check_clock(other, cfg)


# -- 3. minute bars on 2010 sessions, with a zero-volume ticker -----------------------------------


@pytest.fixture(scope="module")
def minutes_2010(ray_session, tmp_path_factory) -> tuple[Path, dict]:
    ws = tmp_path_factory.mktemp("minutes_2010")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    params = SyntheticParams(seed=3, signal_strength=2.0, missing_minute_rate=0.002)
    for t in ("AAA", "BBB", "ZZZ"):
        bars = onto_sessions(
            generate_ticker(params, t, dt.date(2024, 1, 2), dt.date(2024, 3, 8)),
            dt.date(2010, 1, 4),
        )
        if t == "ZZZ":  # listed, quoted, never traded
            bars = bars.assign(volume=0.0, transactions=0)
        local.write_bars(bars, ws / "data" / f"{t}.parquet")  # a user's real file
    m = _phase(
        ws,
        "data.tickers=[AAA,BBB,ZZZ]",
        "data.sources=[local]",
        "data.start=2010-01-04",
        "data.end=2010-02-12",
        "backtest.start=2010-02-18",
        "backtest.end=2010-03-05",
        run_id="m2010",
    )
    return ws, m


def test_minute_history_from_2010_runs_on_the_calendar_clock(minutes_2010):
    ws, m = minutes_2010
    assert m["data"]["synthetic"] is False
    assert m["windows"]["validation"][0][0].startswith("2010-")
    assert m["windows"]["clock"]["slots"] == 390 and not m["windows"]["holds_across_sessions"]
    assert m["oos"]["samples"] > 5000 and m["backtest"]["trades"] > 0
    assert set(m["backtest"]["per_ticker"]) == {"AAA", "BBB"}


def test_zero_volume_ticker_is_excluded_by_rule_and_reported(minutes_2010):
    ws, m = minutes_2010
    assert m["data"]["excluded"] == {"ZZZ": "zero volume in every bar of the training window"}
    assert "ZZZ" not in m["data"]["tickers"] and "ZZZ" not in m["backtest"]["per_ticker"]
    log = (ws / "logs" / "run-m2010.log").read_text()
    assert "ZZZ: excluded from training and the backtest: zero volume" in log


# -- 4. a partial local file ----------------------------------------------------------------------


def test_partial_local_file_with_local_source_only_exits_2_naming_ticker_and_ranges(
    ray_session, workspace, capsys
):

    bars = generate_ticker(
        SyntheticParams(7, 1.0, 0.0), "PPP", dt.date(2024, 1, 2), dt.date(2024, 1, 2)
    )
    local.write_bars(bars.iloc[:1], workspace / "data" / "PPP.parquet")  # one bar in 61 sessions
    line = cli_error_line(
        workspace, capsys, "partial", "data.tickers=[PPP]", "data.sources=[local]"
    )
    assert line.startswith("error: PPP: 60 of 61 sessions")
    assert "2024-01-03..2024-03-28" in line and "data.max_missing_sessions (5)" in line
    arts = workspace / "artifacts"
    status = json.loads((arts / "reports" / "partial" / "status.json").read_text())
    assert status["status"] == "FAILED"
    assert status["error"].startswith("DataUnavailableError in stage data: PPP: 60 of 61 sessions")
    assert not (arts / "models" / "partial").exists() and not (arts / "SCALING_TRACKER.md").exists()
