"""Hyperparameter search on Ray Tune: each trial fits the purged CV folds with plain XGBoost.

Layout follows Ray Tune's XGBoost example: fold fitting (a plain function, also used by the
benchmark's plain loop) -> trainable -> search space -> `Tuner` -> best result. No float matrix
travels: the trials get the sample file (`vpt_ray.features.samples`: the features on local disk)
and the folds as row ids, and each builds one fold's quantized matrices at a time from the file, so
a worker's memory is one fold's quantized matrix, not the pooled floats plus every fold's matrices
(issue 6; rebuilding a fold costs a fraction of boosting it). The objective is the mean
validation log loss over the folds.

Early stopping never sees the validation fold: each fold's training part is split
(`cv.early_stopping_folds`) into the rows the booster is fit on and its last sessions
(`cv.early_stopping_fraction`, purged and embargoed from the fit rows), on which the rounds are
chosen; the validation fold is then scored untouched, so `cv.accuracy`, the train-validation gap
and PBO's inputs are not flattered by the choice of rounds. Each trial also trades its
validation predictions like the backtest (`backtest.proxy`): its per-day returns after costs
feed PBO and the deflated Sharpe's spread of trial Sharpe ratios.

`search.scheduler`: `fifo` fits every fold of every trial. `asha` races the configurations over
the folds (successive halving, Tune's `ASHAScheduler` with the folds fitted as its time unit):
a trial reports its running mean validation log loss after each fold and is stopped at a rung
(after `grace_folds`, then x `reduction_factor` folds) unless it is in the best
1/`reduction_factor` of the trials that reached that rung. Walk-forward folds grow, so the early
folds are the cheap ones and a poor configuration costs a fraction of a full trial. Only trials
that fitted every fold can be chosen (every trial is compared on the same folds); the stopped ones
stay in the trials table with the number of folds they fitted, and the overfitting statistics
count them as tried (`vpt_ray.validation.honesty`).

`search.time_budget_s` caps the search's wall time (Tune's own budget); a budget that cuts the
search short is logged and recorded in `SearchResult.info`, and the run goes on with the trials
that fitted every fold.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.stopper import CombinedStopper

from vpt_ray.backtest.proxy import trade_proxy
from vpt_ray.core import interrupt, tracking
from vpt_ray.core.config import Config
from vpt_ray.core.config_sections import SEARCH_PARAMS, SearchSpace
from vpt_ray.core.console import library_output_to_log, tune_loggers
from vpt_ray.core.memory_sampler import check_memory, memory_exceeded, wait_for_exit
from vpt_ray.core.node_memory import node_label
from vpt_ray.core.resources import MB, clamp_task_memory, trial_bytes, xgb_matrix_bytes
from vpt_ray.features.samples import SampleFile
from vpt_ray.features.store import Matrix
from vpt_ray.model.cv import EarlyStopFold, early_stopping_folds
from vpt_ray.model.folds import Folds, iter_folds, summarize_folds
from vpt_ray.model.metrics import VAL_LOG_LOSS
from vpt_ray.model.search_progress import SearchProgress

log = logging.getLogger("vpt_ray.search")

_WORKER_SAMPLES: dict[tuple[str, int], tuple] = {}


FOLDS_DONE = "folds_done"  # in every trial report: folds fitted so far (the ASHA time unit)


# A trial's status in the trials table.
COMPLETED, STOPPED_EARLY, STOPPED_BY_BUDGET = "completed", "stopped_early", "stopped_by_budget"


# How a search ended (`SearchResult.info["ended_by"]`); only the first three are a search's own
# rule, so only those results may be cached and reused (`vpt_ray.pipeline.resume`).
ENDED_ALL, ENDED_ASHA, ENDED_BUDGET, ENDED_INTERRUPTED = (
    "all_trials",
    "asha",
    "time_budget",
    "interrupted",
)


OWN_ENDINGS = (ENDED_ALL, ENDED_ASHA, ENDED_BUDGET)


TRIAL_TITLE = "ray::ImplicitFunc"  # Tune's function-trainable actors, as ps shows them


def _trainable(
    config: dict,
    samples: SampleFile,
    folds: list[EarlyStopFold],
    settings: dict,
    race: bool = False,
) -> None:
    """One trial. Racing (ASHA) reports the running mean validation log loss after every fold
    but the last, so the scheduler can stop it there (Tune then ends this thread inside
    `tune.report`); the last report is the full result either way. `cpu_time_s`: the trial's CPU
    seconds so far (its worker process), a cost measure that other tenants' load does not skew.

    The fold indices point into `samples`, read from this node's disk (`SampleFile.local`)."""
    cpu0 = time.process_time()
    settings = dict(settings)
    X, y, fwd_ret, day, pos = _worker_samples(samples, settings.pop("slots"))
    per_fold, daily = [], []
    for record, d in iter_folds(config, X, y, folds, fwd_ret=fwd_ret, day=day, pos=pos, **settings):
        per_fold.append(record)
        if d is not None:
            daily.append(d)
        if race and len(per_fold) < len(folds):
            running = float(np.mean([f["val_log_loss"] for f in per_fold]))
            cpu = time.process_time() - cpu0
            tune.report({VAL_LOG_LOSS: running, FOLDS_DONE: len(per_fold), "cpu_time_s": cpu})
    result = summarize_folds(per_fold, daily)
    result[FOLDS_DONE] = len(per_fold)
    result["cpu_time_s"] = time.process_time() - cpu0
    result["node"] = node_label()  # the progress line and the run's placement name it
    # Tune's loggers take scalars only: the per-fold and per-day detail travel as JSON strings.
    result["folds"] = json.dumps(result["folds"])
    result["val_daily"] = json.dumps(result["val_daily"])
    tune.report(result)


def _worker_samples(
    samples: SampleFile, slots: int
) -> tuple[SampleFile, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sample file on this node and its label, forward-return, session and clock-position
    columns, kept per worker process between trials (~20 bytes a sample; the features stay on
    disk)."""
    key = (samples.rule.key(), samples.rows)
    if key not in _WORKER_SAMPLES:
        _WORKER_SAMPLES.clear()  # another run's
        local = samples.local()
        pos = local.column("pos")
        day = (pos // slots).astype(np.int32)
        _WORKER_SAMPLES[key] = (local, local.column("y"), local.column("fwd_ret"), day, pos)
    return _WORKER_SAMPLES[key]


def search_space(space: SearchSpace) -> dict:
    """Tune distributions from the config's bounds (log-uniform for scale parameters)."""
    return {
        "max_depth": tune.randint(space.max_depth[0], space.max_depth[1] + 1),
        "learning_rate": tune.loguniform(*space.learning_rate),
        "subsample": tune.uniform(*space.subsample),
        "colsample_bytree": tune.uniform(*space.colsample_bytree),
        "min_child_weight": tune.loguniform(*space.min_child_weight),
        "reg_alpha": tune.loguniform(*space.reg_alpha),
        "reg_lambda": tune.loguniform(*space.reg_lambda),
    }


class MemoryStop(tune.Stopper):
    """Ends the whole search once the run's memory passed `hardware.memory_limit_gb` (checked
    each time a trial reports); `run_search` then raises the clean stop."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return memory_exceeded()


class InterruptStop(tune.Stopper):
    """Ends the whole search once the run received SIGINT/SIGTERM (`vpt_ray.core.interrupt`): Tune
    polls `stop_all` on every step of its loop, stops the trials and returns, and `run_search`
    raises `RunInterrupted` instead of going on with the trials done so far."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return interrupt.requested() is not None


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


def make_scheduler(cfg: Config, n_folds: int) -> ASHAScheduler | None:
    """Tune's ASHA over the folds for `search.scheduler: asha`; None (FIFO) otherwise."""
    s = cfg.search
    if s.scheduler != "asha":
        return None
    if s.grace_folds >= n_folds:
        log.warning(
            "search.grace_folds = %d >= the %d folds: ASHA has no rung before the last fold "
            "and stops no trial (every trial fits every fold)",
            s.grace_folds,
            n_folds,
        )
    return ASHAScheduler(
        time_attr="training_iteration",  # = folds fitted: one report per fold
        max_t=n_folds,
        grace_period=min(s.grace_folds, n_folds),
        reduction_factor=s.reduction_factor,
    )


def run_search(
    cfg: Config,
    m: Matrix,
    folds: Folds,
    storage: Path | str,
    num_cpus: int,
    storage_filesystem: object
    | None = None,  # a pyarrow.fs.FileSystem: gs:// (vpt_ray.core.storage)
    prices: list[float | None] | None = None,
) -> SearchResult:
    """Search `cfg.search.num_samples` configurations within the time budget; best by val loss
    among the trials that fitted every fold. Each fold's training part is split for early
    stopping (`cv.early_stopping_folds`); `prices` (each ticker code's median training close)
    set the commissions of the trials' after-cost validation returns (`backtest.proxy`)."""
    cpus = min(cfg.search.cpus_per_trial, max(1, num_cpus))
    if cpus < cfg.search.cpus_per_trial:  # a trial asking for more CPUs than Ray has never runs
        log.info(
            "search.cpus_per_trial = %d clamped to the %d CPUs Ray has: one trial at a time",
            cfg.search.cpus_per_trial,
            cpus,
        )
    settings = {
        "n_estimators": cfg.model.n_estimators,
        "early_stopping_rounds": cfg.model.early_stopping_rounds,
        "max_bin": cfg.model.max_bin,
        "nthread": cpus,
        "slots": m.slots,
        "cache_token": f"{storage}:{m.samples.rule.key()}:{len(m)}:{time.time_ns()}",
        "cache_bytes": cfg.search.fold_cache_mb * MB,
    }
    if m.samples is None:
        raise ValueError("run_search needs the samples on disk (store.load_samples)")
    rows = m.sample_rows()  # fold indices -> rows of the sample file, int32 in the object store
    es_folds = early_stopping_folds(
        folds, m.pos, m.label_end, m.slots, cfg.cv.early_stopping_fraction, cfg.embargo_bars
    )
    file_folds = [EarlyStopFold(*(rows[part].astype(np.int32) for part in f)) for f in es_folds]
    ticker_by_row = np.zeros(m.samples.rows, dtype=np.int16)
    ticker_by_row[rows] = m.ticker
    n_codes = int(m.ticker.max()) + 1 if len(m) else 1
    settings["proxy"] = trade_proxy(cfg, ticker_by_row, list(prices or [None] * n_codes))
    concurrent = max(1, num_cpus // cpus)
    memory = trial_bytes(
        max(sum(map(len, f)) for f in es_folds), len(m.feature_names), m.samples.rows
    ) + min(
        settings["cache_bytes"],
        xgb_matrix_bytes(sum(map(len, sum(folds, ()))), 1) * len(m.feature_names),
    )
    scheduler = make_scheduler(cfg, len(folds))
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable,
            samples=m.samples,
            folds=file_folds,
            settings=settings,
            race=scheduler is not None,
        ),
        {"cpu": cpus, "memory": clamp_task_memory(memory, concurrent, "search trial")},
    )
    budget = cfg.search.time_budget_s
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(cfg.search.space),
        tune_config=tune.TuneConfig(
            metric=VAL_LOG_LOSS,
            mode="min",
            num_samples=cfg.search.num_samples,
            time_budget_s=budget,
            reuse_actors=True,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(
                random_state=cfg.search.seed, max_concurrent=concurrent
            ),
            trial_name_creator=lambda t: f"trial:{t.trial_id}",
            trial_dirname_creator=lambda t: t.trial_id,
        ),
        run_config=tune.RunConfig(
            name="search",
            storage_path=str(storage) if storage_filesystem else str(storage.resolve()),
            storage_filesystem=storage_filesystem,
            verbose=0,
            stop=CombinedStopper(MemoryStop(), InterruptStop()),
            callbacks=[
                SearchProgress(
                    cfg.search.num_samples, VAL_LOG_LOSS, "min", budget, folds=len(folds)
                ),
                *tune_loggers(),
                *tracking.tune_callbacks(),  # MLflow: one nested run per trial, when enabled
            ],
        ),
    )
    t0 = time.monotonic()
    # Ctrl-C / SIGTERM: Tune stops its trials, then RunInterrupted; Tune's box goes to the log
    with interrupt.graceful(), library_output_to_log("search"):
        grid = tuner.fit()
    elapsed = time.monotonic() - t0
    # the trial actors (each with its fold cache) end asynchronously: let them go before the
    # final fit starts, so the two never add up
    log.debug("search: trial workers gone %.1f s after Tune returned", wait_for_exit(TRIAL_TITLE))
    check_memory("the search (Tune stopped)")
    errors = [r.error for r in grid if r.error is not None]
    reported = [r for r in grid if r.error is None and r.metrics and VAL_LOG_LOSS in r.metrics]
    ok = [r for r in reported if r.metrics.get(FOLDS_DONE, 0) >= len(folds)]
    cut = [r for r in reported if r.metrics.get(FOLDS_DONE, 0) < len(folds)]
    for r in ok:
        for key in ("folds", "val_daily"):
            if isinstance(r.metrics.get(key), str):
                r.metrics[key] = json.loads(r.metrics[key])
    if errors:
        log.warning("%d of %d trials failed; first error: %s", len(errors), len(grid), errors[0])
    info = search_info(cfg, m, folds, ok, cut, len(errors), elapsed)
    if info["ended_by"] == ENDED_INTERRUPTED:  # Tune ended early for no rule of ours: a signal
        raise interrupt.RunInterrupted(interrupt.requested() or signal.SIGINT)
    if info["stopped_by_budget"]:
        log.warning(
            "search: the time budget (search.time_budget_s = %g s) ended the search after %.0f s: "
            "%d of %d trials fitted every fold, %d were cut short after some folds, %d reported "
            "no fold (queued or cut in their first); the run goes on with the %d completed trials",
            budget,
            elapsed,
            info["trials_completed"],
            cfg.search.num_samples,
            info["trials_stopped_by_budget"],
            info["trials_not_reported"],
            info["trials_completed"],
        )
    if not ok:
        if errors:
            raise RuntimeError(f"every search trial failed; first error: {errors[0]}")
        raise RuntimeError(
            f"no search trial fitted all {len(folds)} folds within search.time_budget_s = "
            f"{budget} s ({len(cut)} started, {elapsed:.0f} s elapsed): raise "
            "search.time_budget_s, or lower search.num_samples, model.n_estimators or the data "
            "(search.sample_days)"
        )
    if cut and cfg.search.scheduler == "asha":
        log.info(
            "search: ASHA stopped %d of %d trials early (mean %.1f of %d folds fitted)",
            info["trials_stopped_early"],
            len(reported),
            float(np.mean([r.metrics[FOLDS_DONE] for r in cut])),
            len(folds),
        )
    ok.sort(key=lambda r: r.metrics[VAL_LOG_LOSS])  # best first: column 0 is the chosen trial
    cut.sort(key=lambda r: (-r.metrics[FOLDS_DONE], r.metrics[VAL_LOG_LOSS]))
    best = ok[0]
    rows = [_table_row(r, COMPLETED, len(folds)) for r in ok]
    rows += [_table_row(r, _cut_status(r), len(folds)) for r in cut]
    daily = pd.DataFrame(
        {i: dict(map(tuple, r.metrics["val_daily"])) for i, r in enumerate(ok)}
    ).sort_index()
    return SearchResult(
        best_params={k: best.config[k] for k in SEARCH_PARAMS},
        best={k: best.metrics[k] for k in best.metrics if k in _RESULT_KEYS},
        trials=pd.DataFrame(rows),
        fold_scores=np.array([[f["val_log_loss"] for f in r.metrics["folds"]] for r in ok]).T,
        daily_perf=daily,
        info=info,
    )


def _cut_status(r: tune.Result) -> str:
    """A trial that did not fit every fold: stopped by ASHA (Tune marks the stop `done`) or by
    the end of the search (the time budget), which leaves it not done."""
    return STOPPED_EARLY if r.metrics.get("done") else STOPPED_BY_BUDGET


def _table_row(r: tune.Result, status: str, n_folds: int) -> dict:
    row = {k: r.config[k] for k in SEARCH_PARAMS}
    done = int(r.metrics.get(FOLDS_DONE, n_folds))
    if status == COMPLETED:
        row.update({k: r.metrics[k] for k in _TABLE_KEYS if k in r.metrics})
    else:  # only the running mean is known; the full-fold figures stay NaN
        row.update({k: r.metrics[k] for k in _TABLE_KEYS[7:] if k in r.metrics})
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
) -> dict:
    """How the search ran, for metrics.json's `search` section and summary.md: the scheduler,
    trial counts by outcome, whether the time budget ended it, and the data it searched on."""
    s = cfg.search
    early = sum(_cut_status(r) == STOPPED_EARLY for r in cut)
    not_reported = max(0, s.num_samples - len(completed) - len(cut) - failed)
    by_budget = len(cut) - early
    unfinished = by_budget + not_reported
    hit = unfinished > 0 and s.time_budget_s is not None and elapsed >= s.time_budget_s
    if unfinished and not hit:
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
        "trials_not_reported": not_reported,
        "trials_failed": failed,
        "stopped_by_budget": bool(hit),
        "ended_by": ended,  # all_trials | asha | time_budget | interrupted (never cached)
        "time_budget_s": s.time_budget_s,
        "elapsed_s": round(elapsed, 1),
        "folds": len(folds),
        "sample_days": s.sample_days,  # null = every training sample
        "samples": len(m),
        "sessions": int(len(np.unique(m.pos // m.slots))),
    }
    if s.scheduler == "asha":
        info.update(grace_folds=s.grace_folds, reduction_factor=s.reduction_factor)
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
_TABLE_KEYS = (
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
_RESULT_KEYS = {*_TABLE_KEYS[:7], "folds"}
