"""`python -m vpt_ray.compare` (and `vpt compare`): the public path of the run comparison,
`vpt_ray.report.compare`.
"""

from __future__ import annotations

from vpt_ray.pipeline.cli import guarded
from vpt_ray.report.compare import main as _main

main = guarded(_main)  # any failure: one line and an exit code, never a traceback

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
