"""Hyperparameter search on Ray Tune: every trial fits all purged CV folds with plain XGBoost.

Layout follows Ray Tune's XGBoost example: fold fitting (a plain function, also used by the
benchmark's plain loop) -> trainable -> search space -> `Tuner` -> best result. The pooled matrix
goes to the object store once (`tune.with_parameters`); actors are reused, and each worker keeps
its quantized fold matrices between trials, so a trial pays for boosting, not for setup.
The objective is the mean validation log loss over the folds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from vpt_ray.config import SEARCH_PARAMS, Config, SearchSpace
from vpt_ray.metrics import VAL_LOG_LOSS, classification
from vpt_ray.resources import check_memory, clamp_task_memory, fold_cache_bytes, memory_exceeded
from vpt_ray.search_progress import SearchProgress
from vpt_ray.store import Matrix

log = logging.getLogger(__name__)
Folds = list[tuple[np.ndarray, np.ndarray]]
_DMATRIX_CACHE: dict[tuple[str, int], tuple[xgb.DMatrix, xgb.DMatrix]] = {}


def xgb_params(hp: dict, nthread: int, max_bin: int, seed: int = 0) -> dict:
    """Booster parameters from a search point."""
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_bin": max_bin,
        "nthread": nthread,
        "seed": seed,
        "max_depth": int(hp["max_depth"]),
        "learning_rate": float(hp["learning_rate"]),
        "subsample": float(hp["subsample"]),
        "colsample_bytree": float(hp["colsample_bytree"]),
        "min_child_weight": float(hp["min_child_weight"]),
        "reg_alpha": float(hp["reg_alpha"]),
        "reg_lambda": float(hp["reg_lambda"]),
    }


def _fold_matrices(
    X: np.ndarray, y: np.ndarray, folds: Folds, k: int, max_bin: int, token: str | None
) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    key = (token or "", k)
    if token and key in _DMATRIX_CACHE:
        return _DMATRIX_CACHE[key]
    tr, va = folds[k]
    dtrain = xgb.QuantileDMatrix(X[tr], y[tr], max_bin=max_bin)
    dval = xgb.QuantileDMatrix(X[va], y[va], ref=dtrain, max_bin=max_bin)
    if token:
        if len(_DMATRIX_CACHE) > 4 * len(folds):  # another run's matrices: drop them
            _DMATRIX_CACHE.clear()
        _DMATRIX_CACHE[key] = (dtrain, dval)
    return dtrain, dval


def train_early_stopped(
    params: dict,
    dtrain: xgb.DMatrix,
    dval: xgb.DMatrix,
    n_estimators: int,
    early_stopping_rounds: int,
) -> tuple[xgb.Booster, int]:
    """Boost on `dtrain` until the validation log loss stops improving; (booster, best rounds)."""
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=n_estimators,
        evals=[(dval, "val")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    return booster, booster.best_iteration + 1


def fit_folds(
    hp: dict,
    X: np.ndarray,
    y: np.ndarray,
    folds: Folds,
    *,
    n_estimators: int,
    early_stopping_rounds: int,
    max_bin: int,
    nthread: int,
    cache_token: str | None = None,
    fwd_ret: np.ndarray | None = None,
    day: np.ndarray | None = None,
) -> dict:
    """Fit one configuration on every fold; returns mean and per-fold train/validation metrics.

    With `fwd_ret` and `day` (session of each sample) it also returns `val_daily`: per validation
    day, the mean pre-cost return of trading each sample's predicted direction, which the
    overfitting statistics (PBO, trial Sharpe dispersion) compare across trials.
    """
    params = xgb_params(hp, nthread, max_bin)
    per_fold = []
    daily: list[pd.Series] = []
    for k, (tr, va) in enumerate(folds):
        dtrain, dval = _fold_matrices(X, y, folds, k, max_bin, cache_token)
        booster, rounds = train_early_stopped(
            params, dtrain, dval, n_estimators, early_stopping_rounds
        )
        it = (0, rounds)
        p_val = booster.predict(dval, iteration_range=it)
        val = classification(y[va], p_val)
        if fwd_ret is not None and day is not None:
            r = np.sign(p_val - 0.5) * fwd_ret[va]
            daily.append(pd.Series(r).groupby(day[va]).mean())
        train = classification(y[tr], booster.predict(dtrain, iteration_range=it))
        per_fold.append(
            {
                "fold": k,
                "rounds": rounds,
                "train_samples": int(len(tr)),
                "val_samples": int(len(va)),
                **{f"val_{m}": val[m] for m in ("accuracy", "auc", "log_loss")},
                **{f"train_{m}": train[m] for m in ("accuracy", "auc", "log_loss")},
            }
        )
    df = pd.DataFrame(per_fold)
    return {
        VAL_LOG_LOSS: float(df["val_log_loss"].mean()),
        "val_accuracy": float(df["val_accuracy"].mean()),
        "val_auc": float(df["val_auc"].mean()),
        "train_accuracy": float(df["train_accuracy"].mean()),
        "train_log_loss": float(df["train_log_loss"].mean()),
        "train_val_gap": float((df["train_accuracy"] - df["val_accuracy"]).mean()),
        "rounds": int(np.median(df["rounds"])),
        "folds": per_fold,
        "val_daily": _mean_by_day(daily),
    }


def _mean_by_day(daily: list[pd.Series]) -> list[list[float]]:
    """[[day, value], ...] averaging days validated in several folds (combinatorial CV)."""
    if not daily:
        return []
    s = pd.concat(daily).groupby(level=0).mean()
    return [[int(d), float(v)] for d, v in s.items()]


def _trainable(config: dict, X: np.ndarray, y: np.ndarray, folds: Folds, settings: dict) -> None:
    result = fit_folds(config, X, y, folds, **settings)
    # Tune's loggers take scalars only: the per-fold and per-day detail travel as JSON strings.
    result["folds"] = json.dumps(result["folds"])
    result["val_daily"] = json.dumps(result["val_daily"])
    tune.report(result)


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


@dataclass
class SearchResult:
    best_params: dict
    best: dict  # fit_folds() output of the best trial
    trials: pd.DataFrame  # one row per trial, best first: params and mean metrics
    fold_scores: np.ndarray  # (n_folds, n_trials) validation log loss, same trial order
    daily_perf: pd.DataFrame  # (validation days, n_trials) pre-cost direction return, same order


def run_search(
    cfg: Config,
    m: Matrix,
    folds: Folds,
    storage: Path | str,
    num_cpus: int,
    storage_filesystem: object | None = None,  # a pyarrow.fs.FileSystem: gs:// (vpt_ray.storage)
) -> SearchResult:
    """Search `cfg.search.num_samples` configurations within the time budget; best by val loss."""
    cpus = cfg.search.cpus_per_trial
    settings = {
        "n_estimators": cfg.model.n_estimators,
        "early_stopping_rounds": cfg.model.early_stopping_rounds,
        "max_bin": cfg.model.max_bin,
        "nthread": cpus,
        "cache_token": f"{storage}:{len(m)}",
        "fwd_ret": m.fwd_ret,
        "day": m.pos // m.slots,
    }
    concurrent = max(1, num_cpus // cpus)
    memory = fold_cache_bytes(
        [len(tr) + len(va) for tr, va in folds], m.X.shape[1], cfg.model.max_bin
    )
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, X=m.X, y=m.y, folds=folds, settings=settings),
        {"cpu": cpus, "memory": clamp_task_memory(memory, concurrent, "search trial")},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(cfg.search.space),
        tune_config=tune.TuneConfig(
            metric=VAL_LOG_LOSS,
            mode="min",
            num_samples=cfg.search.num_samples,
            time_budget_s=cfg.search.time_budget_s,
            reuse_actors=True,
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
            stop=MemoryStop(),
            callbacks=[
                SearchProgress(
                    cfg.search.num_samples, VAL_LOG_LOSS, "min", cfg.search.time_budget_s
                )
            ],
        ),
    )
    grid = tuner.fit()
    check_memory("the search (Tune stopped)")
    errors = [r.error for r in grid if r.error is not None]
    ok = [r for r in grid if r.error is None and r.metrics and VAL_LOG_LOSS in r.metrics]
    for r in ok:
        for key in ("folds", "val_daily"):
            if isinstance(r.metrics.get(key), str):
                r.metrics[key] = json.loads(r.metrics[key])
    if not ok:
        raise RuntimeError(
            f"every search trial failed; first error: {errors[0] if errors else '?'}"
        )
    if errors:
        log.warning("%d of %d trials failed; first error: %s", len(errors), len(grid), errors[0])
    ok.sort(key=lambda r: r.metrics[VAL_LOG_LOSS])  # best first: column 0 is the chosen trial
    best = ok[0]
    rows = []
    for r in ok:
        row = {k: r.config[k] for k in SEARCH_PARAMS}
        row.update({k: r.metrics[k] for k in _TABLE_KEYS if k in r.metrics})
        rows.append(row)
    daily = pd.DataFrame(
        {i: dict(map(tuple, r.metrics["val_daily"])) for i, r in enumerate(ok)}
    ).sort_index()
    return SearchResult(
        best_params={k: best.config[k] for k in SEARCH_PARAMS},
        best={k: best.metrics[k] for k in best.metrics if k in _RESULT_KEYS},
        trials=pd.DataFrame(rows),
        fold_scores=np.array([[f["val_log_loss"] for f in r.metrics["folds"]] for r in ok]).T,
        daily_perf=daily,
    )


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
)
# What the best trial's result keeps: the mean figures and the per-fold detail.
_RESULT_KEYS = {*_TABLE_KEYS[:7], "folds"}
