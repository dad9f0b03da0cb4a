"""`python -m vpt_ray.audit --phase N`: the leakage audit. Exit 0 only when every check passes.

Four checks, each printed with the figure behind it:

- null market: the same phase on `--null-draws` synthetic markets with `signal_strength: 0`
  (same tickers, windows, search; the synthetic seed differs per draw) must show no edge: the
  OOS skill over the naive predictor and the backtest's Sharpe after costs, each combined over
  the draws (Stouffer: Z = sum of the draws' z = figure / SE, over sqrt(draws)), must not be
  significantly above 0, and no draw may advance;
- shuffled labels: labels permuted within the training set give a CV skill over the naive
  predictor that is not significantly above 0;
- feature causality: every feature, recomputed with all bars after t replaced by garbage, is
  unchanged at bars <= t (three cut points per ticker);
- split audit: no training sample's label window overlaps a validation window or the backtest
  window, and the embargo holds, per ticker and pooled.

The false-alarm rate is stated and holds over seeds: the three statistical checks (null skill,
null Sharpe, shuffled labels) are one-sided tests at `--false-alarm` / 3 each (Bonferroni), so an
honest pipeline fails the audit with probability at most `--false-alarm` (default 1%) whatever
the seed; the two structural checks cannot fail by chance. (The audit used to test one null
draw at a one-sided 5%: as shipped, phase 1's seed 7 was the one draw in twenty that fails.)
Under the null the z's are at most standard normal: costs pull the null Sharpe below 0, and the
overlap-aware SEs count overlapping labels once per `labels.horizon` bars.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from vpt_ray.core.config import Config, load_config
from vpt_ray.pipeline.cli import add_config_args, failure_exit, guarded, run_locations

log = logging.getLogger("vpt_ray.audit")
NULL_DRAWS = 3  # null markets per audit (different synthetic seeds)
FALSE_ALARM = 0.01  # the whole audit's false-alarm rate on an honest pipeline
STATISTICAL_CHECKS = 3  # null skill, null Sharpe, shuffled labels: Bonferroni over these


@dataclass
class Check:
    name: str
    figure: str
    rule: str
    passed: bool


def critical_z(false_alarm: float, tests: int = STATISTICAL_CHECKS) -> float:
    """The one-sided critical value of each of `tests` statistical checks so that together they
    fail an honest pipeline with probability at most `false_alarm` (Bonferroni)."""
    if not 0 < false_alarm < 1:
        raise ValueError(f"false alarm rate {false_alarm!r}: must lie in (0, 1)")
    return NormalDist().inv_cdf(1 - false_alarm / tests)


def z_score(figure: float | None, se: float | None) -> float:
    """figure / SE; 0 when there is no figure or the SE is 0 or missing (no evidence of an
    edge: a model equal to the naive predictor, a backtest without a trade)."""
    if figure is None or se is None or not math.isfinite(figure) or not math.isfinite(se):
        return 0.0
    return figure / se if se > 0 else 0.0


def stouffer(zs: list[float]) -> float:
    """Combined z of independent draws: sum / sqrt(count) (standard normal under the null)."""
    return float(sum(zs) / math.sqrt(len(zs))) if zs else 0.0


def null_market(
    cfg: Config, workdir: Path, draws: int = NULL_DRAWS, false_alarm: float = FALSE_ALARM
) -> list[Check]:
    """Run the phase on `draws` no-signal synthetic markets in a scratch workspace."""
    from vpt_ray.pipeline.phase import run_phase

    runs = []
    for i in range(draws):
        null_cfg = cfg.model_copy(deep=True)
        null_cfg.data.sources = ["synthetic"]
        null_cfg.data.dir = str(workdir / f"data-{i}")
        null_cfg.synthetic.signal_strength = 0.0
        null_cfg.synthetic.drift = 0.0
        null_cfg.synthetic.seed = cfg.synthetic.seed + i
        null_cfg.paths.artifacts = str(workdir / "artifacts")
        null_cfg.paths.logs = str(workdir / "logs")
        null_cfg.paths.tracker = str(workdir / "TRACKER.md")
        runs.append(run_phase(null_cfg, run_id=f"audit-null-{i}"))
    crit = critical_z(false_alarm)
    rule = f"Z <= {crit:.2f}"
    skill_z = [z_score(m["oos"].get("skill"), m["oos"].get("skill_se")) for m in runs]
    sharpe_z = [z_score(m["backtest"].get("sharpe"), m["backtest"].get("sharpe_se")) for m in runs]
    z_skill, z_sharpe = stouffer(skill_z), stouffer(sharpe_z)
    skills = ", ".join(
        f"{_num(o.get('skill'), 4)} (SE {_num(o.get('skill_se'), 4)}, accuracy "
        f"{_num(o['accuracy'], 4)} vs naive {_num(o.get('naive_accuracy'), 4)})"
        for o in (m["oos"] for m in runs)
    )
    sharpes = ", ".join(
        f"{_num(m['backtest'].get('sharpe'))} (SE {_num(m['backtest'].get('sharpe_se'))}, "
        f"{m['backtest']['trades']} trades)"
        for m in runs
    )
    verdicts = [m["decision"]["verdict"] for m in runs]
    return [
        Check(
            "null market: OOS skill over naive",
            f"Z = {z_skill:+.2f} over {draws} draws; skill {skills}",
            rule,
            z_skill <= crit,
        ),
        Check(
            "null market: Sharpe after costs",
            f"Z = {z_sharpe:+.2f} over {draws} draws; Sharpe {sharpes}",
            rule,
            z_sharpe <= crit,
        ),
        Check(
            "null market: verdict",
            ", ".join(verdicts),
            "no draw advances",
            "advance" not in verdicts,
        ),
    ]


def _num(v: float | None, d: int = 2) -> str:
    return "n/a" if v is None or v != v else f"{v:.{d}f}"


def shuffled_labels(cfg: Config, matrix, folds, false_alarm: float = FALSE_ALARM) -> Check:
    """CV on labels permuted within the training set: the skill over each fold's naive
    predictor (its fit rows' majority) must not be significantly above 0."""
    from vpt_ray.model.cv import early_stopping_folds
    from vpt_ray.model.folds import fit_folds
    from vpt_ray.validation.baseline import cv_naive_figures
    from vpt_ray.validation.uncertainty import effective_samples

    rng = np.random.default_rng(cfg.search.seed)
    y = matrix.y.copy()
    rng.shuffle(y)
    hp = {
        "max_depth": 6,
        "learning_rate": 0.1,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 1.0,
        "reg_alpha": 1e-3,
        "reg_lambda": 1.0,
    }
    es_folds = early_stopping_folds(
        folds,
        matrix.pos,
        matrix.label_end,
        matrix.slots,
        cfg.cv.early_stopping_fraction,
        cfg.embargo_bars,
    )
    out = fit_folds(
        hp,
        matrix.X,
        y,
        es_folds,
        n_estimators=cfg.model.n_estimators,
        early_stopping_rounds=cfg.model.early_stopping_rounds,
        max_bin=cfg.model.max_bin,
        nthread=2,
    )
    overlap = effective_samples(1, cfg.labels.stride, cfg.labels.horizon)
    naive = cv_naive_figures(out["folds"], overlap)
    z = z_score(naive["skill"], naive["skill_se"])
    crit = critical_z(false_alarm)
    return Check(
        "shuffled labels: CV skill over naive",
        f"z = {z:+.2f}; skill {naive['skill']:+.4f} (SE {naive['skill_se']:.4f}), CV accuracy "
        f"{out['val_accuracy']:.4f} vs naive {naive['naive_accuracy']:.4f}",
        f"z <= {crit:.2f}",
        z <= crit,
    )


def feature_causality(cfg: Config, data) -> Check:
    from vpt_ray.data.local import read_bars
    from vpt_ray.data.resample import resample_bars
    from vpt_ray.features.causal import build_features, feature_names

    names = feature_names(cfg.features.windows)
    worst, checked = 0.0, 0
    rng = np.random.default_rng(0)
    for td in data.tickers.values():
        bars = resample_bars(
            read_bars(td.path, cfg.data.start, cfg.data.end, cfg.data.vwap_tolerance), cfg.data.bar
        ).iloc[:20_000]
        args = (cfg.features.windows, cfg.labels.horizon, cfg.data.bar_minutes, cfg.data.calendar)
        base = build_features(bars, *args)
        for cut in (len(bars) // 4, len(bars) // 2, 3 * len(bars) // 4):
            g = bars.copy()
            n = len(g) - cut - 1
            scale = np.exp(rng.normal(0, 0.5, n))
            for col in ("open", "high", "low", "close", "vwap"):
                g.loc[cut + 1 :, col] = g.loc[cut + 1 :, col].to_numpy() * scale
            g.loc[cut + 1 :, "volume"] = rng.integers(1, 10**6, n).astype(float)
            g.loc[cut + 1 :, "transactions"] = rng.integers(1, 10**4, n)
            moved = build_features(g, *args)
            a = base.loc[:cut, names].to_numpy(np.float64)
            b = moved.loc[:cut, names].to_numpy(np.float64)
            diff = np.nanmax(np.abs(a - b)) if a.size else 0.0
            same_nan = bool((np.isnan(a) == np.isnan(b)).all())
            worst = max(worst, float(diff) if same_nan else float("inf"))
            checked += 1
    return Check(
        "feature causality",
        f"max change at <= t: {worst:g} over {checked} cuts x {len(names)} features",
        "== 0",
        worst == 0.0,
    )


def split_audit(cfg: Config, matrix, folds) -> Check:
    import pandas as pd

    from vpt_ray.features.causal import clock_positions, clock_slots

    emb = cfg.embargo_bars
    violations = 0
    for tr, va in folds:
        lo, hi = matrix.pos[va].min(), matrix.pos[va].max()
        t_pos, t_end = matrix.pos[tr], matrix.label_end[tr]
        overlap = (t_end >= lo) & (t_pos <= hi)
        too_close = (t_pos >= lo - emb) & (t_pos <= hi + emb)
        # the clock is shared by all tickers, so this covers each ticker and every pair of them
        violations += int(overlap.sum() + too_close.sum())
    bt_start = pd.Timestamp(cfg.backtest.start, tz="America/New_York").tz_convert("UTC")
    bt_pos = clock_positions(pd.Series([bt_start]), cfg.data.bar_minutes, cfg.data.calendar)[0]
    bt_pos -= bt_pos % clock_slots(cfg.data.bar_minutes)
    into_backtest = int((matrix.label_end >= bt_pos).sum())
    return Check(
        "split audit (purge, embargo, backtest)",
        f"{violations} fold violations, {into_backtest} labels reaching the backtest, "
        f"{len(folds)} folds, embargo {emb} bars",
        "0 and 0",
        violations == 0 and into_backtest == 0,
    )


def run_audit(
    cfg: Config, draws: int = NULL_DRAWS, false_alarm: float = FALSE_ALARM
) -> list[Check]:
    from vpt_ray.core.resources import init_ray
    from vpt_ray.pipeline import stages

    init_ray(cfg.hardware)
    with tempfile.TemporaryDirectory(prefix="vpt-audit-") as tmp:
        work = Path(tmp)
        data = stages.load_data(cfg)
        store = stages.build_features(cfg, data, work / "features")
        matrix, folds = stages.make_folds(cfg, store)
        checks = [
            feature_causality(cfg, data),
            split_audit(cfg, matrix, folds),
            shuffled_labels(cfg, matrix, folds, false_alarm),
        ]
        checks += null_market(cfg, work / "null", draws, false_alarm)
    return checks


def print_table(checks: list[Check], false_alarm: float = FALSE_ALARM) -> None:
    w = max(len(c.name) for c in checks)
    r = max(len(c.rule) for c in checks)
    print(f"\n  {'check':<{w}}  {'rule':<{r}}  result  figure")
    for c in checks:
        print(f"  {c.name:<{w}}  {c.rule:<{r}}  {'PASS' if c.passed else 'FAIL':<6}  {c.figure}")
    print(
        f"\n  false-alarm rate: at most {false_alarm:.1%} for the whole audit on an honest "
        f"pipeline ({STATISTICAL_CHECKS} statistical checks, each one-sided at "
        f"{false_alarm / STATISTICAL_CHECKS:.2%}); the structural checks cannot fail by chance\n"
    )


@guarded
def main(argv: list[str] | None = None) -> int:
    from vpt_ray.core.run import setup_logging
    from vpt_ray.pipeline.parsers import prog

    parser = argparse.ArgumentParser(
        prog=prog("vpt_ray.audit"),
        description="Leakage audit of a phase: null market, shuffled labels, feature causality, "
        "split audit. Exits 0 only when every check passes.",
    )
    parser.add_argument(
        "--phase", type=int, choices=range(1, 6), default=1, metavar="N",
        help="audit phase N's settings (config/phaseN.yaml: tickers, windows, bars, search); "
        "with --config, that file over config/base.yaml instead (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--null-draws",
        type=int,
        default=NULL_DRAWS,
        metavar="N",
        help=f"null markets to run the phase on, each with its own synthetic seed (default "
        f"{NULL_DRAWS}); their z's are combined, so more draws add power, not false alarms",
    )
    parser.add_argument(
        "--false-alarm",
        type=float,
        default=FALSE_ALARM,
        metavar="P",
        help=f"the audit's false-alarm rate on an honest pipeline (default {FALSE_ALARM})",
    )
    add_config_args(parser)
    args = parser.parse_args(argv)
    if args.null_draws < 1 or not 0 < args.false_alarm < 1:
        print(
            f"error: --null-draws {args.null_draws} must be >= 1 and --false-alarm "
            f"{args.false_alarm} must lie in (0, 1)",
            file=sys.stderr,
        )
        return 2
    setup_logging(None)
    cfg = None
    try:
        cfg = load_config(
            phase=None if args.config else args.phase,
            config_path=args.config,
            overrides=args.overrides,
        )
        checks = run_audit(cfg, args.null_draws, args.false_alarm)
    except BaseException as exc:  # noqa: BLE001 - translated to an exit code
        return failure_exit(exc, run_locations(cfg))
    print_table(checks, args.false_alarm)
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
