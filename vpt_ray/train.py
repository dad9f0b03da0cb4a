"""`python -m vpt_ray.train` (and `vpt train`): the public path of the train command, the phase
up to the final model (`vpt_ray.pipeline.commands.train_main`). The model code is
`vpt_ray.model.train`."""

from __future__ import annotations

from vpt_ray.pipeline.commands import train_main as main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
