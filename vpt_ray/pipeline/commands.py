"""The small command front ends over `run_phase`: `python -m vpt_ray.train` (the phase up to the
final model) and `vpt optimize RUN_ID` (a phase rerun with the reduced config a verdict wrote).

They parse (`vpt_ray.pipeline.parsers`, no heavy imports: `--help` is instant) and call
`vpt_ray.pipeline.phase.run_cli`, imported only then; the public module paths `vpt_ray.train` /
`vpt_ray.optimize` are thin entry modules that call these.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vpt_ray.pipeline import parsers
from vpt_ray.pipeline.cli import guarded


def run_cli(args, stop_after: str | None = None) -> int:  # noqa: ANN001 - argparse.Namespace
    """`vpt_ray.pipeline.phase.run_cli`, imported when a command runs (not for `--help`)."""
    from vpt_ray.pipeline.phase import run_cli as run

    return run(args, stop_after=stop_after)


@guarded
def train_main(argv: list[str] | None = None) -> int:
    args = parsers.train_parser().parse_args(argv)
    return run_cli(args, stop_after="train")


@guarded
def optimize_main(argv: list[str] | None = None) -> int:
    """`vpt optimize RUN_ID`: `python -m vpt_ray.phase N --optimize RUN_ID` with N read from
    the run's metrics.json."""
    args, rest = parsers.optimize_parser().parse_known_args(argv)
    from vpt_ray.core.bounded import short_repr
    from vpt_ray.core.storage import ArtifactError, read_json_object

    metrics = Path(args.artifacts) / "reports" / args.run_id / "metrics.json"
    if not metrics.exists():
        print(f"error: optimize {args.run_id}: no {metrics}", file=sys.stderr)
        return 2
    phase = read_json_object(metrics, fix=f"rerun {args.run_id}").get("phase")
    if phase not in (1, 2, 3, 4, 5):
        raise ArtifactError(f"{metrics}: phase {short_repr(phase)} is not 1-5; rerun {args.run_id}")
    extra = [] if args.artifacts == "artifacts" else ["--set", f"paths.artifacts={args.artifacts}"]
    from vpt_ray.pipeline.phase import main as phase_main

    return phase_main([str(phase), "--optimize", args.run_id, *extra, *rest])
