"""Phase 5 ensembles: probability averaging over the search's best configurations, seeds and
feature subsets, with weights chosen on out-of-fold predictions of the purged CV folds only.

Why: the search keeps one configuration and throws the runners-up away; averaging a few good,
differently seeded (and optionally differently fed) models lowers variance, and the purged folds
say whether it does before any out-of-sample bar is touched.

Members are the top `model.ensemble.top_k` configurations of the search that fitted every fold
(best validation log loss first) x `model.ensemble.seeds`; with `feature_fraction` < 1 every
member but the first sees a seeded random subset of the features. One Ray task per member fits
it on every fold of the search's samples (`search.sample_days` applied; early stopping on the
last sessions of the fold's training part, never on its validation part, as in the search:
`cv.early_stopping_folds`) and keeps its out-of-fold probabilities; a fold the search already
fitted with the same configuration, seed and features comes from the trial cache
(`model.trial_cache`). Weights: greedy forward selection with replacement (Caruana et al., 2004)
on the pooled out-of-fold log loss, starting from the best member and stopping when no step
improves it, so the ensemble is never worse than its best member on those folds, and weights are
sparse. Only the members that got a weight are then fit on the whole training set (streamed from
the feature store, with the rounds the folds suggest: `train.final_rounds`), and the one the
train stage already fit (best configuration, its seed, every feature) is reused.
Cost: (top_k x len(seeds) - those the search fitted) x folds fits on the search's samples, plus
one full fit per weighted member but the single model. Phase 5 as shipped, before this: every
candidate's folds and full fit on all 7.8 M samples, each task holding its own float copy.

On disk, next to the single model: `ensemble/member_{i}.ubj` (XGBoost's native format) and
`ensemble/ensemble.json` (weights, configurations, seeds, feature lists, rounds), written into a
temp directory and renamed into place. `EnsembleModel.predict_proba(X, names)` is what the
backtest tasks call.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import xgboost as xgb

from vpt_ray.backtest.run import pooled_predictions
from vpt_ray.core.config import Config
from vpt_ray.core.config_sections import SEARCH_PARAMS
from vpt_ray.core.progress import track
from vpt_ray.core.resources import clamp_task_memory, trial_bytes
from vpt_ray.core.run import atomic_dir
from vpt_ray.features.samples import SampleFile
from vpt_ray.features.store import Matrix
from vpt_ray.model.cv import EarlyStopFold, early_stopping_folds
from vpt_ray.model.folds import fold_predictions
from vpt_ray.model.metrics import (
    classification,
    paired_accuracy_difference,
    sharpe_difference,
)
from vpt_ray.model.search_result import SearchResult
from vpt_ray.model.train import TrainingRows, final_rounds, fit_final
from vpt_ray.model.trial_cache import TrialCache, folds_digest

log = logging.getLogger("vpt_ray.ensemble")
Folds = list[tuple[np.ndarray, np.ndarray]]
ENSEMBLE_DIR = "ensemble"
ENSEMBLE_FILE = "ensemble.json"
EPS = 1e-7


@dataclass(frozen=True)
class Member:
    """One candidate: a search configuration (by rank), a seed and the features it sees."""

    rank: int
    params: dict
    seed: int
    features: tuple[str, ...]


@dataclass
class EnsembleModel:
    """Weighted average of member probabilities; members with weight 0 are not kept."""

    boosters: list[xgb.Booster]
    weights: list[float]
    features: list[list[str]]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.boosters) == len(self.weights) == len(self.features)) or not self.weights:
            raise ValueError(
                f"EnsembleModel: {len(self.boosters)} boosters, {len(self.weights)} weights and "
                f"{len(self.features)} feature lists: need the same number, at least one"
            )
        total = float(sum(self.weights))
        if total <= 0 or min(self.weights) < 0:
            raise ValueError(f"EnsembleModel: weights {self.weights} must be >= 0 with a sum > 0")
        self.weights = [float(w) / total for w in self.weights]

    def predict_proba(self, X: np.ndarray, names: list[str]) -> np.ndarray:
        """P(up) per row of `X` (columns named `names`): the weighted member average."""
        col = {n: i for i, n in enumerate(names)}
        missing = sorted({f for fs in self.features for f in fs} - set(col))
        if missing:
            raise ValueError(f"EnsembleModel: features {missing} are not among the inputs")
        out = np.zeros(len(X), dtype=np.float64)
        for booster, w, feats in zip(self.boosters, self.weights, self.features, strict=True):
            Xm = X if list(feats) == list(names) else X[:, [col[f] for f in feats]]
            out += w * booster.predict(xgb.DMatrix(Xm, feature_names=list(feats)))
        return out.astype(np.float32)

    def set_nthread(self, n: int) -> None:
        for b in self.boosters:
            b.set_param({"nthread": n})


def candidates(cfg: Config, trials: pd.DataFrame, names: list[str]) -> list[Member]:
    """Top-k search configurations x seeds; member 0 (best config, first seed) sees all features."""
    ens = cfg.model.ensemble
    keys = list(SEARCH_PARAMS)
    missing = [k for k in keys if k not in trials.columns]
    if missing:
        raise ValueError(f"search trials table lacks parameter columns {missing}")
    k_feats = max(1, int(round(ens.feature_fraction * len(names))))
    out = []
    for rank, (_, row) in enumerate(trials.head(ens.top_k).iterrows()):
        hp = {k: _py(row[k]) for k in keys}
        for j, seed in enumerate(ens.seeds):
            feats = tuple(names)
            if k_feats < len(names) and (rank, j) != (0, 0):
                rng = np.random.default_rng([cfg.search.seed, rank, seed])
                keep = np.sort(rng.choice(len(names), size=k_feats, replace=False))
                feats = tuple(names[i] for i in keep)
            out.append(Member(rank, hp, int(seed), feats))
    return out


def _py(v: object) -> object:
    return v.item() if hasattr(v, "item") else v


def member_oof(
    member: Member,
    samples: SampleFile,
    folds: list[EarlyStopFold],
    names: list[str],
    settings: dict,
    trial_cache: TrialCache | None = None,
) -> dict:
    """Out-of-fold probabilities of `member` on every fold of the search's samples (fit on
    `fit`, stopped on `stop`, predicted on `val`; `folds` are rows of the sample file), its
    rounds and fit sizes per fold. A fold the search (or an earlier ensemble) already fitted
    with the same configuration, seed and features comes from `trial_cache`."""
    local = samples.local()
    y = local.column("y")
    columns = None
    if list(member.features) != list(names):
        columns = [names.index(f) for f in member.features]
    oof, rounds, sizes, cached = [], [], [], 0
    for record, p_val in fold_predictions(
        member.params, local, y, folds, seed=member.seed, columns=columns,
        trial_cache=trial_cache, **settings,
    ):  # fmt: skip
        oof.append(np.asarray(p_val, dtype=np.float32))
        rounds.append(int(record["rounds"]))
        sizes.append(int(record["train_samples"]))
        cached += bool(record.get("from_cache"))
    return {"oof": oof, "fold_rounds": rounds, "fold_sizes": sizes, "folds_cached": cached}


@ray.remote(max_retries=0)
def _member_task(i: int, member: Member, samples, folds, names, settings, trial_cache) -> dict:
    return {"i": i, **member_oof(member, samples, folds, names, settings, trial_cache)}


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def greedy_weights(P: np.ndarray, y: np.ndarray, rounds: int) -> np.ndarray:
    """Weights (summing to 1) from greedy forward selection with replacement on log loss.

    P: (members, samples) out-of-fold probabilities; y: labels. Starts from the best member and
    adds, `rounds` times at most, the member whose addition lowers the averaged log loss most;
    stops early when no addition lowers it. Ties go to the lower index (the better-ranked config).
    """
    P = np.asarray(P, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != len(y) or P.shape[0] == 0:
        raise ValueError(f"greedy_weights: P has shape {P.shape}, need (members, {len(y)})")
    if rounds < 1:
        raise ValueError(f"greedy_weights: rounds = {rounds}: must be >= 1")
    losses = [_log_loss(y, p) for p in P]
    best = int(np.argmin(losses))
    counts = np.zeros(len(P))
    counts[best] = 1
    current, loss = P[best].copy(), losses[best]
    for n in range(1, rounds):
        trial = [_log_loss(y, (current * n + p) / (n + 1)) for p in P]
        j = int(np.argmin(trial))
        if trial[j] >= loss - 1e-12:
            break
        counts[j] += 1
        current = (current * n + P[j]) / (n + 1)
        loss = trial[j]
    return counts / counts.sum()


def cv_summary(ys: list[np.ndarray], oof: list[np.ndarray]) -> dict:
    """Mean over folds of validation accuracy, AUC and log loss (the search's definition)."""
    per = [classification(y, p) for y, p in zip(ys, oof, strict=True)]
    return {k: float(np.nanmean([f[k] for f in per])) for k in ("accuracy", "auc", "log_loss")}


def _is_single(member: Member, cfg: Config, names: list[str], single: xgb.Booster | None) -> bool:
    """Whether `member` is the model the train stage already fit: the best configuration with
    the final fit's seed, on every feature."""
    return (
        single is not None
        and member.rank == 0
        and member.seed == cfg.search.seed
        and list(member.features) == list(names)
    )


def run_ensemble(
    cfg: Config,
    m: Matrix,
    folds: Folds,
    result: SearchResult,
    num_cpus: int,
    rows: TrainingRows,
    single: xgb.Booster | None = None,
    trial_cache: tuple[str | object, str] | None = None,
    spill_root: Path | None = None,
) -> tuple[EnsembleModel, dict]:
    """Cross-validate the candidates on the search's samples and folds (`m`, `folds`: after
    `search.sample_days`), one Ray task each with the search's threads per trial, choose weights
    on their out-of-fold probabilities, then fit only the members that got a weight on every
    training row (`rows`, streamed from the store as the single model is), one after the other
    with all CPUs. The member the train stage already fit (`single`) is reused, and so is every
    fold the search fitted (`trial_cache`: its location and the samples key).

    Returns the model (members with weight > 0) and a JSON-ready description: members with their
    weights and out-of-fold CV figures, and the CV of the ensemble and of the best single member.
    """
    ens = cfg.model.ensemble
    names = list(m.feature_names)
    members = candidates(cfg, result.completed_trials, names)
    cpus = min(cfg.search.cpus_per_trial, max(1, num_cpus))
    settings = {
        "n_estimators": cfg.model.n_estimators,
        "early_stopping_rounds": cfg.model.early_stopping_rounds,
        "max_bin": cfg.model.max_bin,
        "nthread": cpus,
        "overlap": min(1.0, cfg.labels.stride / cfg.labels.horizon),
    }
    if m.samples is None:
        raise ValueError("run_ensemble needs the samples on disk (store.load_samples)")
    es_folds = early_stopping_folds(
        folds, m.pos, m.label_end, m.slots, cfg.cv.early_stopping_fraction, cfg.embargo_bars
    )
    at = m.sample_rows()
    file_folds = [EarlyStopFold(*(np.sort(at[p]).astype(np.int32) for p in f)) for f in es_folds]
    cache = None
    if trial_cache is not None:
        fit = tuple(
            (k, settings[k])
            for k in ("n_estimators", "early_stopping_rounds", "max_bin", "nthread")
        )
        cache = TrialCache(trial_cache[0], trial_cache[1], tuple(folds_digest(file_folds)), fit)
    memory = clamp_task_memory(
        trial_bytes(max(sum(map(len, f)) for f in es_folds), len(names), m.samples.rows),
        max(1, num_cpus // cpus),
        "ensemble member",
    )
    log.info(
        "ensemble: %d candidates (top %d configs x %d seeds, feature fraction %g), %d folds each "
        "on the search's %d samples",
        len(members), ens.top_k, len(ens.seeds), ens.feature_fraction, len(folds), len(m),
    )  # fmt: skip
    folds_ref = ray.put(file_folds)
    refs = {
        _member_task.options(name=f"ensemble:member{i}", num_cpus=cpus, memory=memory).remote(
            i, mb, m.samples, folds_ref, names, settings, cache
        ): f"member {i}"
        for i, mb in enumerate(members)
    }
    fits = {r["i"]: r for r in track(refs, "ensemble", unit="member")}
    fits = [fits[i] for i in range(len(members))]
    y_file = m.samples.column("y")
    ys = [y_file[f.val] for f in file_folds]
    weights = greedy_weights(
        np.stack([np.concatenate(f["oof"]) for f in fits]), np.concatenate(ys), ens.selection_rounds
    )
    used = [i for i, w in enumerate(weights) if w > 0]
    boosters, rounds = {}, {}
    for i in used:
        mb, fit = members[i], fits[i]
        rounds[i] = final_rounds(fit["fold_rounds"], fit["fold_sizes"], rows.n_rows)
        if _is_single(mb, cfg, names, single) and single.num_boosted_rounds() == rounds[i]:
            boosters[i] = single
            log.info("ensemble: member %d is the single final model: reused", i)
            continue
        t0 = time.monotonic()
        boosters[i] = fit_final(
            cfg, rows, mb.params, rounds[i], max(1, num_cpus), spill_root, seed=mb.seed,
            columns=None if list(mb.features) == names else mb.features,
        )  # fmt: skip
        log.info(
            "ensemble: member %d fit on %d samples (%d rounds) in %.0f s",
            i, rows.n_rows, rounds[i], time.monotonic() - t0,
        )  # fmt: skip
    model = EnsembleModel(
        boosters=[boosters[i] for i in used],
        weights=[float(weights[i]) for i in used],
        features=[list(members[i].features) for i in used],
    )
    p_ens = [sum(weights[i] * fits[i]["oof"][k] for i in used) for k in range(len(folds))]
    table = [
        {
            "member": i,
            "config_rank": mb.rank,
            "seed": mb.seed,
            "features": len(mb.features),
            "feature_names": list(mb.features) if len(mb.features) < len(names) else None,
            "rounds": rounds.get(i),  # None: not fit on the whole training set (weight 0)
            "weight": round(float(weights[i]), 6),
            "params": {k: _py(v) for k, v in mb.params.items()},
            "cv": cv_summary(ys, fits[i]["oof"]),
            "folds_from_cache": fits[i]["folds_cached"],
        }
        for i, mb in enumerate(members)
    ]
    info = {
        "method": "probability averaging, greedy forward selection on out-of-fold log loss",
        "top_k": ens.top_k,
        "seeds": list(ens.seeds),
        "feature_fraction": ens.feature_fraction,
        "candidates": len(members),
        "used": len(used),
        "members": table,
        "cv": cv_summary(ys, p_ens),
        "cv_single": table[0]["cv"],
        "cv_samples": len(m),
        "weights_chosen_on": "out-of-fold predictions of the search's purged CV folds (no OOS bar)",
        "final_fits": sum(boosters[i] is not single for i in used),
    }
    model.info = info
    log.info(
        "ensemble: %d of %d members weighted; CV log loss %.5f vs best single %.5f",
        len(used),
        len(members),
        info["cv"]["log_loss"],
        info["cv_single"]["log_loss"],
    )
    return model, info


def _booster(raw: bytes) -> xgb.Booster:
    b = xgb.Booster()
    b.load_model(bytearray(raw))
    return b


def comparison(
    info: dict, single_bt: dict, ensemble_bt: dict, horizon: int = 1, capital: float = 1.0
) -> dict:
    """metrics.json's `ensemble` section: the ensemble against the best single model, with the
    paired differences' SEs on the same out-of-sample bars and sessions (`differences`)."""
    trading = ("sharpe", "total_return", "max_drawdown", "trades", "win_rate")
    cls = ("accuracy", "auc", "log_loss", "samples")
    oos = {
        "ensemble": {k: ensemble_bt["oos"][k] for k in cls},
        "single": {k: single_bt["oos"][k] for k in cls},
    }
    bt = {
        "ensemble": {k: ensemble_bt["stats"].get(k) for k in trading},
        "single": {k: single_bt["stats"].get(k) for k in trading},
    }
    cv = {"ensemble": info["cv"], "single": info["cv_single"]}
    y, p_single = pooled_predictions(single_bt["results"])
    _, p_ens = pooled_predictions(ensemble_bt["results"])
    acc, acc_se = paired_accuracy_difference(y, p_ens, p_single, len(y) / max(1, horizon))
    sharpe, sharpe_se = sharpe_difference(
        _daily_returns(ensemble_bt["equity"], capital), _daily_returns(single_bt["equity"], capital)
    )
    differences = {  # ensemble - single, paired on the same bars / sessions
        "oos_accuracy": acc,
        "oos_accuracy_se": acc_se,
        "sharpe": sharpe,
        "sharpe_se": sharpe_se,
        "se_note": "accuracy: paired hit differences over labels / horizon effective samples; "
        "Sharpe: Jobson-Korkie with Memmel's correction on the daily returns",
    }
    return {
        "differences": differences,
        **{k: v for k, v in info.items() if k not in ("cv", "cv_single")},
        "cv": cv,
        "oos": oos,
        "backtest": bt,
        "improvement": {
            "cv_log_loss": cv["single"]["log_loss"] - cv["ensemble"]["log_loss"],
            "cv_accuracy": cv["ensemble"]["accuracy"] - cv["single"]["accuracy"],
            "oos_accuracy": oos["ensemble"]["accuracy"] - oos["single"]["accuracy"],
            "oos_log_loss": oos["single"]["log_loss"] - oos["ensemble"]["log_loss"],
            "sharpe": _diff(bt["ensemble"]["sharpe"], bt["single"]["sharpe"]),
        },
        "note": "the ensemble's CV figures are measured on the folds its weights were chosen on "
        "(optimistic by construction); its OOS and backtest figures are not",
    }


def _daily_returns(equity: pd.Series, capital: float) -> np.ndarray:
    path = np.concatenate(([capital], np.asarray(equity, dtype=float)))
    return path[1:] / path[:-1] - 1.0


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b):
        return None
    return float(a - b)


def save_ensemble(model_dir: Path, model: EnsembleModel) -> Path:
    """Write `model_dir/ensemble/` (members + ensemble.json) atomically: temp dir, then rename."""
    final = Path(model_dir) / ENSEMBLE_DIR
    with atomic_dir(final) as tmp:
        files = []
        for i, b in enumerate(model.boosters):
            name = f"member_{i}.ubj"
            b.save_model(tmp / name)
            files.append(name)
        spec = {
            "members": [
                {"file": f, "weight": w, "features": feats}
                for f, w, feats in zip(files, model.weights, model.features, strict=True)
            ],
            "info": model.info,
        }
        (tmp / ENSEMBLE_FILE).write_text(json.dumps(spec, indent=2, default=str) + "\n")
    return final


def load_ensemble(model_dir: str | Path) -> EnsembleModel | None:
    """The ensemble saved in `model_dir`, or None when the model has none."""
    spec_path = Path(model_dir) / ENSEMBLE_DIR / ENSEMBLE_FILE
    if not spec_path.exists():
        return None
    spec = json.loads(spec_path.read_text())
    boosters = []
    for mb in spec["members"]:
        b = xgb.Booster()
        b.load_model(spec_path.parent / mb["file"])
        boosters.append(b)
    return EnsembleModel(
        boosters=boosters,
        weights=[mb["weight"] for mb in spec["members"]],
        features=[mb["features"] for mb in spec["members"]],
        info=spec.get("info", {}),
    )


def print_comparison(section: dict) -> None:
    """Console lines: the ensemble against the best single model."""
    cv, oos, bt = section["cv"], section["oos"], section["backtest"]
    print(f"  ensemble ({section['used']} of {section['candidates']} members weighted) vs single:")
    print(
        f"    CV log loss {cv['ensemble']['log_loss']:.5f} vs {cv['single']['log_loss']:.5f}; "
        f"OOS accuracy {oos['ensemble']['accuracy']:.4f} vs {oos['single']['accuracy']:.4f}; "
        f"Sharpe {_f(bt['ensemble']['sharpe'])} vs {_f(bt['single']['sharpe'])}"
    )
    if d := section.get("differences"):
        print(
            f"    ensemble - single: OOS accuracy {_f(d['oos_accuracy'], 4)} (SE "
            f"{_f(d['oos_accuracy_se'], 4)}), Sharpe {_f(d['sharpe'])} (SE {_f(d['sharpe_se'])})"
        )
    print()


def _f(v: float | None, d: int = 2) -> str:
    return "n/a" if v is None or v != v else f"{v:.{d}f}"
