"""`python -m vpt_ray.html_report RUN_DIR` (and `vpt report`): the public path of the report
builder, `vpt_ray.report.html` (one module per section).
"""

from __future__ import annotations

from vpt_ray.pipeline.cli import guarded
from vpt_ray.report.html.page import main as _main

main = guarded(_main)  # any failure: one line and an exit code, never a traceback

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
