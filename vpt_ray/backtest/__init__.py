"""Backtest: the pure one-ticker simulation, its statistics and the equal-weight roll-up.

Ray stays out of this package's import path: the per-ticker fan-out lives with the orchestration
and calls these plain functions.
"""

from vpt_ray.backtest.engine import SimSettings, TickerResult, simulate

__all__ = ["SimSettings", "TickerResult", "simulate"]
