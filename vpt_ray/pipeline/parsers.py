"""The argument parsers of the run commands (`phase`, `train`, `optimize`) and their shared flags.

Why a module of its own: it imports nothing but the standard library, so `vpt phase --help` (or a
typo in a flag) answers at once; Ray, XGBoost, pandas and pydantic load only once a command runs.
Before, the help waited ~5 s for those imports on an idle 2-core machine (~12 s on a loaded one).
The commands parse here, then import the pipeline (`vpt_ray.pipeline.phase.run_cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

INVOKED_AS: dict[str, str] = {}  # {"command": "vpt phase"}: set by the `vpt` dispatcher

SAMPLE_DAYS_HELP = (
    "train and search on N trading sessions (exchange days, not calendar days: 365 sessions "
    "are about 1.45 years), one drawn per equal stratum of the training period (seeded by "
    "search.seed); the model's own out-of-sample window is unchanged. Sets cv.sample_days; the "
    "report states it"
)


def prog(module: str) -> str:
    """The command as the user typed it, for the usage line: `vpt phase` through the `vpt`
    dispatcher (`INVOKED_AS`: runpy replaces argv[0] with the module's file),
    `python scripts/X.py` for one of the seed's scripts, else `python -m MODULE`."""
    if "command" in INVOKED_AS:
        return INVOKED_AS["command"]
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.endswith(".py") and Path(argv0).parent.name == "scripts":
        return f"python {argv0}"
    return f"python -m {module}"


def add_config_args(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    parser.add_argument(
        "--config",
        default=default_config,
        metavar="PATH",
        help="YAML of your changes: config/base.yaml, then config/phaseN.yaml for a phase, then "
        "this file, then --set, each overlaying the one before (the run's config.yaml and "
        "status.json record the chain)",
    )
    add_set_arg(parser, "the config")
    parser.add_argument(
        "--run-id",
        "--run_id",
        default=None,
        help="name the run: letters, digits, '.', '_', '-' (default: time-phase-hash); "
        "a rerun with the same id replaces that run's model and report",
    )
    add_mlflow_arg(parser)


def add_set_arg(
    parser: argparse.ArgumentParser, over: str, example: str = "data.tickers=[AAPL,MSFT]"
) -> None:
    """`--set KEY=VALUE`, overriding one setting of `over` (what the command's config is)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one setting of {over} by its dotted key (config/base.yaml lists them), "
        f"e.g. --set {example}; repeatable; an unknown key or a bad value is an error",
    )


def add_mlflow_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="also log the run to MLflow (tracking.mlflow=true): tracking.uri, else "
        "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory",
    )


def add_sample_days_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sample-days",
        "--sample_days",  # the seed document's spelling
        type=int,
        default=None,
        metavar="N",
        help=SAMPLE_DAYS_HELP,
    )


def phase_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("vpt_ray.phase"),
        description="Run phase N of the scaling plan end to end: data, features, purged CV, "
        "Ray Tune search, final model, out-of-sample backtest, report, tracker and decision. "
        "With no local data, GCS credentials or Polygon key, it runs on the built-in "
        "synthetic market and says so. The feature store and the search are reused from "
        "artifacts/cache when a previous run computed them on the same data and settings.",
    )
    parser.add_argument("phase", type=int, choices=range(1, 6), metavar="N", help="phase 1-5")
    add_config_args(parser)
    add_sample_days_arg(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="recompute the feature store and the search even if the resume cache holds them",
    )
    parser.add_argument(
        "--optimize",
        default=None,
        metavar="RUN_ID",
        help="run the phase with the reduced configuration that RUN_ID's 'optimize' or 'stop: "
        "overfitting' verdict wrote (its config + optimized.yaml, then --set); the report and "
        "the tracker compare the two runs and say whether it recovered",
    )
    return parser


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("vpt_ray.train"),
        description="Train the VPT model: data -> features -> purged CV search on Ray Tune -> "
        "final fit, saved to artifacts/models/{run_id}/ (no backtest). The run's CV figures go "
        "to artifacts/reports/{run_id}/metrics.json and to the scaling tracker's training table; "
        "the last lines printed say how to backtest the model.",
    )
    add_config_args(parser, default_config="config/base.yaml")
    add_sample_days_arg(parser)
    return parser


def optimize_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("vpt_ray.optimize"),
        description="Rerun a phase with the reduced configuration an 'optimize' or 'stop: "
        "overfitting' verdict wrote next to its report (optimized.yaml); the new report and "
        "tracker row compare it with the original run and say whether it recovered. Other "
        "flags (--set, --run-id, --mlflow, ...) are passed to the phase.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the run whose reduction to apply")
    parser.add_argument(
        "--artifacts", default="artifacts", metavar="DIR", help="its paths.artifacts"
    )
    return parser
