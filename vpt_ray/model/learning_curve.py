"""The learning curve's refits: the chosen configuration fitted again on nested fractions of the
training sessions, and every fit (the final model included) scored on the out-of-sample window.

Why it exists: a phase's one OOS accuracy says how good the model is, not whether more data
would make it better; the same configuration fitted on 1/8, 1/4 and 1/2 of the sessions and
scored on the same labels does (`vpt_ray.validation.scaling` fits and extrapolates the curve).

- The fractions keep whole sessions spread evenly over the training period
  (`fraction_sessions`: a fraction 1/2^j keeps every 2^j-th session, the van der Corput
  order), so every fraction covers the same market history and only the amount of data
  changes. A subset of a purged training set stays purged: no row comes closer to the OOS
  window than before (it lies after `data.end` + the embargo, whatever the fraction).
- Each fit reads its rows from the run's sample file (`features.samples`), like the search's
  folds, and boosts for the final fit's round rule at its own size (`train.final_rounds`): the
  final fit, scaled down. Fits run in the driver with the machine's CPUs, one after another.
- Scoring is one Ray task per backtested ticker: it reads the ticker's OOS features once and
  predicts with every booster, returning the labels, each booster's P(up) and the session of
  each label (the bootstrap's block).

Cost: the fits (default 1/16, 1/8 and 1/4 of the sessions) hold 7/16 of the final fit's rows
at fewer rounds (rounds grow with the square root of the rows), about a third of its boosting;
scoring adds one prediction pass per fit over the OOS window. metrics.json
`resources.stages.learning_curve` records it (`scaling.learning_curve.cost_vs_final_fit`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import ray
import xgboost as xgb

from vpt_ray.core import storage
from vpt_ray.core.config import Config
from vpt_ray.core.node_memory import node_label
from vpt_ray.core.progress import track
from vpt_ray.core.resources import clamp_task_memory, release_freed_memory
from vpt_ray.features.causal import clock_slots
from vpt_ray.features.samples import fold_dmatrix
from vpt_ray.features.store import Matrix, read_ticker_window, window_task_memory
from vpt_ray.model.folds import xgb_params
from vpt_ray.model.train import final_rounds

log = logging.getLogger("vpt_ray.learning_curve")


def _radical_inverse(k: np.ndarray) -> np.ndarray:
    """Base-2 radical inverse of the integers `k` (bit-reversed fractions: 0, 1/2, 1/4, 3/4...)."""
    k = np.asarray(k, dtype=np.int64).copy()
    out = np.zeros(len(k), dtype=np.float64)
    scale = 0.5
    while k.any():
        out += (k & 1) * scale
        k >>= 1
        scale /= 2
    return out


def fraction_sessions(sessions: np.ndarray, fraction: float, repeat: int = 0) -> np.ndarray:
    """The training sessions a `fraction` of them keeps (sorted), nested across fractions of the
    same `repeat`: sessions in the van der Corput order of their rank, the first
    ceil(fraction x n) taken. A fraction 1/2^j keeps exactly every 2^j-th session, offset by
    `repeat` (repeats of a small fraction use disjoint sessions)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction_sessions: fraction = {fraction!r}: must lie in (0, 1]")
    s = np.unique(np.asarray(sessions))
    n = len(s)
    if n == 0:
        return s
    keep = max(1, math.ceil(fraction * n - 1e-9))
    order = np.argsort(_radical_inverse((np.arange(n) + repeat) % n), kind="stable")
    return np.sort(s[order[:keep]])


def majority_direction(y_train: np.ndarray) -> int:
    """The naive predictor's constant call: 1 (up) when at least half the training labels are up,
    else 0 (a tie goes to up, as the label is 1 when the forward return is > 0)."""
    y = np.asarray(y_train, dtype=np.float64)
    y = y[~np.isnan(y)]
    if len(y) == 0:
        raise ValueError("majority_direction: no training labels")
    return int(np.mean(y > 0.5) >= 0.5)


@dataclass
class CurveFit:
    """One point of the curve: which sessions it was fitted on and its booster (None until
    fitted; the final model for the full point)."""

    label: str
    fraction: float
    repeat: int
    sessions: int
    samples: int
    majority: int
    rounds: int
    booster: xgb.Booster | None = None

    def summary(self) -> dict:
        return {
            "label": self.label,
            "fraction": self.fraction,
            "repeat": self.repeat,
            "sessions": self.sessions,
            "samples": self.samples,
            "rounds": self.rounds,
        }


def _label(fraction: float, repeat: int) -> str:
    inv = 1.0 / fraction
    text = f"1/{int(round(inv))}" if abs(inv - round(inv)) < 1e-9 else f"{fraction:g}"
    return text if repeat == 0 else f"{text} (repeat {repeat + 1})"


def plan_fits(
    cfg: Config, m: Matrix, fold_rounds: list[int], fold_sizes: list[int]
) -> tuple[list[CurveFit], list[np.ndarray]]:
    """The curve's fits (without boosters) and each one's rows of `m`: every fraction of
    `scaling.fractions`, the small ones (<= `scaling.repeat_below`) `scaling.repeats` times on
    disjoint sessions; a fraction that would keep every session is left out (the final fit is
    that point)."""
    sc = cfg.scaling
    session = m.pos // m.slots
    sessions = np.unique(session)
    fits, rows = [], []
    for fraction in sorted(sc.fractions):
        n_rep = sc.repeats if fraction <= sc.repeat_below else 1
        for r in range(n_rep):
            kept = fraction_sessions(sessions, fraction, r)
            if len(kept) >= len(sessions):
                continue
            idx = np.flatnonzero(np.isin(session, kept))
            if len(idx) == 0 or len(np.unique(m.y[idx])) < 2:
                continue  # no rows, or a single class: nothing to fit
            rounds = final_rounds(fold_rounds, fold_sizes, len(idx))
            fits.append(
                CurveFit(
                    _label(fraction, r),
                    fraction,
                    r,
                    len(kept),
                    len(idx),
                    majority_direction(m.y[idx]),
                    rounds,
                )  # fmt: skip
            )
            rows.append(idx)
    return fits, rows


def fit_curve(
    cfg: Config, m: Matrix, hp: dict, fits: list[CurveFit], rows: list[np.ndarray], nthread: int
) -> None:
    """Fit each planned point's booster (in place) from the sample file (or `m.X`)."""
    labels = None
    if m.samples is not None:
        labels = np.full(m.samples.rows, np.nan, dtype=np.float32)
        labels[m.sample_rows()] = m.y
    for fit, idx in zip(fits, rows, strict=True):
        if m.samples is not None:
            dtrain = fold_dmatrix(
                m.samples, m.sample_rows()[idx], labels, cfg.model.max_bin, nthread=nthread
            )
        else:
            dtrain = xgb.QuantileDMatrix(
                m.features()[idx], m.y[idx], max_bin=cfg.model.max_bin, nthread=nthread,
                feature_names=m.feature_names,
            )  # fmt: skip
        params = xgb_params(hp, nthread, cfg.model.max_bin, seed=cfg.search.seed + fit.repeat)
        fit.booster = xgb.train(params, dtrain, num_boost_round=max(1, fit.rounds))
        del dtrain
        release_freed_memory()
        log.info(
            "learning curve: %s of the sessions (%d sessions, %d samples, %d rounds) fitted",
            fit.label,
            fit.sessions,
            fit.samples,
            fit.rounds,
        )


def score_ticker(
    cfg: Config,
    boosters: list[xgb.Booster],
    features_path: str | storage.GcsPath,
    names: list[str],
) -> dict:
    """One ticker's labelled OOS bars: labels, each booster's P(up) (boosters x labels) and
    each label's session ordinal (the bootstrap's block)."""
    feats = read_ticker_window(features_path, cfg.backtest.start, cfg.backtest.end, names)
    labelled = feats["y"].notna().to_numpy()
    X = feats[names].to_numpy(np.float32)[labelled]
    p = np.empty((len(boosters), len(X)), dtype=np.float32)
    if len(X):
        dm = xgb.DMatrix(X, feature_names=names)
        for k, b in enumerate(boosters):
            p[k] = b.predict(dm)
    slots = clock_slots(cfg.data.bar_minutes)
    return {
        "y": feats["y"].to_numpy()[labelled].astype(np.int8),
        "p": p,
        "session": (feats["pos"].to_numpy()[labelled] // slots).astype(np.int64),
    }


@ray.remote(num_cpus=1, max_retries=0)
def _score_task(cfg, raws, features_path, names, ticker):
    boosters = []
    for raw in raws:
        b = xgb.Booster(params={"nthread": 1})
        b.load_model(bytearray(raw))
        boosters.append(b)
    out = score_ticker(cfg, boosters, features_path, names)
    out["ticker"], out["node"] = ticker, node_label()
    release_freed_memory()
    return out


def score_oos(
    cfg: Config, boosters: list[xgb.Booster], store: dict[str, dict], names: list[str]
) -> dict[str, dict]:
    """Score every booster on every ticker's OOS window: one Ray task per ticker (the boosters
    put in the object store once); results by ticker, sorted."""
    raws = ray.put([b.save_raw("ubj") for b in boosters])
    cfg_ref = ray.put(cfg)
    memory = clamp_task_memory(
        window_task_memory(cfg, cfg.backtest.start, cfg.backtest.end), 1, "learning curve task"
    )
    refs = {
        _score_task.options(name=f"learning_curve:{t}", memory=memory).remote(
            cfg_ref, raws, s["path"], names, t
        ): t
        for t, s in store.items()
    }
    out = {r["ticker"]: r for r in track(refs, "learning curve", unit="ticker")}
    return dict(sorted(out.items()))
