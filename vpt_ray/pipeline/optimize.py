"""Optimize as an action: the seed's "optimize if metrics degrade, reduce features/estimators",
done rather than named.

When a phase ends in "optimize" (a metric fell below the previous phase's beyond noise) or
"stop: overfitting", `reduce` looks for the smallest configuration that does as well as the full
one on the run's own purged CV folds, and `write_optimized` puts it next to the report as an
overlay (`optimized.yaml`). `python -m vpt_ray.phase N --optimize RUN_ID` (or
`vpt optimize RUN_ID`) reruns the phase with the originating run's config plus that overlay, and
its report and tracker row say how it compares with the run it came from and whether it
recovered.

The reduction, all on the search's CV data (the purged folds, each split for early stopping as in
the search; the validation folds are what is scored), with the search's best hyperparameters:

1. Candidates are every feature the store builds (`features.windows`), not only the run's
   `features.include`: a run that degraded because features were dropped gets them back if they
   matter. The full set's CV log loss (pooled over the validation folds) and its SE (per-sample
   losses on the effective samples, `vpt_ray.validation.uncertainty`) are the reference.
2. Features are ranked by out-of-fold permutation importance: on each fold's validation rows,
   the rise in log loss when one feature's column is shuffled (seeded), averaged over folds. Not
   gain: gain rewards features the trees split on in training, whether or not they help out of
   sample.
3. The one-SE rule (Breiman et al. 1984): the smallest top-k set whose CV log loss stays within
   one SE of the full set's; then, on that set, the shallowest `max_depth` by the same rule; then
   the fewest boosting rounds (a cap on `model.n_estimators`) by the same rule. Every candidate is
   judged against the same reference (no drift).

Cost: one CV fit of the full set, a prediction per feature and fold, and one CV fit per candidate
tried (about 10 for 36 features); only on an optimize or overfitting-stop verdict.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb
import yaml

from vpt_ray.core import storage
from vpt_ray.core.config import Config, ConfigError, load_config
from vpt_ray.features.samples import SampleFile, fold_dmatrix, read_rows
from vpt_ray.features.store import Matrix
from vpt_ray.model.cv import EarlyStopFold, early_stopping_folds
from vpt_ray.model.folds import train_early_stopped, xgb_params
from vpt_ray.model.search_result import SearchResult
from vpt_ray.validation.uncertainty import difference_se, effective_samples, mean_se

log = logging.getLogger("vpt_ray.optimize")
OPTIMIZED_FILE = "optimized.yaml"
EPS = 1e-7


def wanted(decision: dict) -> bool:
    """True for the verdicts that call for a reduced configuration: "optimize", and "stop" when
    the stop is for overfitting (not for memory)."""
    if decision.get("verdict") == "optimize":
        return True
    return decision.get("verdict") == "stop" and any(
        c["rule"] == "overfitting" and c["fired"] for c in decision.get("checks", [])
    )


def _losses(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


@dataclass
class CvFit:
    """One configuration's CV: pooled per-sample validation losses, its mean, SE and rounds."""

    log_loss: float
    se: float
    rounds: list[int]
    losses: np.ndarray
    boosters: list[xgb.Booster] = dataclasses.field(default_factory=list, repr=False)


class FoldData:
    """The CV data of the reduction: the sample file (all candidate features), labels, the
    early-stopping folds and the validation rows' features in memory (for permutation)."""

    def __init__(self, samples: SampleFile, y: np.ndarray, folds: list[EarlyStopFold], overlap):
        self.samples, self.y, self.overlap = samples, y, overlap
        self.folds = [EarlyStopFold(*(np.sort(p) for p in f)) for f in folds]
        self.names = list(samples.rule.names)
        self.n_val = sum(len(f.val) for f in self.folds)

    def fit(self, hp: dict, columns: list[int], n_estimators: int, cfg: Config, nthread: int,
            keep: bool = False) -> CvFit:  # fmt: skip
        """CV of `hp` on the feature columns `columns`: fit on each fold's fit rows, rounds
        chosen on its stop slice, validation rows scored."""
        params = xgb_params(hp, nthread, cfg.model.max_bin, seed=cfg.search.seed)
        losses, rounds, boosters = [], [], []
        for f in self.folds:
            dfit = fold_dmatrix(self.samples, f.fit, self.y, cfg.model.max_bin, columns=columns)
            dstop, dval = (
                fold_dmatrix(self.samples, r, self.y, cfg.model.max_bin, ref=dfit, columns=columns)
                for r in (f.stop, f.val)
            )
            booster, n = train_early_stopped(
                params, dfit, dstop, n_estimators, cfg.model.early_stopping_rounds
            )
            p = booster.predict(dval, iteration_range=(0, n))
            losses.append(_losses(self.y[f.val], p))
            rounds.append(n)
            if keep:
                boosters.append(booster)
            del dfit, dstop, dval
        pooled = np.concatenate(losses)
        return CvFit(
            float(pooled.mean()),
            mean_se(pooled, self.n_val * self.overlap),
            rounds,
            pooled,
            boosters,
        )

    def permutation_importance(self, fit: CvFit, seed: int) -> list[dict]:
        """Per feature: the mean rise of the pooled validation log loss when its column is
        shuffled within each fold's validation rows (seeded), and the rise's SE."""
        rng = np.random.default_rng(seed)
        rises = np.zeros((len(self.names), self.n_val))
        at = 0
        for f, booster, n in zip(self.folds, fit.boosters, fit.rounds, strict=True):
            X = read_rows(self.samples, f.val)
            y = self.y[f.val]
            base = _losses(y, booster.inplace_predict(X, iteration_range=(0, n)))
            for j in range(X.shape[1]):
                keep = X[:, j].copy()
                X[:, j] = keep[rng.permutation(len(keep))]
                p = booster.inplace_predict(X, iteration_range=(0, n))
                rises[j, at : at + len(y)] = _losses(y, p) - base
                X[:, j] = keep
            at += len(y)
        n_eff = self.n_val * self.overlap
        out = [
            {"feature": name, "importance": float(r.mean()), "se": mean_se(r, n_eff)}
            for name, r in zip(self.names, rises, strict=True)
        ]
        return sorted(out, key=lambda d: -d["importance"])


def subset_sizes(n: int) -> list[int]:
    """Top-k sizes tried, smallest first: about 1/8, 1/6, 1/4, 1/3, 1/2, 3/4 of `n` (>= 2)."""
    sizes = {max(2, math.ceil(n * f)) for f in (1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 3 / 4)}
    return sorted(k for k in sizes if k < n)


def within_one_se(loss: float, reference: float, se: float) -> bool:
    """The one-SE rule: `loss` is no worse than `reference` + one SE."""
    return loss <= reference + (0.0 if math.isnan(se) else se)


def reduce(cfg: Config, data: FoldData, result: SearchResult, nthread: int) -> tuple[dict, dict]:
    """(overlay, section): the reduced configuration as a config overlay, and the figures that
    chose it (JSON-ready)."""
    hp = dict(result.best_params)
    n_est = cfg.model.n_estimators
    every = list(range(len(data.names)))
    full = data.fit(hp, every, n_est, cfg, nthread, keep=True)
    ref, se = full.log_loss, full.se
    ranked = data.permutation_importance(full, cfg.search.seed)
    full.boosters.clear()
    order = [data.names.index(r["feature"]) for r in ranked]
    tried = [{"candidate": f"all {len(every)} features", "log_loss": ref, "within_1se": True}]

    def judge(label: str, fit: CvFit) -> bool:
        ok = within_one_se(fit.log_loss, ref, se)
        tried.append({"candidate": label, "log_loss": fit.log_loss, "within_1se": ok})
        log.info("optimize: %s: CV log loss %.5f (full %.5f + SE %.5f): %s", label,
                 fit.log_loss, ref, se, "within 1 SE" if ok else "worse")  # fmt: skip
        return ok

    chosen, chosen_fit = every, full
    for k in subset_sizes(len(every)):
        cols = sorted(order[:k])
        fit = data.fit(hp, cols, n_est, cfg, nthread)
        if judge(f"top {k} features", fit):
            chosen, chosen_fit = cols, fit
            break
    depth = int(hp["max_depth"])
    for d in range(2, depth):
        fit = data.fit({**hp, "max_depth": d}, chosen, n_est, cfg, nthread)
        if judge(f"max_depth {d}", fit):
            depth, chosen_fit = d, fit
            break
    hp_d = {**hp, "max_depth": depth}
    rounds = int(np.median(chosen_fit.rounds))
    cap = None
    for c in sorted({max(1, rounds // 4), max(1, rounds // 2)}):
        if c >= min(rounds, n_est):
            continue
        fit = data.fit(hp_d, chosen, c, cfg, nthread)
        if judge(f"at most {c} rounds", fit):
            cap, chosen_fit = c, fit
            break
    names = [data.names[j] for j in chosen]
    overlay: dict = {}
    current = cfg.features.model_features()
    if names != current:
        overlay["features"] = {"include": names}
    if depth < int(hp["max_depth"]):
        lo = min(cfg.search.space.max_depth[0], depth)
        overlay["search"] = {"space": {"max_depth": [lo, depth]}}
    if cap is not None:
        overlay["model"] = {"n_estimators": cap}
    section = {
        "rule": (
            "smallest configuration whose CV log loss (pooled over the purged validation folds, "
            "early stopping on each training fold's last sessions) is within one SE of the full "
            "feature set's, with the search's best hyperparameters: features by out-of-fold "
            "permutation importance, then max_depth, then rounds"
        ),
        "reference_log_loss": ref,
        "reference_se": se,
        "chosen_log_loss": chosen_fit.log_loss,
        "difference_se": difference_se(se, chosen_fit.se),
        "features": names,
        "features_before": current,
        "max_depth": depth,
        "max_depth_before": int(hp["max_depth"]),
        "n_estimators": cap or n_est,
        "n_estimators_before": n_est,
        "importance": ranked,
        "tried": tried,
        "overlay": overlay,
    }
    return overlay, section


def fold_data(cfg: Config, store: dict, m: Matrix, folds: list, work_dir: Path) -> FoldData:
    """The reduction's CV data: the run's samples when it used every feature, else the same
    training period with every feature (a second sample file under `work_dir`)."""
    from vpt_ray.pipeline import (
        stages,  # stages imports the pipeline; this module is imported by it
    )

    if cfg.features.include is not None:
        every = cfg.model_copy(
            update={"features": cfg.features.model_copy(update={"include": None})}
        )
        m, folds = stages.make_folds(every, store, samples_dir=work_dir / "samples_all")
    m, folds = stages.search_sample(cfg, m, folds)
    if m.samples is None:
        raise ValueError("optimize needs the samples on disk (store.load_samples)")
    es = early_stopping_folds(
        folds, m.pos, m.label_end, m.slots, cfg.cv.early_stopping_fraction, cfg.embargo_bars
    )
    rows = m.sample_rows()
    file_folds = [EarlyStopFold(*(rows[p] for p in f)) for f in es]
    y = np.zeros(m.samples.rows, dtype=np.float32)
    y[rows] = m.y
    overlap = effective_samples(1, cfg.labels.stride, cfg.labels.horizon)
    return FoldData(m.samples, y, file_folds, overlap)


def write_optimized(report_dir: Path, run_id: str, phase: int, verdict: str, section: dict) -> Path:
    """`optimized.yaml` next to the report: the overlay, with what chose it as comments."""
    from vpt_ray.core.run import write_text_atomic

    lines = [
        f"# Reduced configuration from run {run_id} (verdict: {verdict}).",
        f"# {section['rule']}.",
        f"# Full set: CV log loss {section['reference_log_loss']:.5f} "
        f"(SE {section['reference_se']:.5f}); chosen: {section['chosen_log_loss']:.5f}.",
        f"# Features {len(section['features_before'])} -> {len(section['features'])}, max_depth "
        f"{section['max_depth_before']} -> {section['max_depth']}, n_estimators "
        f"{section['n_estimators_before']} -> {section['n_estimators']}.",
        f"# Run it: python -m vpt_ray.phase {phase} --optimize {run_id}  "
        f"(or: vpt optimize {run_id})",
    ]
    overlay = section["overlay"]
    body = yaml.safe_dump(overlay, sort_keys=False) if overlay else "{}\n"
    path = report_dir / OPTIMIZED_FILE
    write_text_atomic(path, "\n".join(lines) + "\n" + body)
    return path


def run_reduction(
    cfg: Config, ctx, store: dict, m: Matrix, folds: list, result: SearchResult, nthread: int,
    decision: dict,
) -> dict:  # fmt: skip
    """Reduce, write `optimized.yaml` into the run's report dir; metrics.json's `optimize`."""
    try:
        data = fold_data(cfg, store, m, folds, ctx.work_dir)
        overlay, section = reduce(cfg, data, result, nthread)
    finally:  # the every-feature sample file, when the run used a subset: scratch
        shutil.rmtree(ctx.work_dir / "samples_all", ignore_errors=True)
    path = write_optimized(ctx.report_dir, ctx.run_id, cfg.phase, decision["verdict"], section)
    section["file"] = str(ctx.report_location / path.name)
    section["command"] = f"python -m vpt_ray.phase {cfg.phase} --optimize {ctx.run_id}"
    if not overlay:
        section["note"] = "no reduction within one SE: the full configuration is already smallest"
    log.info("optimize: reduced configuration written to %s (%s)", section["file"],
             overlay or "no change")  # fmt: skip
    return section


def run_reduction_safely(*args: object) -> dict:
    """`run_reduction`, whose failure is recorded in the section instead of failing a finished
    run (its report and model stand on their own)."""
    try:
        return run_reduction(*args)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - reported in metrics.json and the log
        log.exception("optimize: the reduced configuration could not be computed")
        return {"error": f"{type(exc).__name__}: {exc}"}


# -- running a phase with it ----------------------------------------------------------------------


def optimized_config(base: Config, run_id: str, overrides: list[str]) -> tuple[Config, dict]:
    """The config of `--optimize RUN_ID`: the originating run's resolved config (its report's
    config.yaml, under `base`'s paths.artifacts) + its `optimized.yaml` + `overrides`; and
    what the run is compared with (`origin`)."""
    root = Path.cwd()
    report = storage.parse(base.paths.artifacts, root, base.gcs) / "reports" / run_id
    files = {n: report / n for n in ("config.yaml", "metrics.json", OPTIMIZED_FILE)}
    missing = [n for n in ("config.yaml", "metrics.json") if not storage.exists(files[n])]
    if missing:
        raise ConfigError(
            f"--optimize {run_id}: {report} has no {', '.join(missing)}: is it a finished run "
            "under paths.artifacts?"
        )
    metrics = json.loads(storage.read_text(files["metrics.json"]))
    if metrics.get("phase") != base.phase:
        raise ConfigError(
            f"--optimize {run_id}: that run is phase {metrics.get('phase')}, not {base.phase}: "
            f"run `python -m vpt_ray.phase {metrics.get('phase')} --optimize {run_id}`"
        )
    if not storage.exists(files[OPTIMIZED_FILE]):
        raise ConfigError(
            f"--optimize {run_id}: {report} has no {OPTIMIZED_FILE}: its verdict was "
            f"{metrics['decision']['verdict']}, not optimize or stop: overfitting, so no reduced "
            "configuration was written"
        )
    resolved = yaml.safe_load(storage.read_text(files["config.yaml"])) or {}
    overlay = yaml.safe_load(storage.read_text(files[OPTIMIZED_FILE])) or {}
    with _temp_yaml(_merge(resolved, overlay)) as path:
        cfg = load_config(config_path=path, overrides=overrides)
    origin = {
        "run_id": run_id,
        "overlay": overlay,
        "metrics": {
            "accuracy": metrics["oos"]["accuracy"],
            "accuracy_se": metrics["oos"].get("accuracy_se"),
            "sharpe": metrics["backtest"].get("sharpe"),
            "sharpe_se": metrics["backtest"].get("sharpe_se"),
            "cv_log_loss": metrics["cv"].get("log_loss"),
            "features": metrics["features"]["count"],
            "verdict": metrics["decision"]["verdict"],
        },
    }
    return cfg, origin


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _temp_yaml:  # noqa: N801 - a context manager used like a function
    """A temporary YAML file holding `data` (removed on exit)."""

    def __init__(self, data: dict):
        self.data = data

    def __enter__(self) -> Path:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="vpt-optimize-", suffix=".yaml")
        with open(fd, "w") as fh:
            yaml.safe_dump(self.data, fh, sort_keys=False)
        self.path = Path(name)
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def comparison(origin: dict, metrics: dict, se_z: float = 1.0) -> dict:
    """metrics.json's `optimized_from`: this run against the run it came from, and whether it
    recovered (its verdict no longer calls for optimization, and no metric is worse than the
    origin's by more than `se_z` SEs of the difference)."""
    before = origin["metrics"]
    rows = {}
    for key, now, se_now in (
        ("accuracy", metrics["oos"]["accuracy"], metrics["oos"].get("accuracy_se")),
        ("sharpe", metrics["backtest"].get("sharpe"), metrics["backtest"].get("sharpe_se")),
    ):
        b = before.get(key)
        if b is None or now is None:
            continue
        se = difference_se(se_now, before.get(f"{key}_se") or se_now)
        rows[key] = {"from": b, "to": now, "change": now - b, "se": se}
    rows["features"] = {"from": before.get("features"), "to": metrics["features"]["count"]}
    still = wanted(metrics["decision"])
    worse = [k for k, r in rows.items() if "se" in r and r["change"] < -se_z * (r["se"] or 0)]
    recovered = not still and not worse
    why = []
    if still:
        why.append(f"its verdict is still {metrics['decision']['verdict']}")
    why += [f"{k} fell by more than {se_z:g} SE against the originating run" for k in worse]
    return {
        "run_id": origin["run_id"],
        "overlay": origin["overlay"],
        "compare": rows,
        "verdict_before": before.get("verdict"),
        "verdict_after": metrics["decision"]["verdict"],
        "recovered": recovered,
        "summary": _summary(origin["run_id"], rows, recovered, why),
    }


def _summary(run_id: str, rows: dict, recovered: bool, why: list[str]) -> str:
    parts = []
    for key, d in (("accuracy", 4), ("sharpe", 2)):
        r = rows.get(key)
        if r:
            parts.append(
                f"OOS {key} {r['from']:.{d}f} -> {r['to']:.{d}f} ({r['change']:+.{d}f}, SE "
                f"{r['se']:.{d}f})"
            )
    f = rows["features"]
    parts.append(f"features {f['from']} -> {f['to']}")
    verdict = "recovered" if recovered else "did not recover (" + "; ".join(why) + ")"
    return f"optimized from {run_id}: {', '.join(parts)}: {verdict}"
