"""`python -m vpt_ray.phase N` (and `vpt phase N`): the public path of the phase command.

The pipeline itself, its stages in order, is `vpt_ray.pipeline.phase.run_phase`.
"""

from __future__ import annotations

import numpy as np

from vpt_ray.pipeline.phase import main, run_phase

__all__ = ["main", "run_phase"]

if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
