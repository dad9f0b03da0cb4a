"""`python -m vpt_ray.data fetch|import|check` (and `vpt data`): the data command,
`vpt_ray.pipeline.data_cli` (a pipeline command: it loads the config and runs the source chain).
"""

from __future__ import annotations

from vpt_ray.pipeline.data_cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
