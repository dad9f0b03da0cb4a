"""`python -m vpt_ray.html_report RUN_DIR` (and `vpt report`): the public path of the report
builder, `vpt_ray.report.html_report`.
"""

from __future__ import annotations

from vpt_ray.report.html_report import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
