"""`python -m vpt_ray.audit --phase N`: the leakage audit. Exit 0 only when every check passes.

Four checks, each printed with the figure behind it:

- null market: the same phase on a synthetic market with `signal_strength: 0` (same tickers,
  windows, search) must show no edge: OOS accuracy within 0.50 +- 0.01 and a backtest Sharpe after
  costs that is not significantly above 0 (probabilistic Sharpe ratio < 0.95);
- shuffled labels: labels permuted within the training set give CV accuracy within 3 standard
  errors of 0.50;
- feature causality: every feature, recomputed with all bars after t replaced by garbage, is
  unchanged at bars <= t (three cut points per ticker);
- split audit: no training sample's label window overlaps a validation window or the backtest
  window, and the embargo holds, per ticker and pooled.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpt_ray.core.config import Config, load_config

log = logging.getLogger("vpt_ray.audit")


@dataclass
class Check:
    name: str
    figure: str
    rule: str
    passed: bool


def null_market(cfg: Config, workdir: Path) -> list[Check]:
    """Run the phase on a no-signal synthetic market in a scratch workspace."""
    import pandas as pd

    from vpt_ray.pipeline.phase import run_phase
    from vpt_ray.validation.overfitting import probabilistic_sharpe_ratio

    null_cfg = cfg.model_copy(deep=True)
    null_cfg.data.sources = ["synthetic"]
    null_cfg.data.dir = str(workdir / "data")
    null_cfg.synthetic.signal_strength = 0.0
    null_cfg.paths.artifacts = str(workdir / "artifacts")
    null_cfg.paths.logs = str(workdir / "logs")
    null_cfg.paths.tracker = str(workdir / "TRACKER.md")
    m = run_phase(null_cfg, run_id="audit-null")
    acc = m["oos"]["accuracy"]
    eq = pd.read_parquet(workdir / "artifacts/reports/audit-null/equity.parquet")["equity"]
    returns = eq.pct_change().dropna().to_numpy()
    psr = probabilistic_sharpe_ratio(returns, 0.0) if returns.std() > 0 else 0.0
    return [
        Check(
            "null market: OOS accuracy",
            f"{acc:.4f} on {m['oos']['samples']:,} bars (up-rate {m['oos']['base_rate']:.3f})",
            "|acc - 0.50| <= 0.01",
            abs(acc - 0.5) <= 0.01,
        ),
        Check(
            "null market: Sharpe after costs",
            f"Sharpe {m['backtest']['sharpe']:.2f}, P(SR > 0) = {psr:.3f}",
            "P(SR > 0) < 0.95",
            psr < 0.95,
        ),
        Check(
            "null market: verdict",
            m["decision"]["verdict"],
            "not advance",
            m["decision"]["verdict"] != "advance",
        ),
    ]


def shuffled_labels(cfg: Config, matrix, folds) -> Check:
    from vpt_ray.model.cv import early_stopping_folds
    from vpt_ray.model.folds import fit_folds

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
    n_val = sum(len(va) for _, va in folds) / len(folds)
    se = 0.5 / np.sqrt(n_val)
    acc = out["val_accuracy"]
    return Check(
        "shuffled labels: CV accuracy",
        f"{acc:.4f} (SE {se:.4f})",
        "|acc - 0.50| <= 3 SE",
        abs(acc - 0.5) <= 3 * se,
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


def run_audit(cfg: Config) -> list[Check]:
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
            shuffled_labels(cfg, matrix, folds),
        ]
        checks += null_market(cfg, work / "null")
    return checks


def print_table(checks: list[Check]) -> None:
    w = max(len(c.name) for c in checks)
    f = max(len(c.figure) for c in checks)
    print(f"\n  {'check':<{w}}  {'figure':<{f}}  {'rule':<22}  result")
    for c in checks:
        print(f"  {c.name:<{w}}  {c.figure:<{f}}  {c.rule:<22}  {'PASS' if c.passed else 'FAIL'}")
    print()


def main(argv: list[str] | None = None) -> int:
    from vpt_ray.core.run import setup_logging
    from vpt_ray.pipeline.cli import add_config_args, user_error_exit
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
    add_config_args(parser)
    args = parser.parse_args(argv)
    setup_logging(None)
    try:
        cfg = load_config(
            phase=None if args.config else args.phase,
            config_path=args.config,
            overrides=args.overrides,
        )
        checks = run_audit(cfg)
    except BaseException as exc:  # noqa: BLE001 - translated to an exit code
        if (code := user_error_exit(exc)) is not None:
            return code
        raise
    print_table(checks)
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
