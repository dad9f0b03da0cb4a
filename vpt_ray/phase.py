"""`python -m vpt_ray.phase N`: one phase of the scaling plan, end to end on Ray.

data -> features -> purged CV -> search (Ray Tune) -> final model -> OOS backtest (a Ray task per
ticker) -> report -> tracker -> decision. The stages read top to bottom in `run_phase`.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from vpt_ray import stages
from vpt_ray.config import Config
from vpt_ray.resources import MemorySampler, init_ray
from vpt_ray.run import RunContext, new_run_id, setup_logging

log = logging.getLogger("vpt_ray.phase")


def run_phase(
    cfg: Config,
    run_id: str | None = None,
    stop_after: str | None = None,
    sample_days: int | None = None,
) -> dict:
    """Run the pipeline; returns metrics.json's content (or the model summary if stop_after)."""
    ctx = RunContext(cfg, run_id or new_run_id(cfg))
    setup_logging(ctx.log_path)
    log.info("run %s: phase %d, %d tickers", ctx.run_id, cfg.phase, len(cfg.data.tickers))
    ctx.mark("RUNNING")
    ctx.snapshot_config()
    hw = cfg.hardware
    sampler = MemorySampler(hw.sample_interval_s, hw.memory_warn_gb, hw.memory_limit_gb)
    try:
        with sampler:
            ray_info = init_ray(hw)
            with ctx.stage("data"):
                data = stages.load_data(cfg)
            with ctx.stage("features"):
                store = stages.build_features(cfg, data, ctx.work_dir / "features")
            with ctx.stage("cv"):
                matrix, folds = stages.make_folds(cfg, store, sample_days)
            with ctx.stage("search"):
                search = stages.search(cfg, matrix, folds, ctx.work_dir, ray_info["num_cpus"])
            with ctx.stage("train"):
                booster = stages.train_final(cfg, ctx, matrix, folds, search, data, ray_info)
            if stop_after == "train":
                ctx.publish_model()
                ctx.mark("FINISHED")
                return {"run_id": ctx.run_id, "model_dir": str(ctx.model_dir)}
            with ctx.stage("backtest"):
                backtest = stages.backtest(cfg, booster, data, store, matrix.feature_names)
        metrics = stages.assemble_metrics(
            cfg, ctx, data, store, matrix, folds, search, backtest, sampler, ray_info
        )
        with ctx.stage("report"):
            stages.write_outputs(cfg, ctx, metrics, backtest)
        ctx.publish_model()
        ctx.mark("FINISHED")
    except BaseException as exc:
        ctx.mark("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    stages.print_summary(metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from vpt_ray.cli import add_config_args, run_cli

    parser = argparse.ArgumentParser(
        prog="python -m vpt_ray.phase",
        description="Run phase N of the scaling plan end to end: data, features, purged CV, "
        "Ray Tune search, final model, out-of-sample backtest, report, tracker and decision. "
        "With no local data, GCS credentials or Polygon key, it runs on the built-in "
        "synthetic market and says so.",
    )
    parser.add_argument("phase", type=int, choices=range(1, 6), metavar="N", help="phase 1-5")
    add_config_args(parser)
    parser.add_argument("--sample-days", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return run_cli(args)


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
