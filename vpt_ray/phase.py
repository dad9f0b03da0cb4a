"""`python -m vpt_ray.phase N` (and `vpt phase N`): the public path of the phase command.

The pipeline itself, its stages in order, is `vpt_ray.pipeline.phase.run_phase`. This module
parses first and imports the pipeline (Ray, XGBoost, pandas) only to run, so `--help` is instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vpt_ray.pipeline import parsers

if TYPE_CHECKING:  # loaded on first use (`__getattr__` below), not by `--help`
    from vpt_ray.pipeline.phase import run_phase

__all__ = ["main", "run_phase"]


def main(argv: list[str] | None = None) -> int:
    args = parsers.phase_parser().parse_args(argv)
    import numpy as np

    from vpt_ray.pipeline.phase import run_cli

    np.seterr(all="ignore")
    return run_cli(args)


def __getattr__(name: str):  # noqa: ANN202 - `from vpt_ray.phase import run_phase`, loaded on use
    if name == "run_phase":
        from vpt_ray.pipeline.phase import run_phase

        return run_phase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
