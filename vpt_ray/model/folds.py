"""Fitting the CV folds with plain XGBoost: one fold's quantized matrices built from the sample
file at a time, early stopping on the last sessions of each training fold, and the per-fold and
mean figures a trial reports. Plain functions, no Tune: a search trial (`vpt_ray.model.search`)
calls them, and so does the benchmark's plain loop. A worker keeps the small early folds'
matrices between its trials (`FoldCache`, up to `search.fold_cache_mb`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import xgboost as xgb

from vpt_ray.backtest.proxy import TradeProxy
from vpt_ray.core.resources import release_freed_memory, xgb_matrix_bytes
from vpt_ray.features.samples import SampleFile, fold_dmatrix
from vpt_ray.model.cv import EarlyStopFold
from vpt_ray.model.metrics import VAL_LOG_LOSS, classification, log_loss_se
from vpt_ray.model.trial_cache import TrialCache

Folds = list[tuple[np.ndarray, np.ndarray]]


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


class FoldCache:
    """A search worker's fold matrices kept between its trials, up to `budget` bytes (XGBoost's
    measured footprint): the early, small folds first, the rest rebuilt per fit. Small phases
    then build each fold once per worker; large ones hold one fold at a time plus the budget."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.held: dict[int, tuple[xgb.DMatrix, ...]] = {}
        self.bytes = 0

    def get(self, token: str, k: int) -> tuple[xgb.DMatrix, ...] | None:
        if token != self.token:  # another search: drop its matrices
            self.token, self.held, self.bytes = token, {}, 0
        return self.held.get(k)

    def offer(self, k: int, mats: tuple[xgb.DMatrix, ...], budget: int) -> None:
        size = sum(xgb_matrix_bytes(d.num_row(), d.num_col()) for d in mats)
        if self.bytes + size <= budget:
            self.held[k] = mats
            self.bytes += size


_FOLD_CACHE = FoldCache()


def _fold_matrices(
    X: np.ndarray | SampleFile,
    y: np.ndarray,
    fold: EarlyStopFold,
    max_bin: int,
    nthread: int,
    columns: list[int] | None = None,
) -> tuple[xgb.DMatrix, xgb.DMatrix, xgb.DMatrix]:
    """One fold's quantized fit, early-stopping and validation matrices (the last two binned on
    the fit part's cuts), from an in-memory matrix or a chunk at a time from the sample file
    (`samples.fold_dmatrix`); only the feature `columns` when given."""
    if isinstance(X, SampleFile):
        dfit = fold_dmatrix(X, fold.fit, y, max_bin, nthread=nthread, columns=columns)
        return dfit, *(
            fold_dmatrix(X, rows, y, max_bin, ref=dfit, nthread=nthread, columns=columns)
            for rows in (fold.stop, fold.val)
        )
    Xc = X if columns is None else X[:, columns]
    dfit = xgb.QuantileDMatrix(Xc[fold.fit], y[fold.fit], max_bin=max_bin, nthread=nthread)
    return dfit, *(
        xgb.QuantileDMatrix(Xc[rows], y[rows], ref=dfit, max_bin=max_bin, nthread=nthread)
        for rows in (fold.stop, fold.val)
    )


def train_early_stopped(
    params: dict,
    dtrain: xgb.DMatrix,
    dstop: xgb.DMatrix,
    n_estimators: int,
    early_stopping_rounds: int,
) -> tuple[xgb.Booster, int]:
    """Boost on `dtrain` until the log loss on `dstop` (the early-stopping slice, never the
    fold's validation part) stops improving; (booster, best rounds)."""
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=n_estimators,
        evals=[(dstop, "stop")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    return booster, booster.best_iteration + 1


def _sorted_fold(fold: EarlyStopFold | tuple) -> EarlyStopFold:
    """The fold's row ids in the sample file's (time) order; a clear error for a plain
    (train, validation) pair, which would early-stop on the validation part."""
    if not isinstance(fold, EarlyStopFold):
        raise TypeError(
            "folds must be cv.EarlyStopFold(fit, stop, val) (see cv.early_stopping_folds), got "
            f"{type(fold).__name__}: early stopping on the validation fold would flatter its score"
        )
    return EarlyStopFold(*(np.sort(part) for part in fold))


def fold_predictions(
    hp: dict,
    X: np.ndarray | SampleFile,
    y: np.ndarray,
    folds: list[EarlyStopFold],
    *,
    n_estimators: int,
    early_stopping_rounds: int,
    max_bin: int,
    nthread: int,
    seed: int = 0,
    columns: list[int] | None = None,
    overlap: float = 1.0,
    cache_token: str | None = None,
    cache_bytes: int = 0,
    trial_cache: TrialCache | None = None,
) -> Iterator[tuple[dict, np.ndarray]]:
    """Fit one configuration fold by fold, in fold order: each booster is fit on the fold's
    `fit` rows with its rounds chosen on the `stop` slice, then scored on `val`, which nothing
    in the fit has seen. Yields each fold's record (rounds, sizes, fit and validation metrics)
    and its validation probabilities. `X` is the feature matrix or the sample file the fold
    indices point into (`y` is indexed alike); `seed` and the feature `columns` make a phase 5
    ensemble member; `overlap` (min(1, stride / horizon): labels overlap) makes the record's
    `val_log_loss_se` count effective samples. With `cache_token`, this process's `FoldCache`
    keeps fold matrices (of all columns) up to `cache_bytes`; with `trial_cache`, a fold already
    fitted on the same samples with the same settings is read from it instead of fitted
    (`record["from_cache"]`)."""
    params = xgb_params(hp, nthread, max_bin, seed=seed)
    key = dict(hp)
    if seed:
        key["seed"] = seed
    if columns is not None:
        key["columns"] = list(map(int, columns))
        cache_token = None  # the fold cache holds all columns
    for k, fold in enumerate(folds):
        fold = _sorted_fold(fold)  # the sample file's (time) order
        hit = trial_cache.get(key, k) if trial_cache is not None else None
        if hit is None:
            record, p_val = _fit_fold(
                k, params, X, y, fold, n_estimators, early_stopping_rounds, max_bin, nthread,
                cache_token, cache_bytes, columns, overlap,
            )  # fmt: skip
            if trial_cache is not None:
                trial_cache.put(key, k, record, p_val)
        else:
            record, p_val = {**hit[0], "from_cache": True}, hit[1]
        yield record, p_val


def iter_folds(
    hp: dict,
    X: np.ndarray | SampleFile,
    y: np.ndarray,
    folds: list[EarlyStopFold],
    *,
    fwd_ret: np.ndarray | None = None,
    day: np.ndarray | None = None,
    pos: np.ndarray | None = None,
    proxy: TradeProxy | None = None,
    **fit: object,
) -> Iterator[tuple[dict, pd.Series | None]]:
    """`fold_predictions` (its keyword arguments in `fit`) for a search trial: each fold's
    record and, with `proxy`, `fwd_ret`, `day` and `pos`, its validation days' portfolio return
    after costs of trading the predictions like the backtest (`backtest.proxy`), else None."""
    for record, p_val in fold_predictions(hp, X, y, folds, **fit):
        va = _sorted_fold(folds[record["fold"]]).val
        daily = None
        if proxy is not None and fwd_ret is not None and day is not None and pos is not None:
            days, ret = proxy.daily_returns(va, p_val, pos[va], fwd_ret[va], day[va])
            daily = pd.Series(ret, index=days)
        yield record, daily


def _fit_fold(
    k: int,
    params: dict,
    X: np.ndarray | SampleFile,
    y: np.ndarray,
    fold: EarlyStopFold,
    n_estimators: int,
    early_stopping_rounds: int,
    max_bin: int,
    nthread: int,
    cache_token: str | None,
    cache_bytes: int,
    columns: list[int] | None = None,
    overlap: float = 1.0,
) -> tuple[dict, np.ndarray]:
    """Fit fold `k` of one configuration: (its record, its validation probabilities)."""
    mats = _FOLD_CACHE.get(cache_token, k) if cache_token else None
    if mats is None:
        mats = _fold_matrices(X, y, fold, max_bin, nthread, columns)
        if cache_token:
            _FOLD_CACHE.offer(k, mats, cache_bytes)
    booster, rounds = train_early_stopped(
        params, mats[0], mats[1], n_estimators, early_stopping_rounds
    )
    it = (0, rounds)
    p_val = booster.predict(mats[2], iteration_range=it)
    p_fit = booster.predict(mats[0], iteration_range=it)
    # the fold's matrices and booster go before the metrics' float64 copies are made, and
    # before the next fold is built (unless the fold cache keeps them)
    del booster, mats
    va = fold.val
    val = classification(y[va], p_val)
    val["log_loss_se"] = log_loss_se(y[va], p_val, len(va) * overlap)
    train = classification(y[fold.fit], p_fit)
    del p_fit
    release_freed_memory()  # else the worker's heap keeps every fold's high-water mark
    record = {
        "fold": k,
        "rounds": rounds,
        "train_samples": int(len(fold.fit)),  # the rows the booster was fit on
        "stop_samples": int(len(fold.stop)),  # the early-stopping slice
        "val_samples": int(len(va)),
        **{f"val_{m}": val[m] for m in ("accuracy", "auc", "log_loss", "log_loss_se")},
        **{f"train_{m}": train[m] for m in ("accuracy", "auc", "log_loss")},
    }
    return record, p_val


def summarize_folds(per_fold: list[dict], daily: list[pd.Series]) -> dict:
    """Mean figures over the fold records of `iter_folds`, the records and the per-day returns."""
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


def fit_folds(
    hp: dict, X: np.ndarray, y: np.ndarray, folds: list[EarlyStopFold], **settings
) -> dict:
    """Fit one configuration on every fold; returns mean and per-fold train/validation metrics.

    `settings` are `iter_folds`' keywords. With `proxy`, `fwd_ret`, `day` (session of each
    sample) and `pos` it also returns `val_daily`: per validation day, the portfolio return after
    costs of trading the predictions like the backtest, which the overfitting statistics (PBO,
    the trials' Sharpe spread in the deflated Sharpe) compare across trials.
    """
    per_fold, daily = [], []
    for record, d in iter_folds(hp, X, y, folds, **settings):
        per_fold.append(record)
        if d is not None:
            daily.append(d)
    return summarize_folds(per_fold, daily)


def _mean_by_day(daily: list[pd.Series]) -> list[list[float]]:
    """[[day, value], ...] averaging days validated in several folds (combinatorial CV)."""
    if not daily:
        return []
    s = pd.concat(daily).groupby(level=0).mean()
    return [[int(d), float(v)] for d, v in s.items()]
