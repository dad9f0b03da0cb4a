"""`python -m vpt_ray.optimize RUN_ID` (and `vpt optimize`): the public path of the optimize
command (`vpt_ray.pipeline.commands.optimize_main`); the reduction is `vpt_ray.pipeline.optimize`.
"""

from __future__ import annotations

from vpt_ray.pipeline.commands import optimize_main as main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
