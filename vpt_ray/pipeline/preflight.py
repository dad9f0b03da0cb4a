"""Cross-checks of a run's config against the Ray it got, before any compute.

Why: some settings are valid alone and impossible together with the resources a run gets, and
used to fail only when their stage came: `model.backend: distributed` on a Ray with one CPU was
refused when the final fit started, ~50 s (the data, features and search) into the run. The
phase calls `check` right after Ray is up (a cluster's CPUs are known only then), before the
data stage; a refusal is a ConfigError (exit 2) naming the keys and the fix.
"""

from __future__ import annotations

from vpt_ray.core.config import Config, ConfigError


def check(cfg: Config, ray_info: dict) -> None:
    """Refuse a config that cannot run on `ray_info`'s resources (`init_ray`'s answer)."""
    cpus = float(ray_info.get("num_cpus") or 0)
    if cfg.model.backend == "distributed" and cpus < 2:
        raise ConfigError(
            f"model.backend = 'distributed' needs at least 2 CPUs in Ray (one for Ray Data's "
            f"reads, the rest for the Ray Train workers); this run's Ray has {cpus:g} "
            f"(hardware.num_cpus = {cfg.hardware.num_cpus}, clamped to the machine or the "
            "cluster): set model.backend=local or give Ray more CPUs"
        )
