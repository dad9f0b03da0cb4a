"""What a phase will cost on this machine before it runs: its data size from its config, its wall
time and peak memory from rates measured on the runs already made.

Why it exists: the scaling outlook (`vpt_ray.validation.scaling`) forecasts what the next phases
will reach; a user deciding whether to run one also needs what it will cost. The rates live in
one place: the reference rates are `vpt_ray.model.budget`'s (the search's budget uses them) plus
the memory rates below, and each forecast recalibrates them on measured runs (this run's
metrics.json and the tracker's earlier phases: `RunCost`).

The model (the forms bench/bench_scaling.py fits over sizes):
- size: tickers x sessions x bars a session (every bar of the feature store: training, the gap
  and the OOS window, plus phase 5's universe candidates); training samples = tickers x training
  sessions (or `cv.sample_days`) x bars a session / `labels.stride`; the search's samples the
  same over `search.sample_days`. Each estimate is rescaled by this run's measured / estimated
  ratio (half days, missing minutes, warm-up rows, the label cut at the window's end).
- wall = other + search + ensemble. other = fixed + rate x million bars (every stage but the
  search, and what runs between stages: Ray's start, the oracle, the report). With two or more
  measured sizes the line is fitted to them; with one, budget's reference line is scaled by the
  measured / reference ratio, the machine's `speed` (a loaded machine slows every stage alike:
  at a load average of 40 on 2 cores phase 1 ran ~6x slower than the reference rates). search =
  `budget.search_seconds` at the largest measured run's CPU microseconds per sample-fold
  (metrics.json `search.cpu_us_per_sample_fold`) times the same `speed`, ASHA's rungs as budget
  counts them and every trial on every fold otherwise (an upper bound under racing), capped at
  the phase's search budget. ensemble (phase 5) = its members but one x a final fit
  (`FIT_S_PER_M_SAMPLES` x `speed`; an upper bound: issue 29's ensemble fits only the weighted
  members in full and takes their CV fits from the trial cache).
- peak memory = fixed + rate x million training samples: fitted with two or more measured sizes,
  else the reference rate anchored at the measured run.

Pure functions of the config and the measurements (the calendar gives the sessions).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from vpt_ray.core.calendar import sessions
from vpt_ray.core.config import Config
from vpt_ray.model import budget

# Peak memory of a phase against its training samples: phases 1, 3 and 4 as shipped on the 2-core
# / 24 GB machine before issue 29 (README: 2.07 GB at 0.14 M samples, 2.71 GB at 1.6 M, 3.93 GB at
# 8.1 M): ~0.23 GB per million samples over a fixed ~2 GB (Ray, the object store's share, the
# driver). Re-measure with bench/bench_scaling.py when the search or the final fit change.
MEMORY_FIXED_GB = 2.0
MEMORY_GB_PER_M_SAMPLES = 0.23
# The final fit: phase 4 as shipped spent 341 s in `train` on 8.1 M samples (docs/scale.md).
FIT_S_PER_M_SAMPLES = 42.0


@dataclass(frozen=True)
class PhaseSize:
    """A phase's data: bars in its feature store, training samples, the search's samples and
    the labelled OOS bars (estimates, or measured for a run)."""

    phase: int
    tickers: int
    oos_tickers: int
    train_sessions: int
    oos_sessions: int
    bars: float
    samples: float
    search_samples: float
    oos_labels: float

    def scaled(self, ratios: dict[str, float]) -> PhaseSize:
        """This size with its counts multiplied by `ratios` (measured / estimated of a run)."""
        keys = ("bars", "samples", "search_samples", "oos_labels")
        return dataclasses.replace(self, **{k: getattr(self, k) * ratios.get(k, 1.0) for k in keys})


def _n_sessions(start, end, calendar: str) -> int:
    return len(sessions(start, end, calendar)) if end >= start else 0


def phase_size(cfg: Config) -> PhaseSize:
    """The data size `cfg` implies, from the exchange calendar (not rescaled)."""
    d, per = cfg.data, cfg.data.bars_per_session
    train = _n_sessions(d.start, d.end, d.calendar)
    if cfg.cv.sample_days:
        train = min(train, cfg.cv.sample_days)
    oos = _n_sessions(cfg.backtest.start, cfg.backtest.end, d.calendar)
    every = _n_sessions(d.start, cfg.backtest.end, d.calendar)
    tickers = len(d.tickers)
    bars = float(tickers * every * per)
    oos_tickers = tickers
    if cfg.universe.active:  # phase 5: backtested on the price band's selection
        u = cfg.universe
        oos_tickers = min(u.min_tickers, len(u.candidates))  # the fewest it may select
        bars += len(u.candidates) * (u.lookback_days + oos) * per
    stride = cfg.labels.stride
    searched = min(train, cfg.search.sample_days) if cfg.search.sample_days else train
    return PhaseSize(
        phase=cfg.phase,
        tickers=tickers,
        oos_tickers=oos_tickers,
        train_sessions=train,
        oos_sessions=oos,
        bars=bars,
        samples=tickers * train * per / stride,
        search_samples=tickers * searched * per / stride,
        oos_labels=float(oos_tickers * oos * per),
    )


@dataclass(frozen=True)
class RunCost:
    """What one run measured (metrics.json): its size, wall time, search and final-fit stages,
    peak memory and the search's CPU rate."""

    phase: int
    bars: float
    samples: float
    wall_s: float
    search_s: float
    train_s: float
    peak_gb: float
    cpu_us_per_sample_fold: float | None = None

    @classmethod
    def from_metrics(cls, m: dict) -> RunCost:
        res, stages = m["resources"], m["resources"].get("stages") or {}
        return cls(
            phase=int(m["phase"]),
            bars=float(m["data"]["bars"]),
            samples=float(m["cv"]["samples"]),
            wall_s=float(res["wall_seconds"]),
            search_s=float(stages.get("search", 0.0)),
            train_s=float(stages.get("train", 0.0)),
            peak_gb=float(res["peak_memory_gb"]),
            cpu_us_per_sample_fold=(m.get("search") or {}).get("cpu_us_per_sample_fold"),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunCost | None:
        """The run's costs from a tracker row's record, None when it lacks one."""
        try:
            return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
        except (TypeError, KeyError):
            return None


@dataclass(frozen=True)
class Rates:
    """The cost model's rates and where each came from."""

    fixed_s: float
    other_s_per_m_bars: float
    speed: float  # time on this machine / the reference rates' (1 = as measured for budget)
    fit_s_per_m_samples: float
    cpu_us_per_sample_fold: float
    memory_fixed_gb: float
    memory_gb_per_m_samples: float
    source: dict

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Least-squares intercept and slope, None unless both come out >= 0 (two sizes at least)."""
    if len(np.unique(x)) < 2:
        return None
    slope, icpt = np.polyfit(x, y, 1)
    return (float(icpt), float(slope)) if slope >= 0 and icpt >= 0 else None


def calibrate(runs: list[RunCost]) -> Rates:
    """The rates from measured runs (empty: the reference rates)."""
    bars_m = np.array([r.bars / 1e6 for r in runs])
    other = np.array([max(0.0, r.wall_s - r.search_s) for r in runs])
    fixed, per_bars = budget.FIXED_S, budget.OTHER_S_PER_M_BARS
    src: dict = {"other": "reference (model.budget)", "search": "reference (model.budget)"}
    speed = 1.0
    if runs and (fit := _line(bars_m, other)) is not None:
        (fixed, per_bars), src["other"] = fit, f"fitted to {len(runs)} runs"
        speed = per_bars / budget.OTHER_S_PER_M_BARS
    elif runs:
        speed = float(other.sum() / np.sum(fixed + per_bars * bars_m))
        fixed, per_bars = speed * fixed, speed * per_bars
        src["other"] = f"reference scaled x{speed:.2f} to the {len(runs)} measured run(s)"
    largest = max(runs, key=lambda r: r.samples) if runs else None
    cpu = budget.FIT_CPU_S_PER_SAMPLE * 1e6
    measured_cpu = [r for r in runs if r.cpu_us_per_sample_fold]
    if measured_cpu:
        big = max(measured_cpu, key=lambda r: r.samples)
        cpu, src["search"] = float(big.cpu_us_per_sample_fold), f"measured in phase {big.phase}"
    samples_m = np.array([r.samples / 1e6 for r in runs])
    peaks = np.array([r.peak_gb for r in runs])
    mem_fixed, mem_rate = MEMORY_FIXED_GB, MEMORY_GB_PER_M_SAMPLES
    src["memory"] = "reference (model.cost_model)"
    if runs and (mfit := _line(samples_m, peaks)) is not None:
        (mem_fixed, mem_rate), src["memory"] = mfit, f"fitted to {len(runs)} runs"
    elif largest is not None:
        mem_fixed = max(0.0, largest.peak_gb - mem_rate * largest.samples / 1e6)
        src["memory"] = f"reference rate anchored at phase {largest.phase}'s peak"
    fit_rate = FIT_S_PER_M_SAMPLES * speed
    return Rates(fixed, per_bars, speed, fit_rate, cpu, mem_fixed, mem_rate, src)


def fold_shares(folds: list[dict], searched: int) -> list[float]:
    """Each search fold's samples (fit + early stopping + validation) as a share of the searched
    samples, from metrics.json's `cv.folds`: how a phase's folds scale with its data."""
    if not folds or searched <= 0:
        return []
    return [
        (f.get("train_samples", 0) + f.get("stop_samples", 0) + f.get("val_samples", 0)) / searched
        for f in folds
    ]


def phase_cost(
    cfg: Config, size: PhaseSize, rates: Rates, num_cpus: int, shares: list[float]
) -> dict:
    """Expected wall seconds (and their parts) and peak memory of the phase `cfg` of `size` on a
    machine with `num_cpus` CPUs."""
    other = rates.fixed_s + rates.other_s_per_m_bars * size.bars / 1e6
    folds = [max(1, int(s * size.search_samples)) for s in shares] or [int(size.search_samples)]
    plan = budget.plan(cfg, int(size.bars), folds, max(1, num_cpus))
    search = budget.search_seconds(cfg, plan["trials_planned"], folds, max(1, num_cpus))
    search *= rates.speed * rates.cpu_us_per_sample_fold * 1e-6 / budget.FIT_CPU_S_PER_SAMPLE
    search = min(search, plan["time_budget_s"])
    ens = cfg.model.ensemble
    members = len(ens.seeds) * ens.top_k - 1 if ens.enabled else 0  # the single model reused
    ensemble = members * rates.fit_s_per_m_samples * size.samples / 1e6
    peak = rates.memory_fixed_gb + rates.memory_gb_per_m_samples * size.samples / 1e6
    wall = other + search + ensemble
    return {
        "wall_s": round(wall, 1) if math.isfinite(wall) else None,
        "other_s": round(other, 1),
        "search_s": round(search, 1),
        "ensemble_s": round(ensemble, 1),
        "trials": plan["trials_planned"],
        "peak_gb": round(peak, 2),
    }
