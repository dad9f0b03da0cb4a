"""The scaling outlook's pure parts against known truth: power-law fits of hand-made learning
curves with a known asymptote, the trend test on flat curves, nested session fractions, the naive
figures, the block bootstrap and the cost model (no Ray; the phase runs are in
tests/test_known_truth.py and tests/test_phase.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vpt_ray.core.config import load_config
from vpt_ray.model import budget, cost_model
from vpt_ray.model.learning_curve import fraction_sessions, majority_direction
from vpt_ray.report.outlook import outlook_check, sentence
from vpt_ray.validation import scaling
from vpt_ray.validation.learning_curve import (
    block_ids,
    block_sums,
    naive_figures,
    point_figures,
    replicate_figures,
)

N = np.array([12_500, 25_000, 50_000, 100_000], dtype=float)


def power_curve(n, c=0.54, a=0.012, b=0.5, n_ref=100_000):
    return c - a * (np.asarray(n, dtype=float) / n_ref) ** (-b)


def noisy(truth: np.ndarray, se: float, reps: int, seed: int = 1) -> np.ndarray:
    """Replicates with a shared level shift (the OOS window's luck) and a smaller per-point one,
    as the block bootstrap of one OOS window gives them."""
    rng = np.random.default_rng(seed)
    level = rng.standard_normal((reps, 1)) * se
    return truth + level + rng.standard_normal((reps, len(truth))) * se / 4


def test_exact_power_law_is_recovered():
    truth = power_curve(N)
    fit = scaling.fit_power_law(N, truth[None, :], np.ones(len(N)))
    assert fit.c[0] == pytest.approx(0.54, abs=5e-4)
    assert fit.b[0] == pytest.approx(0.5, rel=0.1)
    # the data needed for +0.001 over the largest size, from the formula
    need = scaling.samples_for_gain(fit, 100_000, 0.001)[0]
    assert power_curve(need) == pytest.approx(power_curve(100_000) + 0.001, abs=1e-4)
    # and the log-loss form falls toward its asymptote
    loss = 0.68 + 0.01 * (N / 100_000) ** -0.4
    lfit = scaling.fit_power_law(N, loss[None, :], np.ones(len(N)), "log_loss")
    assert lfit.c[0] == pytest.approx(0.68, abs=1e-3) and lfit.a[0] > 0


def _points(values: np.ndarray, se: float) -> list[dict]:
    return [
        {"samples": n, "accuracy": v, "accuracy_se": se, "log_loss": 0.69 - (v - 0.5) / 2,
         "log_loss_se": se / 2, "effective_samples": 10_000, "full": i == len(values) - 1}
        for i, (n, v) in enumerate(zip(N, values, strict=True))
    ]  # fmt: skip


def test_noisy_curve_asymptote_interval_covers_the_truth_and_the_forecast_the_measurement():
    truth = power_curve(N)
    reps = noisy(truth, se=0.002, reps=600)
    point = truth + np.array([0.0005, -0.0004, 0.0003, -0.0002])
    out = scaling.outlook(
        _points(point, 0.002), reps, 0.69 - (reps - 0.5) / 2,
        [{"phase": 3, "samples": 800_000, "oos_effective_samples": 100_000}], level=0.9,
    )  # fmt: skip
    fa = out["fit"]["accuracy"]
    assert fa["trend"] and fa["slope_lo"] > 0
    assert fa["asymptote_lo"] <= 0.54 <= fa["asymptote_hi"]
    row = out["forecast"][0]
    assert row["accuracy_lo"] <= power_curve(800_000) <= row["accuracy_hi"]
    assert row["accuracy_hi"] - row["accuracy_lo"] < 0.05
    assert set(row) >= {"phase", "samples", "accuracy", "accuracy_lo", "accuracy_hi", "log_loss"}
    # the band spans the curve and the forecast; the decision line is information only
    assert out["band"]["samples"][0] == N[0] and out["band"]["samples"][-1] == 800_000
    section = {**out, "learning_curve": {"points": _points(point, 0.002)}}
    section["sentence"] = sentence(section, {"phase": 1, "oos": {"accuracy": point[-1]}})
    assert section["sentence"].startswith("Phase 3 is forecast to reach")
    check = outlook_check(section)
    assert check["effect"] == "note" and check["decisive"] is False


def test_flat_curve_says_no_trend_and_stays_at_its_level():
    level = np.full(len(N), 0.5)
    reps = noisy(level, se=0.004, reps=600, seed=3)
    out = scaling.outlook(
        _points(level + np.array([0.001, -0.001, 0.0005, 0.0]), 0.004), reps,
        0.69 + 0 * reps, [{"phase": 2, "samples": 200_000, "oos_effective_samples": 15_000}],
    )  # fmt: skip
    fa = out["fit"]["accuracy"]
    assert not fa["trend"] and fa["slope_lo"] <= 0 <= fa["slope_hi"]
    assert fa["asymptote_lo"] <= 0.5 <= fa["asymptote_hi"] and fa["samples_for_gain"] is None
    row = out["forecast"][0]
    assert row["accuracy"] == pytest.approx(0.5)  # the largest fit's measured level
    assert row["accuracy_lo"] < 0.5 < row["accuracy_hi"]
    section = {**out, "learning_curve": {"points": _points(level, 0.004)}}
    text = sentence(section, {"phase": 1, "oos": {"accuracy": 0.5}})
    assert "no trend detectable" in text and "stay at 0.5000" in text


def test_a_curve_that_saturated_gives_an_unbounded_data_need():
    flat_top = power_curve(N, a=0.01, b=2.0)  # practically at its asymptote by the largest size
    fit = scaling.fit_power_law(N, flat_top[None, :], np.ones(len(N)))
    need = scaling.samples_for_gain(fit, N[-1], 0.02)[0]  # more than is left to gain
    assert math.isinf(need)
    lo, hi = scaling.interval(np.array([1.0, 2.0, np.inf, np.inf]), 0.5)
    assert lo == 1.0 and math.isinf(hi)


def test_session_fractions_are_nested_even_and_repeats_disjoint():
    sessions = np.arange(100, 475)  # 375 session ordinals
    eighth = fraction_sessions(sessions, 0.125)
    quarter = fraction_sessions(sessions, 0.25)
    half = fraction_sessions(sessions, 0.5)
    assert len(eighth) == 47 and len(quarter) == 94 and len(half) == 188
    assert set(eighth) <= set(quarter) <= set(half)
    assert np.all(np.diff(eighth) == 8)  # every 8th session: the whole period covered
    other = fraction_sessions(sessions, 0.125, repeat=1)
    assert len(other) == 47 and not set(other) & set(eighth)
    with pytest.raises(ValueError, match="fraction"):
        fraction_sessions(sessions, 1.5)


def test_naive_figures_and_the_majority():
    y = np.array([1, 1, 1, 0, 0, 1, 0, 1], dtype=float)
    p = np.array([0.6, 0.4, 0.7, 0.2, 0.6, 0.9, 0.3, 0.8])
    assert majority_direction(y) == 1 and majority_direction(np.array([0.0, 1.0])) == 1
    f = naive_figures(y, p, majority=1, overlap=1.0)
    assert f["accuracy"] == pytest.approx(6 / 8) and f["naive_accuracy"] == pytest.approx(5 / 8)
    assert f["skill"] == pytest.approx(1 / 8)
    d = ((p > 0.5) == (y > 0.5)).astype(float) - (y > 0.5)
    assert f["skill_se"] == pytest.approx(np.std(d, ddof=1) / math.sqrt(8))
    g = point_figures(y, p, 1, overlap=0.5)
    ll = -np.mean(np.where(y > 0.5, np.log(p), np.log(1 - p)))
    assert g["log_loss"] == pytest.approx(ll) and g["effective_samples"] == 4


def test_block_bootstrap_rescores_every_point_on_the_same_draw():
    rng = np.random.default_rng(0)
    session = np.repeat(np.arange(60), 50)
    y = (rng.random(len(session)) < 0.5).astype(float)
    right = rng.random(len(y)) < 0.6
    good = np.where(right == (y > 0.5), 0.7, 0.3)  # right 60% of the time
    worse = np.clip(good + rng.normal(0, 0.2, len(y)), 0, 1)
    blocks = block_ids(session)
    n = int(blocks.max()) + 1
    acc, ll = replicate_figures([block_sums(y, q, blocks, n) for q in (worse, good)], 400, seed=2)
    assert acc.shape == (400, 2) and ll.shape == (400, 2)
    point = [float(np.mean((q > 0.5) == (y > 0.5))) for q in (worse, good)]
    assert acc.mean(axis=0) == pytest.approx(point, abs=0.005)
    # the same blocks in both columns: their difference varies far less than either
    assert np.std(acc[:, 1] - acc[:, 0]) < np.std(acc[:, 1])
    assert block_ids(np.arange(10), 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]


def test_phase_sizes_follow_their_configs():
    sizes = {k: cost_model.phase_size(load_config(k)) for k in (1, 2, 3, 4, 5)}
    s1, s3 = sizes[1], sizes[3]
    assert s1.tickers == 5 and s3.tickers == 30
    assert s1.samples == pytest.approx(5 * s1.train_sessions * 390 / 5)
    assert sizes[2].samples > s1.samples and s3.samples > sizes[2].samples
    assert sizes[4].search_samples < sizes[4].samples  # searched on 365 sampled sessions
    assert sizes[5].samples == sizes[4].samples and sizes[5].bars > sizes[4].bars  # universe
    scaled = s1.scaled({"samples": 0.9})
    assert scaled.samples == pytest.approx(0.9 * s1.samples) and scaled.bars == s1.bars


def _run(phase, bars, samples, wall, search, peak, cpu=None):
    return cost_model.RunCost(phase, bars, samples, wall, search, 10.0, peak, cpu)


def test_cost_rates_from_the_runs_measured():
    ref = cost_model.calibrate([])
    assert ref.fixed_s == budget.FIXED_S and ref.other_s_per_m_bars == budget.OTHER_S_PER_M_BARS
    # one run, twice as slow as the reference: both rates scaled by 2
    one = _run(1, 1e6, 1.4e5, 2 * (budget.FIXED_S + budget.OTHER_S_PER_M_BARS) + 50, 50, 2.1, 8.0)
    r = cost_model.calibrate([one])
    assert r.fixed_s == pytest.approx(2 * budget.FIXED_S) and r.cpu_us_per_sample_fold == 8.0
    assert r.memory_gb_per_m_samples == cost_model.MEMORY_GB_PER_M_SAMPLES
    assert r.memory_fixed_gb == pytest.approx(2.1 - 0.14 * cost_model.MEMORY_GB_PER_M_SAMPLES)
    # two sizes: the lines fitted to them (and the larger run's CPU rate)
    two = _run(3, 9e6, 1.6e6, 60 + 9 * 12 + 300, 300, 2.9, 16.0)
    one = _run(1, 1e6, 1.4e5, 60 + 12 + 30, 30, 2.1, 8.0)
    r = cost_model.calibrate([one, two])
    assert r.fixed_s == pytest.approx(60) and r.other_s_per_m_bars == pytest.approx(12)
    assert r.cpu_us_per_sample_fold == 16.0 and "fitted" in r.source["memory"]
    cfg = load_config(3)
    small = cost_model.phase_cost(cfg, cost_model.phase_size(load_config(1)), r, 2, [0.5, 1.0])
    big = cost_model.phase_cost(cfg, cost_model.phase_size(cfg), r, 2, [0.5, 1.0])
    assert big["wall_s"] > small["wall_s"] and big["peak_gb"] > small["peak_gb"]
    assert big["wall_s"] == pytest.approx(big["other_s"] + big["search_s"] + big["ensemble_s"])


def test_scaling_config_rejects_bad_fractions():
    from vpt_ray.core.config import ConfigError

    with pytest.raises(ConfigError, match="fractions"):
        load_config(1, overrides=["scaling.fractions=[0.5,1.0]"])
    assert load_config(1, overrides=["scaling.fractions=[0.5,0.25]"]).scaling.fractions == [
        0.25,
        0.5,
    ]


def _metrics(acc: float = 0.53) -> dict:
    """The parts of a phase-1 run's metrics.json the outlook reads (figures of phase 1 as
    shipped)."""
    return {
        "phase": 1,
        "run_id": "p1",
        "data": {"synthetic": True, "signal_strength": 0.75, "bar": "1min", "bars": 972_445},
        "windows": {"label_horizon": 15},
        "cv": {"samples": 139_222, "folds": [{"train_samples": 34e3, "stop_samples": 8e3,
                                              "val_samples": 24e3}] * 4},  # fmt: skip
        "search": {"samples": 139_222, "cpu_us_per_sample_fold": 8.0},
        "oos": {"accuracy": acc, "samples": 230_194},
        "resources": {"wall_seconds": 120.0, "peak_memory_gb": 2.1, "ray": {"num_cpus": 2},
                      "stages": {"search": 40.0, "train": 6.0, "learning_curve": 4.0}},
        "decision": {"verdict": "advance", "reasons": ["advance: ..."], "checks": []},
    }  # fmt: skip


def _curve(values: np.ndarray) -> dict:
    n = np.array([8_804, 17_407, 34_981, 139_222], dtype=float)
    points = [
        {"label": lab, "samples": int(k), "accuracy": v, "accuracy_se": 0.004, "log_loss": 0.69,
         "log_loss_se": 0.0006, "effective_samples": 15_346, "skill": 0.02, "skill_se": 0.005,
         "naive_accuracy": 0.5, "full": lab == "full"}
        for lab, k, v in zip(("1/16", "1/8", "1/4", "full"), n, values, strict=True)
    ]  # fmt: skip
    reps = noisy(values, 0.003, 300)
    return {
        "points": points,
        "replicates": {"accuracy": reps, "log_loss": 0.69 + 0 * reps},
        "fit_s": 1.0,
        "score_s": 2.0,
        "bootstrap": {"replicates": 300, "blocks": 124, "block": "1 session(s)"},
    }


def test_outlook_section_forecasts_the_shipped_phases_and_leaves_the_verdict(tmp_path):
    from types import SimpleNamespace

    from vpt_ray.pipeline.outlook import add_outlook

    cfg = load_config(1)
    ctx = SimpleNamespace(tracker_path=tmp_path / "T.md")  # no tracker yet: no earlier phase
    m = _metrics()
    out = add_outlook(cfg, ctx, m, _curve(np.array([0.524, 0.5235, 0.5298, 0.5293])))
    sec = out["scaling"]
    assert [f["phase"] for f in sec["forecast"]] == [2, 3, 4, 5]
    for f in sec["forecast"]:
        assert set(f) >= {"phase", "samples", "accuracy", "accuracy_lo", "accuracy_hi",
                          "log_loss", "wall_s", "peak_gb"}  # fmt: skip
        assert f["accuracy_lo"] <= f["accuracy"] <= f["accuracy_hi"]
    walls = [f["wall_s"] for f in sec["forecast"]]
    assert walls[0] < walls[1] < walls[2] < walls[3]  # more data, more time; phase 5 + ensemble
    assert sec["forecast"][3]["ensemble_s"] > 0 == sec["forecast"][2]["ensemble_s"]
    assert sec["learning_curve"]["cost_vs_final_fit"] == pytest.approx(4.0 / 6.0, abs=0.01)
    assert out["decision"]["verdict"] == "advance"
    assert out["decision"]["reasons"][0] == "advance: ..."
    assert out["decision"]["reasons"][-1].startswith("scaling outlook (information")
    assert out["decision"]["checks"][-1]["effect"] == "note"
    # a broken curve costs the run only its outlook
    bad = add_outlook(cfg, ctx, m, {"points": []})
    assert "error" in bad["scaling"] and bad["decision"] == m["decision"]
