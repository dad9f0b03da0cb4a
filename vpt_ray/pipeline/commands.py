"""The small command front ends over `run_phase`: `python -m vpt_ray.train` (the phase up to the
final model) and `vpt optimize RUN_ID` (a phase rerun with the reduced config a verdict wrote).

They parse and call (`vpt_ray.pipeline.phase.run_cli`); the public module paths
`vpt_ray.train` / `vpt_ray.optimize` are thin entry modules that call these.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vpt_ray.core.bounded import short_repr
from vpt_ray.core.storage import ArtifactError, read_json_object
from vpt_ray.pipeline.cli import add_config_args, guarded
from vpt_ray.pipeline.phase import main as phase_main
from vpt_ray.pipeline.phase import run_cli


@guarded
def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vpt_ray.train",
        description="Train the VPT model: data -> features -> purged CV search on Ray Tune -> "
        "final fit, saved to artifacts/models/{run_id}/ (no backtest).",
    )
    add_config_args(parser, default_config="config/base.yaml")
    parser.add_argument(
        "--sample-days",
        "--sample_days",  # the seed document's spelling
        type=int,
        default=None,
        help="train and search on N trading days sampled (seeded, stratified) from the period",
    )
    args = parser.parse_args(argv)
    return run_cli(args, stop_after="train")


@guarded
def optimize_main(argv: list[str] | None = None) -> int:
    """`vpt optimize RUN_ID`: `python -m vpt_ray.phase N --optimize RUN_ID` with N read from
    the run's metrics.json."""
    parser = argparse.ArgumentParser(
        prog="vpt optimize",
        description="Rerun a phase with the reduced configuration an 'optimize' or 'stop: "
        "overfitting' verdict wrote next to its report (optimized.yaml); the new report and "
        "tracker row compare it with the original run and say whether it recovered.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the run whose reduction to apply")
    parser.add_argument(
        "--artifacts", default="artifacts", metavar="DIR", help="its paths.artifacts"
    )
    args, rest = parser.parse_known_args(argv)
    metrics = Path(args.artifacts) / "reports" / args.run_id / "metrics.json"
    if not metrics.exists():
        print(f"error: optimize {args.run_id}: no {metrics}", file=sys.stderr)
        return 2
    phase = read_json_object(metrics, fix=f"rerun {args.run_id}").get("phase")
    if phase not in (1, 2, 3, 4, 5):
        raise ArtifactError(f"{metrics}: phase {short_repr(phase)} is not 1-5; rerun {args.run_id}")
    extra = [] if args.artifacts == "artifacts" else ["--set", f"paths.artifacts={args.artifacts}"]
    return phase_main([str(phase), "--optimize", args.run_id, *extra, *rest])
