"""The scaling outlook of a phase (metrics.json `scaling`): the learning curve measured inside
the run, its fit together with the tracker's earlier phases, and the forecast of the later
phases' OOS accuracy, log loss, wall time and peak memory.

Two steps, called by `phase.run_phase`:
- `learning_curve` (the stage of that name, after the backtest): the chosen configuration
  refitted on nested fractions of the training sessions and every fit scored on the OOS window
  (`vpt_ray.model.learning_curve`), each point's figures against the naive predictor and the
  block-bootstrap replicates (`vpt_ray.validation.learning_curve`).
- `add_outlook` (with the metrics): the fit, the forecast for phases cfg.phase+1..5 as shipped
  (config/phaseN.yaml with this run's bar size, labels and hardware), their costs
  (`vpt_ray.model.cost_model`, calibrated on this run and the tracker's earlier phases), the
  summary's sentence and the decision's "scaling outlook" line, which never changes the verdict.
"""

from __future__ import annotations

import functools
import logging
import time

import numpy as np
import xgboost as xgb

from vpt_ray.core.config import Config, ConfigError, load_config
from vpt_ray.core.run import RunContext
from vpt_ray.features.store import Matrix
from vpt_ray.model import cost_model
from vpt_ray.model.learning_curve import (
    CurveFit,
    fit_curve,
    majority_direction,
    plan_fits,
    score_oos,
)
from vpt_ray.model.search_result import SearchResult
from vpt_ray.report import tracker
from vpt_ray.report.outlook import market_key, outlook_check, sentence
from vpt_ray.validation import scaling
from vpt_ray.validation.learning_curve import (
    block_ids,
    block_sums,
    point_figures,
    replicate_figures,
)
from vpt_ray.validation.uncertainty import effective_samples

log = logging.getLogger("vpt_ray.outlook")


def learning_curve(
    cfg: Config,
    m: Matrix,
    search: SearchResult,
    booster: xgb.Booster,
    store: dict[str, dict],
    names: list[str],
    num_cpus: float,
) -> dict | None:
    """The curve's points (smallest fraction first, the final model last, `full`) with their OOS
    figures, and the bootstrap replicates of every point's accuracy and log loss; None when
    `scaling.learning_curve` is off or no fraction can be fitted."""
    sc = cfg.scaling
    if not sc.learning_curve:
        return None
    folds = search.best["folds"]
    fits, rows = plan_fits(
        cfg, m, [f["rounds"] for f in folds], [f["train_samples"] for f in folds]
    )
    if not fits:
        log.info("learning curve: no fraction of the %d training samples to fit", len(m))
        return None
    t0 = time.perf_counter()
    fit_curve(cfg, m, search.best_params, fits, rows, max(1, int(num_cpus)))
    fit_s = time.perf_counter() - t0
    full = CurveFit(
        "full", 1.0, 0, int(len(np.unique(m.pos // m.slots))), len(m), majority_direction(m.y),
        int(booster.num_boosted_rounds()), booster,
    )  # fmt: skip
    fits.append(full)
    t1 = time.perf_counter()
    scored = score_oos(cfg, [f.booster for f in fits], store, names)
    score_s = time.perf_counter() - t1
    y = np.concatenate([r["y"] for r in scored.values()])
    P = np.concatenate([r["p"] for r in scored.values()], axis=1)
    session = np.concatenate([r["session"] for r in scored.values()])
    overlap = effective_samples(1, 1, cfg.labels.horizon)
    points = []
    for k, f in enumerate(fits):  # `samples`: the training samples; `oos_samples`: the labels
        oos = point_figures(y, P[k], f.majority, overlap)
        points.append({**oos, "oos_samples": oos["samples"], **f.summary(), "full": f is full})
    per_block = cfg.labels.horizon if cfg.data.bar == "1day" else 1
    blocks = block_ids(session, per_block)
    n_blocks = int(blocks.max()) + 1 if len(blocks) else 0
    sums = [block_sums(y, P[k], blocks, n_blocks) for k in range(len(fits))]
    rep_acc, rep_ll = replicate_figures(sums, sc.bootstrap, seed=cfg.search.seed)
    log.info(
        "learning curve: %s; fits %.1f s, OOS scoring %.1f s",
        ", ".join(f"{p['label']} {p['samples']:,} samples -> {p['accuracy']:.4f}" for p in points),
        fit_s,
        score_s,
    )
    return {
        "points": points,
        "replicates": {"accuracy": rep_acc, "log_loss": rep_ll},
        "fit_s": round(fit_s, 2),
        "score_s": round(score_s, 2),
        "bootstrap": {
            "replicates": sc.bootstrap,
            "blocks": n_blocks,
            "block": f"{per_block} session(s) of every ticker",
        },
    }


@functools.cache
def _shipped(phase: int) -> Config:
    """config/phaseN.yaml as shipped, loaded once per process (validating phase 5's universe and
    the calendar checks take seconds; tests run many phases in one process)."""
    return load_config(phase)


def later_phases(cfg: Config) -> list[Config]:
    """Phases cfg.phase+1..5 as shipped (config/phaseN.yaml) with this run's bar size, calendar,
    labels and hardware: what the user would run next on this market and machine."""
    out = []
    for k in range(cfg.phase + 1, 6):
        try:
            other = _shipped(k)
        except ConfigError as exc:
            log.warning("scaling outlook: phase %d's config not loaded (%s): not forecast", k, exc)
            continue
        data = other.data.model_copy(update={"bar": cfg.data.bar, "calendar": cfg.data.calendar})
        out.append(
            other.model_copy(update={"data": data, "labels": cfg.labels, "hardware": cfg.hardware})
        )
    return out


def earlier_rows(cfg: Config, ctx: RunContext, market: dict) -> list[dict]:
    """The tracker's latest run of each earlier phase on the same market (its scaling record)."""
    latest = tracker.load_state(ctx.tracker_path)["latest"]
    out = []
    for p in sorted(int(k) for k in latest):
        rec = (latest[str(p)] or {}).get("scaling")
        usable = rec and all(rec.get(k) is not None for k in scaling.POINT_KEYS)
        if p < cfg.phase and usable and rec.get("market") == market:
            out.append({"phase": p, "run_id": latest[str(p)]["run_id"], **rec})
    return out


def _ratios(cfg: Config, metrics: dict) -> dict[str, float]:
    """This run's measured / estimated counts (`cost_model.phase_size`)."""
    est = cost_model.phase_size(cfg)
    measured = {
        "bars": metrics["data"]["bars"],
        "samples": metrics["cv"]["samples"],
        "search_samples": (metrics.get("search") or {}).get("samples") or metrics["cv"]["samples"],
        "oos_labels": metrics["oos"]["samples"],
    }
    return {k: v / getattr(est, k) for k, v in measured.items() if v and getattr(est, k) > 0}


def add_outlook(cfg: Config, ctx: RunContext, metrics: dict, curve: dict | None) -> dict:
    """`metrics` with `scaling` and the decision's outlook line (information: the verdict is
    left as it is). The outlook never costs a run its results: a failure here is logged and
    recorded as `scaling.error`, without the line."""
    if curve is None:
        return metrics
    try:
        section = outlook_section(cfg, ctx, metrics, curve)
    except Exception as exc:  # noqa: BLE001 - information only: the run's results stand
        log.exception("scaling outlook failed")
        return {**metrics, "scaling": {"error": f"{type(exc).__name__}: {exc}"}}
    decision = metrics["decision"]
    check = outlook_check(section)
    log.info("scaling outlook: %s", section["sentence"])
    return {
        **metrics,
        "scaling": section,
        "decision": {
            **decision,
            "reasons": [*decision["reasons"], check["line"]],
            "checks": [*decision.get("checks", []), check],
        },
    }


def fit_points(
    curve: dict, earlier: list[dict], seed: int
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The fit's points and replicates: this run's curve (its block-bootstrap replicates) and
    each earlier phase's point, redrawn from its own SE in every replicate (its OOS window is
    another one, independent of this run's)."""
    points = [{**p, "source": f"this run, {p['label']}"} for p in curve["points"]]
    reps = dict(curve["replicates"])
    rng = np.random.default_rng(seed)
    for row in earlier:
        points.append({**{k: row.get(k) for k in scaling.POINT_KEYS}, "full": False,
                       "source": f"phase {row['phase']} ({row['run_id']})"})  # fmt: skip
        for fig in reps:
            draw = row[fig] + rng.standard_normal(len(reps[fig])) * (row.get(f"{fig}_se") or 0.0)
            reps[fig] = np.column_stack([reps[fig], draw])
    return points, reps


def outlook_section(cfg: Config, ctx: RunContext, metrics: dict, curve: dict) -> dict:
    """metrics.json `scaling`: the curve, the fit with the tracker's earlier phases, the
    forecast of phases cfg.phase+1..5 with their costs, and the sentence."""
    market = market_key(metrics)
    earlier = earlier_rows(cfg, ctx, market)
    points, reps = fit_points(curve, earlier, cfg.search.seed + 1)
    ratios = _ratios(cfg, metrics)
    overlap = effective_samples(1, 1, cfg.labels.horizon)
    phases = later_phases(cfg)
    sizes = [cost_model.phase_size(c).scaled(ratios) for c in phases]
    targets = [
        {"phase": c.phase, "samples": s.samples, "oos_effective_samples": s.oos_labels * overlap}
        for c, s in zip(phases, sizes, strict=True)
    ]
    sc = cfg.scaling
    fitted = scaling.outlook(
        points, reps["accuracy"], reps["log_loss"], targets, sc.level, sc.gain, cfg.search.seed,
    )  # fmt: skip
    runs = [cost_model.RunCost.from_metrics(metrics)]
    runs += [r for r in (cost_model.RunCost.from_dict(e.get("cost") or {}) for e in earlier) if r]
    rates = cost_model.calibrate(runs)
    searched = (metrics.get("search") or {}).get("samples") or metrics["cv"]["samples"]
    shares = cost_model.fold_shares(metrics["cv"].get("folds") or [], int(searched))
    num_cpus = int(metrics["resources"].get("ray", {}).get("num_cpus") or 1)
    for row, c, s in zip(fitted["forecast"], phases, sizes, strict=True):
        row.update(cost_model.phase_cost(c, s, rates, num_cpus, shares))
        row["oos_labels"] = int(round(s.oos_labels))
    stages = metrics["resources"].get("stages") or {}
    lc_s, train_s = stages.get("learning_curve"), stages.get("train")
    section = {
        **fitted,
        "learning_curve": {
            "points": curve["points"],
            "fit_s": curve["fit_s"],
            "score_s": curve["score_s"],
            "stage_s": lc_s,
            "final_fit_s": train_s,
            "cost_vs_final_fit": round(lc_s / train_s, 2) if lc_s and train_s else None,
            "bootstrap": curve["bootstrap"],
        },
        "earlier_phases": [
            {k: e.get(k) for k in ("phase", "run_id", *scaling.POINT_KEYS)} for e in earlier
        ],
        "costs": {"rates": rates.to_dict(), "num_cpus": num_cpus, "size_ratios": ratios},
        "market": market,
    }
    section["sentence"] = sentence(section, metrics)
    return section
