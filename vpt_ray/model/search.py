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
from pathlib import Path

import numpy as np
import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
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
from vpt_ray.model.racing import FOLD_LOSS, FOLD_LOSS_SE, Race, RaceScheduler, RaceSettled
from vpt_ray.model.search_progress import SearchProgress
from vpt_ray.model.search_result import (
    COMPLETED,
    ENDED_INTERRUPTED,
    FOLDS_CACHED,
    FOLDS_DONE,
    RESULT_KEYS,
    SearchResult,
    cut_status,
    search_info,
    table_row,
)
from vpt_ray.model.trial_cache import TrialCache, folds_digest

log = logging.getLogger("vpt_ray.search")

_WORKER_SAMPLES: dict[tuple[str, int], tuple] = {}


TRIAL_TITLE = "ray::ImplicitFunc"  # Tune's function-trainable actors, as ps shows them


def _trainable(
    config: dict,
    samples: SampleFile,
    folds: list[EarlyStopFold],
    settings: dict,
    race: bool = False,
) -> None:
    """One trial. Racing (ASHA, the race) reports the running mean validation log loss and the
    fold's own after every fold but the last, so the scheduler can stop it there (Tune then ends
    this thread inside `tune.report`); the last report is the full result either way.
    `cpu_time_s`: the trial's CPU seconds so far (its worker process), a cost measure that other
    tenants' load does not skew. `settings["trial_cache"]` (a `TrialCache` or None) serves the
    folds this configuration already fitted on these samples.

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
            tune.report(
                {
                    VAL_LOG_LOSS: running,
                    FOLD_LOSS: record["val_log_loss"],
                    FOLD_LOSS_SE: record.get("val_log_loss_se", float("nan")),
                    FOLDS_DONE: len(per_fold),
                    FOLDS_CACHED: sum(bool(f.get("from_cache")) for f in per_fold),
                    "cpu_time_s": cpu,
                }
            )
    result = summarize_folds(per_fold, daily)
    result[FOLDS_DONE] = len(per_fold)
    result[FOLD_LOSS] = per_fold[-1]["val_log_loss"]
    result[FOLD_LOSS_SE] = per_fold[-1].get("val_log_loss_se", float("nan"))
    result[FOLDS_CACHED] = sum(bool(f.get("from_cache")) for f in per_fold)
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


def make_race(cfg: Config, n_folds: int) -> Race | None:
    """The race's state for `search.scheduler: race` (None otherwise). With an ensemble, the race
    settles no earlier than it has `model.ensemble.top_k` complete trials to draw members from."""
    s = cfg.search
    if s.scheduler != "race":
        return None
    ens = cfg.model.ensemble
    at_least = max(s.race_min_trials, ens.top_k if ens.enabled else 0)
    return Race(n_folds, s.race_alpha, min(at_least, s.num_samples), max(2, s.grace_folds))


def make_scheduler(cfg: Config, n_folds: int, race: Race | None = None) -> FIFOScheduler | None:
    """Tune's ASHA over the folds for `search.scheduler: asha`, the race's scheduler for `race`;
    None (FIFO) otherwise."""
    s = cfg.search
    if race is not None:
        return RaceScheduler(race)
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
    trial_cache: tuple[str | object, str] | None = None,
) -> SearchResult:
    """Search `cfg.search.num_samples` configurations within the time budget; best by val loss
    among the trials that fitted every fold. Each fold's training part is split for early
    stopping (`cv.early_stopping_folds`); `prices` (each ticker code's median training close)
    set the commissions of the trials' after-cost validation returns (`backtest.proxy`);
    `trial_cache` (a location and the samples' content key) keeps and serves fold fits by
    content (`vpt_ray.model.trial_cache`)."""
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
        "overlap": min(1.0, cfg.labels.stride / cfg.labels.horizon),
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
    settings["trial_cache"] = None
    if trial_cache is not None:
        fit = ("n_estimators", "early_stopping_rounds", "max_bin", "nthread")
        settings["trial_cache"] = TrialCache(
            location=trial_cache[0],
            data_key=trial_cache[1],
            fold_keys=tuple(folds_digest(file_folds)),
            fit=tuple((k, settings[k]) for k in fit),
        )
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
    race = make_race(cfg, len(folds))
    scheduler = make_scheduler(cfg, len(folds), race)
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
            stop=CombinedStopper(
                MemoryStop(), InterruptStop(), *([RaceSettled(race)] if race else [])
            ),
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
    settled = race.settled_reason if race is not None else None
    info = search_info(cfg, m, folds, ok, cut, len(errors), elapsed, settled)
    stop_signal = interrupt.requested()
    if info["ended_by"] == ENDED_INTERRUPTED or stop_signal is not None:  # not a rule of ours
        raise interrupt.RunInterrupted(stop_signal or signal.SIGINT)
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
    if cut and cfg.search.scheduler in ("asha", "race"):
        log.info(
            "search: %s stopped %d of %d trials early (mean %.1f of %d folds fitted)",
            "ASHA" if cfg.search.scheduler == "asha" else "the race",
            info["trials_stopped_early"],
            len(reported),
            float(np.mean([r.metrics[FOLDS_DONE] for r in cut])),
            len(folds),
        )
    if info["fold_fits_from_cache"]:
        log.info(
            "search: %d of %d fold fits served by the trial cache (fitted by an earlier search "
            "on the same samples and folds)",
            info["fold_fits_from_cache"],
            info["fold_fits"],
        )
    if settled:
        log.info(
            "search: the race settled after %.0f s: %s; %d trials not started",
            elapsed,
            settled,
            info["trials_not_reported"],
        )
    ok.sort(key=lambda r: r.metrics[VAL_LOG_LOSS])  # best first: column 0 is the chosen trial
    cut.sort(key=lambda r: (-r.metrics[FOLDS_DONE], r.metrics[VAL_LOG_LOSS]))
    best = ok[0]
    rows = [table_row(r, COMPLETED, len(folds)) for r in ok]
    rows += [table_row(r, cut_status(r, bool(settled)), len(folds)) for r in cut]
    daily = pd.DataFrame(
        {i: dict(map(tuple, r.metrics["val_daily"])) for i, r in enumerate(ok)}
    ).sort_index()
    return SearchResult(
        best_params={k: best.config[k] for k in SEARCH_PARAMS},
        best={k: best.metrics[k] for k in best.metrics if k in RESULT_KEYS},
        trials=pd.DataFrame(rows),
        fold_scores=np.array([[f["val_log_loss"] for f in r.metrics["folds"]] for r in ok]).T,
        daily_perf=daily,
        info=info,
    )
