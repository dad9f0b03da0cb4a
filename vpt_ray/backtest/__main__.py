"""`python -m vpt_ray.backtest` (and `vpt backtest`): the saved-model backtest command,
`vpt_ray.pipeline.backtest_cli` (a pipeline command: it loads data, builds features, runs the
backtest and writes a report).
"""

from __future__ import annotations

from vpt_ray.pipeline.backtest_cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
