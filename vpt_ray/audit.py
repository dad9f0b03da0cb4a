"""`python -m vpt_ray.audit` (and `vpt audit`): the public path of the leakage audit,
`vpt_ray.pipeline.audit`.
"""

from __future__ import annotations

from vpt_ray.pipeline.audit import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
