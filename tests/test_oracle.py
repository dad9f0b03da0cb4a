"""The known-truth oracle: its probabilities against brute-force simulation of the generator, their
calibration against the labels `features.py` makes, no edge without signal, more with more signal,
and its section in a real (tiny) run.

Calibration uses every `horizon`-th labelled bar: given the oracle's probability, outcomes of
non-overlapping label windows are uncorrelated (Y - p is a martingale difference), so binomial
standard errors are honest there, while overlapping labels would overstate the evidence.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from scipy.stats import chi2

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.data.synthetic import (
    GARCH_ALPHA,
    GARCH_BETA,
    IMPACT,
    PHI,
    T_DOF,
    SyntheticParams,
    _intraday_curve,
    generate_ticker,
)
from vpt_ray.features.causal import build_features
from vpt_ray.validation.oracle import oracle_frame, oracle_proba, probability, summary_line

HORIZON = 15
TICKERS = ["AAA", "BBB", "CCC", "DDD"]
START, END = dt.date(2024, 1, 2), dt.date(2024, 6, 28)


def _brute_force(s, h1, kappa, curve, n_paths, seed):
    """P(R > 0) by simulating the generator's minute recursion forward from a known state."""
    rng = np.random.default_rng(seed)
    k = len(curve)
    u = rng.standard_normal((n_paths, k))
    e = rng.standard_t(T_DOF, (n_paths, k)) * np.sqrt((T_DOF - 2) / T_DOF)
    state, h, ret = np.full(n_paths, s), np.full(n_paths, h1), np.zeros(n_paths)
    for j in range(k):
        if j:
            h = 1 - GARCH_ALPHA - GARCH_BETA + GARCH_ALPHA * e[:, j - 1] ** 2 + GARCH_BETA * h
        ret += curve[j] * np.sqrt(h) * (kappa * state + e[:, j] + IMPACT * u[:, j])
        state = PHI * state + np.sqrt(1 - PHI**2) * u[:, j]
    return float((ret > 0).mean())


@pytest.mark.parametrize(
    "s, h1, kappa, minute, k",
    [
        (1.0, 1.0, 0.08, 200, 15),  # mid-session, calm
        (2.0, 4.0, 0.128, 200, 15),  # after a volatility burst
        (-1.5, 0.5, 0.128, 0, 16),  # at the open (steep curve), a missing minute in the horizon
        (2.0, 2.0, 0.128, 380, 5),  # cut at the session's end (a trade's horizon)
        (1.0, 1.0, 0.128, 100, 1),  # one minute ahead
        (-2.5, 1.5, 0.256, 50, 15),  # strong signal (signal_strength 2, strongest regime)
    ],
)
def test_probability_matches_brute_force_simulation(s, h1, kappa, minute, k):
    curve = _intraday_curve(390)
    s_after, h_next = np.zeros(390), np.ones(390)
    s_after[minute], h_next[minute] = s, h1
    p = probability(s_after, h_next, curve, kappa, np.array([minute]), np.array([k]))[0]
    n = 400_000
    truth = _brute_force(s, h1, kappa, curve[minute + 1 : minute + 1 + k], n, seed=minute + k)
    se = np.sqrt(truth * (1 - truth) / n)
    # The normal approximation alone is off by 6-7% of |p - 0.5| (up to 0.01 here); what is left
    # after the simulated correction is the table's reference path (h = 1, flat curve).
    assert abs(p - truth) < 4 * se + 0.002, (p, truth, se)
    assert np.sign(p - 0.5) == np.sign(s)


def _labels(truth) -> np.ndarray:
    """features.py's label on the oracle frame's bars: close of row t + h above row t's."""
    close = truth["close"].to_numpy()
    y = np.full(len(close), np.nan)
    y[:-HORIZON] = np.log(close[HORIZON:]) - np.log(close[:-HORIZON]) > 0
    return np.where(truth["p"].notna(), y, np.nan)


def test_labels_are_the_feature_stores():
    """The oracle's bars and labelled rows are features.py's, missing minutes included."""
    params = SyntheticParams(seed=3, signal_strength=1.0, missing_minute_rate=0.02)
    end = dt.date(2024, 2, 29)
    truth = oracle_frame(params, "AAA", START, end, HORIZON)
    feats = build_features(generate_ticker(params, "AAA", START, end), [5, 15], HORIZON, 1)
    assert (feats["timestamp"].to_numpy() == truth["timestamp"].to_numpy()).all()
    assert np.array_equal(feats["y"].to_numpy(), _labels(truth), equal_nan=True)
    minutes = truth["timestamp"].diff().dt.total_seconds().to_numpy() / 60
    assert (minutes == 2).sum() > 100  # missing minutes: labels span h + 1 minutes there


def _labelled(signal: float, missing: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """(label, oracle probability) on every HORIZON-th labelled bar of TICKERS over START..END."""
    params = SyntheticParams(seed=3, signal_strength=signal, missing_minute_rate=missing)
    ys, ps = [], []
    for t in TICKERS:
        truth = oracle_frame(params, t, START, END, HORIZON)
        rows = np.flatnonzero(truth["p"].notna().to_numpy())[::HORIZON]
        ys.append(_labels(truth)[rows])
        ps.append(truth["p"].to_numpy()[rows])
    return np.concatenate(ys), np.concatenate(ps)


@pytest.fixture(scope="module")
def by_signal() -> dict[float, tuple[np.ndarray, np.ndarray]]:
    return {s: _labelled(s) for s in (0.0, 0.5, 1.0, 2.0)}


def _accuracy(y, p) -> tuple[float, float]:
    return float(np.mean((p > 0.5) == (y > 0.5))), 0.5 / np.sqrt(len(y))


@pytest.mark.parametrize("signal, missing", [(1.0, 0.002), (2.0, 0.02)])
def test_oracle_is_calibrated(signal, missing, by_signal):
    y, p = by_signal[signal] if missing == 0.002 else _labelled(signal, missing)
    assert len(y) > 10_000
    edges = np.quantile(p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    stat = 0.0
    for b in range(10):
        sel = bins == b
        expected, var = p[sel].sum(), (p[sel] * (1 - p[sel])).sum()
        assert abs(y[sel].sum() - expected) < 3.5 * np.sqrt(var), (b, y[sel].mean(), p[sel].mean())
        stat += (y[sel].sum() - expected) ** 2 / var
    assert chi2.sf(stat, 10) > 1e-3, stat
    # calibration slope: E[y - 0.5 | p] = b (p - 0.5) with b = 1 for true probabilities
    x = p - 0.5
    slope = 1 + np.sum(x * (y - p)) / np.sum(x * x)
    se = np.sqrt(np.sum(x * x * p * (1 - p))) / np.sum(x * x)
    assert abs(slope - 1) < 3 * se, (slope, se)


def test_no_signal_no_edge(by_signal):
    y, p = by_signal[0.0]
    assert (p == 0.5).all()  # a symmetric law: the truth is a coin flip
    acc, se = _accuracy(y, p)
    assert abs(acc - 0.5) < 3 * se, (acc, se)
    assert abs(y.mean() - 0.5) < 3 * se  # the generator itself has no drift to exploit


def test_oracle_accuracy_rises_with_signal(by_signal):
    acc = {s: _accuracy(*by_signal[s])[0] for s in (0.5, 1.0, 2.0)}
    se = _accuracy(*by_signal[1.0])[1]
    assert acc[0.5] > 0.5 + 2 * se, acc
    assert acc[0.5] < acc[1.0] < acc[2.0], acc
    spread = {s: float(np.std(by_signal[s][1])) for s in (0.5, 1.0, 2.0)}
    assert spread[0.5] < spread[1.0] < spread[2.0], spread


def test_oracle_proba_is_deterministic_and_aligned():
    params = SyntheticParams(seed=3, signal_strength=1.0, missing_minute_rate=0.01)
    day = dt.date(2024, 3, 1)
    a = oracle_proba(params, "AAA", day, day, HORIZON)
    b = oracle_proba(params, "AAA", day, day, HORIZON)
    bars = generate_ticker(params, "AAA", day, day)
    assert a.equals(b)
    assert (a.index == bars["timestamp"]).all()
    assert a.iloc[-HORIZON:].isna().all() and a.iloc[:-HORIZON].notna().all()
    with pytest.raises(ValueError, match="horizon"):
        oracle_proba(params, "AAA", day, day, 0)


def test_summary_line_says_what_it_can():
    scores = {"accuracy": 0.52, "auc": 0.53, "log_loss": 0.69, "sharpe": None}
    section = {
        "tickers": ["AAA"],
        "samples": 1000,
        "signal_strength": 0.0,
        "model": scores,
        "oracle": {**scores, "accuracy": 0.5},
        "oracle_has_edge": False,
        "edge_captured": dict.fromkeys(scores),
    }
    line = summary_line({"oracle": section})
    assert "no edge" in line and "Sharpe n/a vs oracle n/a (captured n/a)" in line
    assert summary_line({"oracle": None}) is None and summary_line({}) is None
    assert "skipped" in summary_line({"oracle": {"skipped": "bar 5min"}})


@pytest.mark.slow
def test_run_reports_the_oracle(ray_session, workspace):
    from vpt_ray.pipeline.phase import run_phase

    overrides = tiny_overrides(workspace, "synthetic.signal_strength=2.0")
    m = run_phase(load_config(1, overrides=overrides), run_id="oracle")
    o = m["oracle"]
    assert o["tickers"] == ["AAA", "BBB"] and o["samples"] == m["oos"]["samples"]
    assert o["model"]["accuracy"] == pytest.approx(m["oos"]["accuracy"])
    assert o["model"]["sharpe"] == pytest.approx(m["backtest"]["sharpe"])
    assert o["oracle_has_edge"] and o["oracle"]["accuracy"] > 0.55
    assert o["oracle"]["expected_accuracy"] > 0.55
    assert o["oracle"]["log_loss"] < np.log(2)
    cap = o["edge_captured"]
    assert cap["accuracy"] == pytest.approx(
        (o["model"]["accuracy"] - 0.5) / (o["oracle"]["accuracy"] - 0.5)
    )
    report = workspace / "artifacts" / "reports" / "oracle"
    assert json.loads((report / "metrics.json").read_text())["oracle"]["tickers"] == ["AAA", "BBB"]
    assert "Known truth" in (report / "summary.md").read_text()
