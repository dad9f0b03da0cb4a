"""The search's time budget, from the phase's time limit rather than a fixed number.

Why it exists: a fixed `search.time_budget_s` (900 s) ended phase 4's search with 1 of 16 trials
fitted on every fold while the phase used 26 of its 240 minutes. The search is the one stage whose
length is a choice; the others follow from the data. So the budget is what `hardware.max_hours`
leaves after the other stages' expected time, estimated from the data size (logged), and the
number of trials is sized so that ASHA's rungs (or FIFO's full trials) fit in it: a trial that
cannot reach its last fold before the budget ends is not started.

The rates are measured on the 2-core / 24 GB development machine (shared, load 2-5), so they are
conservative for the 8-core reference workstation:
- other stages (data, features, CV, final fit, backtest, oracle, report): phase 4 as shipped spent
  ~636 s outside its 900 s search on 46.8 M bars (13.6 s per million bars), phase 1 ~47 s on
  0.97 M bars, of which ~40 s are fixed costs (Ray start-up, numba cache loads, the report);
- a search fold fit: CPU microseconds per (training + validation) sample, recorded by every run as
  metrics.json `search.cpu_us_per_sample_fold`: 7.6 in phase 1 and 16.1 in phase 3 as shipped
  (2026-12-04, load average 20-50); phase 4's 900 s search fitted roughly 30 M sample-folds on 2
  CPUs (~60), where the fold matrices are rebuilt from the sample file for every fit. 40 is
  assumed: a search planned longer than it runs ends by itself, one planned shorter is cut.
The estimate is doubled (`SAFETY`) before it is taken from the limit.
"""

from __future__ import annotations

import logging
import math

from vpt_ray.core.config import Config
from vpt_ray.core.console import RUN_LOG_ONLY

log = logging.getLogger("vpt_ray.budget")

FIXED_S = 60.0  # Ray start-up, numba cache loads, the oracle's tables, the report
OTHER_S_PER_M_BARS = 15.0  # data + features + cv + final fit + backtest, per million bars
FIT_CPU_S_PER_SAMPLE = 40e-6  # one fold fit, per training + validation sample
SAFETY = 2.0  # the other stages' estimate is doubled before it is taken from the limit
MIN_BUDGET_S = 60.0
NEAR_LIMIT = 0.5  # expected phase time / max_hours from which the budget is shown on the console


def other_stages_s(bars: int) -> float:
    """Expected seconds of every stage but the search, for `bars` bars in the feature store."""
    return FIXED_S + OTHER_S_PER_M_BARS * bars / 1e6


def fold_fits(n_trials: int, n_folds: int, cfg: Config) -> list[float]:
    """Expected number of trials that fit each fold: all of them under FIFO; under ASHA, a
    1/reduction_factor share survives each rung (after grace_folds, then x reduction_factor)."""
    s = cfg.search
    if s.scheduler != "asha":
        return [float(n_trials)] * n_folds
    rungs, r = [], float(min(s.grace_folds, n_folds))
    while r < n_folds:
        rungs.append(r)
        r *= s.reduction_factor
    out = []
    for fold in range(1, n_folds + 1):
        passed = sum(1 for g in rungs if g < fold)  # rungs already behind this fold
        out.append(max(1.0, n_trials / s.reduction_factor**passed))
    return out


def search_seconds(cfg: Config, n_trials: int, fold_sizes: list[int], num_cpus: int) -> float:
    """Expected wall seconds of a search of `n_trials` over folds of `fold_sizes` samples
    (training + validation), with the machine's CPUs kept busy by the trials."""
    fits = fold_fits(n_trials, len(fold_sizes), cfg)
    cpu = sum(n * size * FIT_CPU_S_PER_SAMPLE for n, size in zip(fits, fold_sizes, strict=True))
    cpus = min(cfg.search.cpus_per_trial, max(1, num_cpus))
    concurrent = max(1, min(n_trials, num_cpus // cpus))
    return cpu / (concurrent * cpus)


def plan(cfg: Config, bars: int, fold_sizes: list[int], num_cpus: int) -> dict:
    """The search's budget and trial count for this phase, and how they were derived.

    An explicit `search.time_budget_s` is kept as it is (source "config"); else the budget is
    max_hours minus SAFETY x the other stages' expected time. Either way the trials are cut to
    as many as the expected search time fits (never below 1), so the budget ends a search that
    ran slower than expected, not one that was planned too long."""
    limit = cfg.hardware.max_hours * 3600.0
    others = other_stages_s(bars)
    derived = max(MIN_BUDGET_S, limit - SAFETY * others)
    budget = cfg.search.time_budget_s or derived
    requested = cfg.search.num_samples
    trials = requested
    while trials > 1 and search_seconds(cfg, trials, fold_sizes, num_cpus) > budget:
        trials -= 1
    return {
        "time_budget_s": round(budget, 1),
        "source": "config" if cfg.search.time_budget_s else "hardware.max_hours",
        "max_hours": cfg.hardware.max_hours,
        "bars": bars,
        "other_stages_expected_s": round(others, 1),
        "search_expected_s": round(search_seconds(cfg, trials, fold_sizes, num_cpus), 1),
        "trials_requested": requested,
        "trials_planned": trials,
    }


def near_limit(p: dict) -> bool:
    """Whether the phase is expected to take at least NEAR_LIMIT of `hardware.max_hours`: the
    search's budget then matters to the user (else it is a ceiling the search never meets)."""
    expected = p["other_stages_expected_s"] + p["search_expected_s"]
    return expected >= NEAR_LIMIT * p["max_hours"] * 3600.0


def resolve(cfg: Config, bars: int, fold_sizes: list[int], num_cpus: int) -> tuple[Config, dict]:
    """`cfg` with the search's budget and trial count from `plan`, and the plan. The budget is
    logged to the run log; on the console only when the phase is expected near its time limit
    (a 4-minute phase is not told that it "may take 4 h")."""
    p = plan(cfg, bars, fold_sizes, num_cpus)
    near = near_limit(p)
    log.log(
        logging.WARNING if near else logging.INFO,
        "search budget %.0f s (%s)%s: the phase may take %g h; the other stages are expected to "
        "take %.0f s on %.1f M bars (x%g margin); %d of %d trials expected to take %.0f s",
        p["time_budget_s"],
        p["source"],
        ", near the phase's time limit" if near else "",
        p["max_hours"],
        p["other_stages_expected_s"],
        bars / 1e6,
        SAFETY,
        p["trials_planned"],
        p["trials_requested"],
        p["search_expected_s"],
        extra={} if near else RUN_LOG_ONLY,
    )
    if p["trials_planned"] < p["trials_requested"]:
        log.warning(
            "search: only %d of search.num_samples = %d trials fit the %.0f s budget "
            "(expected %.0f s each fold fit included); raise hardware.max_hours or "
            "search.time_budget_s, or lower the data (search.sample_days) for more",
            p["trials_planned"],
            p["trials_requested"],
            p["time_budget_s"],
            p["search_expected_s"],
        )
    search = cfg.search.model_copy(
        update={"time_budget_s": p["time_budget_s"], "num_samples": p["trials_planned"]}
    )
    return cfg.model_copy(update={"search": search}), p


def cpu_us_per_sample_fold(trials, fold_sizes: list[int]) -> float | None:
    """The search's measured CPU microseconds per sample per fold fit (the rate `plan` assumes
    as FIT_CPU_S_PER_SAMPLE), from the trials table's `cpu_time_s` and `folds_fitted`."""
    if trials is None or "cpu_time_s" not in trials or not len(trials):
        return None
    fitted = trials["folds_fitted"] if "folds_fitted" in trials else len(fold_sizes)
    cum = [sum(fold_sizes[: k + 1]) for k in range(len(fold_sizes))]
    samples = [cum[max(0, min(int(f), len(cum)) - 1)] for f in
               (fitted if hasattr(fitted, "__iter__") else [fitted] * len(trials))]  # fmt: skip
    total = sum(samples)
    cpu = float(trials["cpu_time_s"].fillna(0).sum())
    return round(cpu / total * 1e6, 2) if total and math.isfinite(cpu) and cpu > 0 else None
