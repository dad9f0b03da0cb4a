"""What a search returns and how it is described: `SearchResult`, the trials' statuses, how a
search ended, its trials table rows, metrics.json's `search` section and summary.md's line.

Split from `vpt_ray.model.search` (which runs the search on Ray Tune) so that the readers of a
result (resume cache, report, honesty, ensemble) need none of Tune's machinery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from ray import tune

from vpt_ray.core.config import Config
from vpt_ray.core.config_sections import SEARCH_PARAMS
from vpt_ray.features.store import Matrix
from vpt_ray.model.metrics import VAL_LOG_LOSS

log = logging.getLogger("vpt_ray.search")

Folds = list[tuple[np.ndarray, np.ndarray]]

FOLDS_DONE = "folds_done"  # in every trial report: folds fitted so far (the ASHA time unit)
FOLDS_CACHED = "folds_cached"  # of those, served by the trial cache (`model.trial_cache`)


# A trial's status in the trials table: stopped early = by ASHA's rung or the race's test;
# stopped by the race = still running when the race settled (`vpt_ray.model.racing`).
COMPLETED, STOPPED_EARLY, STOPPED_BY_BUDGET, STOPPED_BY_RACE = (
    "completed",
    "stopped_early",
    "stopped_by_budget",
    "stopped_by_race",
)


# How a search ended (`SearchResult.info["ended_by"]`); all but "interrupted" are a search's own
# rule, so only those results may be cached and reused (`vpt_ray.pipeline.resume`).
ENDED_ALL, ENDED_ASHA, ENDED_BUDGET, ENDED_RACE, ENDED_INTERRUPTED = (
    "all_trials",
    "asha",
    "time_budget",
    "race",
    "interrupted",
)


OWN_ENDINGS = (ENDED_ALL, ENDED_ASHA, ENDED_BUDGET, ENDED_RACE)


@dataclass
class SearchResult:
    """The search's outcome. `trials` has one row per configuration that reported at least one
    fold: first the trials that fitted every fold (`status` "completed"), best first, then those
    stopped earlier (ASHA or the time budget; `folds_fitted` says how far they got, their
    `val_log_loss` is NaN and `partial_val_log_loss` is the mean over the folds fitted).
    `fold_scores` and `daily_perf` cover the completed trials only, in the table's order, so
    column i is row i of `completed_trials`. `info`: how the search ran (`search_info`)."""

    best_params: dict
    best: dict  # fit_folds() output of the best trial
    trials: pd.DataFrame  # one row per trial, completed best first, then the stopped ones
    fold_scores: np.ndarray  # (n_folds, n_completed) validation log loss, same trial order
    daily_perf: pd.DataFrame  # (validation days, n_completed) after-cost return (backtest.proxy)
    info: dict = field(default_factory=dict)

    @property
    def completed_trials(self) -> pd.DataFrame:
        """The trials that fitted every fold (the only ones that can be chosen), best first."""
        if "status" not in self.trials:
            return self.trials
        return self.trials[self.trials["status"] == COMPLETED]


def cut_status(r: tune.Result, settled: bool = False) -> str:
    """A trial that did not fit every fold: stopped by ASHA or the race's test (Tune marks the
    stop `done`), or by the end of the search (the time budget, or the race settling), which
    leaves it not done."""
    if r.metrics.get("done"):
        return STOPPED_EARLY
    return STOPPED_BY_RACE if settled else STOPPED_BY_BUDGET


def table_row(r: tune.Result, status: str, n_folds: int) -> dict:
    row = {k: r.config[k] for k in SEARCH_PARAMS}
    done = int(r.metrics.get(FOLDS_DONE, n_folds))
    if status == COMPLETED:
        row.update({k: r.metrics[k] for k in TABLE_KEYS if k in r.metrics})
    else:  # only the running mean is known; the full-fold figures stay NaN
        row.update({k: r.metrics[k] for k in TABLE_KEYS[7:] if k in r.metrics})
        row[VAL_LOG_LOSS] = float("nan")
    row.update(
        status=status,
        folds_fitted=done,
        partial_val_log_loss=float(r.metrics[VAL_LOG_LOSS]),
    )
    return row


def search_info(
    cfg: Config,
    m: Matrix,
    folds: Folds,
    completed: list,
    cut: list,
    failed: int,
    elapsed: float,
    settled: str | None = None,
) -> dict:
    """How the search ran, for metrics.json's `search` section and summary.md: the scheduler,
    trial counts by outcome, whether the time budget or the race (`settled`: why it settled)
    ended it, and the data it searched on."""
    s = cfg.search
    early = sum(cut_status(r) == STOPPED_EARLY for r in cut)
    not_reported = max(0, s.num_samples - len(completed) - len(cut) - failed)
    by_race = sum(cut_status(r, bool(settled)) == STOPPED_BY_RACE for r in cut)
    by_budget = len(cut) - early - by_race
    unfinished = by_budget + not_reported
    hit = unfinished > 0 and s.time_budget_s is not None and elapsed >= s.time_budget_s
    if not hit and (settled or (early and s.scheduler == "race")):
        ended = ENDED_RACE
    elif unfinished and not hit:
        log.warning(
            "search: %d trials did not finish although the time budget was not reached "
            "(%.0f of %s s): the search was interrupted",
            unfinished,
            elapsed,
            s.time_budget_s,
        )
        ended = ENDED_INTERRUPTED
    else:
        ended = ENDED_BUDGET if hit else ENDED_ASHA if early else ENDED_ALL
    info = {
        "scheduler": s.scheduler,
        "trials_requested": s.num_samples,
        "trials_completed": len(completed),
        "trials_stopped_early": early,
        "trials_stopped_by_budget": by_budget,
        "trials_stopped_by_race": by_race,
        "trials_not_reported": not_reported,
        "trials_failed": failed,
        "stopped_by_budget": bool(hit),
        "ended_by": ended,  # all_trials | asha | time_budget | race | interrupted (never cached)
        "time_budget_s": s.time_budget_s,
        "elapsed_s": round(elapsed, 1),
        "folds": len(folds),
        "sample_days": s.sample_days,  # null = every training sample
        "samples": len(m),
        "sessions": int(len(np.unique(m.pos // m.slots))),
        "fold_fits": int(sum(r.metrics.get(FOLDS_DONE, 0) for r in [*completed, *cut])),
        "fold_fits_from_cache": int(
            sum(r.metrics.get(FOLDS_CACHED, 0) for r in [*completed, *cut])
        ),
    }
    if s.scheduler == "asha":
        info.update(grace_folds=s.grace_folds, reduction_factor=s.reduction_factor)
    if s.scheduler == "race":
        info.update(
            race_alpha=s.race_alpha,
            race_min_trials=s.race_min_trials,
            grace_folds=max(2, s.grace_folds),
            race_settled=settled,  # why the race ended the search (None: it did not)
        )
    return info


def summary_line(section: dict) -> str:
    """summary.md's search line from metrics.json's `search` section."""
    parts = [f"{section['trials']} trials"]
    if section.get("scheduler") == "asha":
        parts.append(
            f"ASHA over the {section['folds']} folds (grace {section['grace_folds']}, "
            f"reduction {section['reduction_factor']:g}): {section['trials_completed']} fitted "
            f"every fold, {section['trials_stopped_early']} stopped early"
        )
    if section.get("scheduler") == "race":
        parts.append(
            f"raced over the {section['folds']} folds (paired t-tests at alpha "
            f"{section['race_alpha']:g}): {section['trials_completed']} fitted every fold, "
            f"{section['trials_stopped_early']} stopped as worse than the best"
            + (
                f"; settled: {section['race_settled']}, {section['trials_not_reported']} not "
                "started"
                if section.get("race_settled")
                else ""
            )
        )
    if section.get("stopped_by_budget"):
        parts.append(
            f"time budget of {section['time_budget_s']:g} s reached: "
            f"{section['trials_stopped_by_budget']} cut short, "
            f"{section['trials_not_reported']} ended before reporting a fold"
        )
    if section.get("sample_days"):
        parts.append(
            f"searched on {section['sessions']} sampled sessions ({section['samples']:,} "
            "samples, search.sample_days, seeded, one per equal stratum); the final model is fit "
            "on the whole training set"
        )
    return f"- Search: {'; '.join(parts)}; best {section['best_params']}"


# What the trials table keeps: our figures, not Tune's bookkeeping (pids, hosts, dates).
TABLE_KEYS = (
    VAL_LOG_LOSS,
    "val_accuracy",
    "val_auc",
    "train_accuracy",
    "train_log_loss",
    "train_val_gap",
    "rounds",
    "trial_id",
    "time_total_s",
    "cpu_time_s",
)


# What the best trial's result keeps: the mean figures and the per-fold detail.
RESULT_KEYS = {*TABLE_KEYS[:7], "folds"}
