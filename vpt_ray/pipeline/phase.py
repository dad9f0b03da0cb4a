"""`python -m vpt_ray.phase N`: one phase of the scaling plan, end to end on Ray.

data -> features -> purged CV -> search (Ray Tune) -> final model [-> ensemble] -> OOS backtest
(a Ray task per ticker) -> learning curve -> report -> tracker -> decision (with the scaling
outlook: `vpt_ray.pipeline.outlook`). The stages read top to bottom in
`run_phase`.

Two things wrap the stages. Resume: the feature store and the search come from the
content-addressed cache when a previous run (any run id) already computed them
(`vpt_ray.pipeline.resume`; `--force` recomputes). The memory stop: every stage boundary, fan-out
progress loop and the Tune search is a safe point where a crossed `hardware.memory_limit_gb` on any
node, or `hardware.job_memory_limit_gb` over all of them (or a Ray OOM kill), ends the run cleanly:
status STOPPED, metrics.json and summary.md with verdict "stop" and the reason, a tracker row
saying so, and no published model. When the sampler ends, so does the run's scratch on every node.

Interrupts: SIGINT / SIGTERM at any stage (inside Tune too, `vpt_ray.core.interrupt`) end the run as
INTERRUPTED: no model, report or tracker row, nothing partial cached; the CLI exits 130 / 143.
The last step (report, tracker row, model, FINISHED) holds signals until it is done, so a run is
either committed whole or not at all. Before any compute the run checks the tracker's state
(a damaged one is an error naming the file) and marks runs whose process died ABANDONED.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator

import numpy as np

from vpt_ray.core import interrupt, storage
from vpt_ray.core.config import Config, ConfigError, load_config
from vpt_ray.core.memory_sampler import MemorySampler
from vpt_ray.core.resources import init_ray
from vpt_ray.core.run import RunContext, mark_abandoned, new_run_id, remove_owned, setup_logging
from vpt_ray.data import gcs
from vpt_ray.model import ensemble
from vpt_ray.pipeline import memory_stop, optimize, outlook, outputs, resume, stages
from vpt_ray.pipeline.cli import (
    EXIT_STOPPED,
    add_config_args,
    interrupted_exit,
    overrides_of,
    unwrap,
    user_error_exit,
)
from vpt_ray.report import tracker

log = logging.getLogger("vpt_ray.phase")


def with_sample_days(cfg: Config, sample_days: int | None) -> Config:
    """`cfg` with `cv.sample_days` set (the `--sample-days` flag), so the run id, the resume keys
    and the report all carry the sampling."""
    if sample_days is None:
        return cfg
    if sample_days < 1:
        raise ConfigError(f"--sample-days {sample_days}: must be >= 1 (sessions to keep)")
    return cfg.model_copy(update={"cv": cfg.cv.model_copy(update={"sample_days": sample_days})})


def run_phase(
    cfg: Config,
    run_id: str | None = None,
    stop_after: str | None = None,
    sample_days: int | None = None,
    force: bool = False,
    optimized_from: dict | None = None,
) -> dict:
    """Run the pipeline; returns metrics.json's content (or the model summary if stop_after).

    A memory stop returns the stop's metrics (verdict "stop", `status` "STOPPED") instead of
    raising; SIGINT / SIGTERM mark it INTERRUPTED and raise `RunInterrupted`; any other failure
    marks the run FAILED and raises. An "optimize" or "stop: overfitting" verdict writes a
    reduced configuration next to the report (`vpt_ray.pipeline.optimize`); `optimized_from`
    (`optimize.optimized_config`) is the run this one applies it to, which the report compares
    it with.
    """
    cfg = with_sample_days(cfg, sample_days)
    ctx = RunContext(cfg, run_id or new_run_id(cfg), config_chain=cfg.layers)
    setup_logging(ctx.log_path)
    log.info("run %s: phase %d, %d tickers", ctx.run_id, cfg.phase, len(cfg.data.tickers))
    ctx.check_storage(
        gcs.check_location
    )  # gs:// outputs: fail in seconds if the bucket cannot be reached
    tracker.load_state(ctx.tracker_path)  # a damaged tracker fails now, not after the compute
    if not storage.is_remote(ctx.artifacts):
        mark_abandoned(ctx.report_dir.parent, skip=ctx.run_id)
    with interrupt.handle_signals():
        return _run(cfg, ctx, stop_after, force, optimized_from)


def _run(
    cfg: Config, ctx: RunContext, stop_after: str | None, force: bool, optimized_from: dict | None
) -> dict:
    """The stages of `run_phase`, inside its signal handling."""
    ctx.mark("RUNNING")
    ctx.snapshot_config()
    hw = cfg.hardware
    sampler = MemorySampler.for_hardware(hw)
    cache = resume.cache_dir(cfg, ctx.root)
    state: dict = {"stage": "start", "ray": {}, "data": None}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        """A stage, preceded by a safe point of the memory stop."""
        state["stage"] = sampler.stage = name
        sampler.check(f"the start of stage {name}")
        with ctx.stage(name):
            yield
        if where := sampler.placement_text(name):
            log.info("stage %s ran on %s", name, where)

    try:
        with sampler:
            ray_info = state["ray"] = init_ray(hw)
            interrupt.install()  # ray.init replaced SIGTERM's handler with its own sys.exit
            sampler.attach()  # from now on: every node of the cluster
            with step("data"):
                data = state["data"] = stages.stage_bars(stages.load_data(cfg), cache)
            with step("features"):
                store = resume.build_features(
                    cfg, data.tickers, ctx.work_dir / "features", cache, force
                )
                data, store = stages.exclude_unusable(data, store)
            with step("cv"):
                matrix, folds = stages.make_folds(cfg, store, samples_dir=ctx.work_dir / "samples")
            with step("search"):
                search, search_cached = resume.search(
                    stages.search, cfg, store, matrix, folds, ctx.work_dir, ray_info["num_cpus"],
                    cache, force, tune_storage=ctx.work_location,
                )  # fmt: skip
            with step("train"):
                booster = stages.train_final(cfg, ctx, store, search, data, ray_info)
            ens, ens_cached = None, False
            if cfg.model.ensemble.enabled:
                with step("ensemble"):
                    ens, ens_info, ens_cached = resume.ensemble(
                        cfg, store, *stages.search_sample(cfg, matrix, folds), search, booster,
                        ray_info["num_cpus"], cache, force, ctx.work_dir,
                    )  # fmt: skip
                    ensemble.save_ensemble(ctx.staged_model_dir, ens)
            if stop_after == "train":
                sampler.check("the end of training")
                with interrupt.held() as held:
                    ctx.publish_model()
                    ctx.mark("FINISHED")
                _note_held(held)
                return {"run_id": ctx.run_id, "model_dir": str(ctx.model_dir)}
            bt_data, bt_store, universe = data, store, None
            if cfg.universe.active:  # phase 5: backtest on the price-band universe instead
                with step("universe"):
                    universe, bt_data, bt_store = stages.backtest_universe(
                        cfg, ctx.work_location / "universe_features", cache, force
                    )
            with step("backtest"):
                backtest = stages.backtest(cfg, booster, bt_data, bt_store, matrix.feature_names)
            if ens is not None:
                with step("backtest_ensemble"):
                    ens_bt = stages.backtest(cfg, ens, bt_data, bt_store, matrix.feature_names)
            with step("learning_curve"):  # refits on fractions of the sessions, scored OOS
                curve = outlook.learning_curve(
                    cfg, matrix, search, booster, bt_store, matrix.feature_names,
                    ray_info["num_cpus"],
                )  # fmt: skip
            sampler.check("the end of the backtest")
        metrics = outputs.assemble_metrics(
            cfg, ctx, data, store, matrix, folds, search, backtest, sampler, ray_info
        )
        metrics = outlook.add_outlook(cfg, ctx, metrics, curve)  # scaling: curve, fit, forecast
        if universe is not None:
            metrics["universe"] = universe
        metrics["resume"] = {
            "cache": str(cache),
            "forced": force,
            "features_from_cache": sum(bool(s.get("from_cache")) for s in store.values()),
            "search_from_cache": search_cached,
            "ensemble_from_cache": ens_cached,
        }
        if ens is not None:
            metrics["ensemble"] = ensemble.comparison(ens_info, backtest, ens_bt)
        if optimized_from is not None:
            metrics["optimized_from"] = optimize.comparison(
                optimized_from, metrics, cfg.decision.optimize_se
            )
        if optimize.wanted(metrics["decision"]):  # the verdict acted on: a reduced config
            with ctx.stage("optimize"):
                metrics["optimize"] = optimize.run_reduction_safely(
                    cfg, ctx, store, matrix, folds, search, int(ray_info["num_cpus"]),
                    metrics["decision"],
                )  # fmt: skip
        interrupt.check()
        with interrupt.held() as held:  # the commit: all of it, or (interrupted before) none
            with ctx.stage("report"):
                outputs.write_outputs(cfg, ctx, metrics, backtest)
            ctx.publish_model()
            ctx.mark("FINISHED")
        _note_held(held)
    except BaseException as exc:
        if (stop_signal := interrupt.as_interrupt(exc)) is not None:
            with interrupt.held():
                ctx.mark("INTERRUPTED", f"{stop_signal.signal_name} in stage {state['stage']}")
            log.warning(
                "run %s INTERRUPTED (%s) in stage %s: nothing published",
                ctx.run_id,
                stop_signal.signal_name,
                state["stage"],
            )
            stop_signal.run_id = ctx.run_id  # type: ignore[attr-defined]
            raise stop_signal from None
        stop = memory_stop.as_stop(exc, state["stage"], sampler)
        if stop is None:
            inner = unwrap(exc)  # a Ray task's error: the original, not Ray's wrapper
            ctx.mark("FAILED", f"{type(inner).__name__}: {inner}")
            raise
        return memory_stop.write_stopped(cfg, ctx, stop, state, sampler)
    finally:  # the sample file is scratch: the features again, time-sorted (features.samples)
        with contextlib.suppress(OSError):
            remove_owned(ctx.work_dir / "samples", ctx.work_dir)
        ctx.remove_temp_scratch()  # gs:// outputs: the local mirror, once uploaded
    outputs.print_summary(metrics)  # its last line: where report.html is
    return metrics


def _note_held(held: list[int]) -> None:
    """A signal that arrived while the finished run was being committed: the commit went
    through whole, so the run is FINISHED and ends normally; say so."""
    if held:
        log.warning(
            "%s arrived while the finished run's results were being written: they were written "
            "whole and the run is FINISHED; it ends now",
            signal.Signals(held[0]).name,
        )


def run_cli(args: argparse.Namespace, stop_after: str | None = None) -> int:
    phase = getattr(args, "phase", None)
    config = args.config
    if phase is None and config is None:
        config = "config/base.yaml"
    try:
        cfg = load_config(phase=phase, config_path=config, overrides=overrides_of(args))
        origin = None
        if getattr(args, "optimize", None):
            cfg, origin = optimize.optimized_config(cfg, args.optimize, overrides_of(args))
        out = run_phase(
            cfg,
            run_id=args.run_id,
            stop_after=stop_after,
            sample_days=getattr(args, "sample_days", None),
            force=getattr(args, "force", False),
            optimized_from=origin,
        )
    except BaseException as exc:  # noqa: BLE001 - translated to an exit code below
        if (code := user_error_exit(exc)) is not None:
            return code
        inner = unwrap(exc)
        if (stop := interrupt.as_interrupt(exc)) is not None:
            return interrupted_exit(stop)
        logging.getLogger("vpt_ray").exception("run failed")  # the CLI's logger, as before
        print(f"error: {type(inner).__name__}: {inner}", file=sys.stderr)
        return 1
    if out.get("status") == "STOPPED":
        print(f"stopped: {out['stopped']['reason']}", file=sys.stderr)
        return EXIT_STOPPED
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vpt_ray.phase",
        description="Run phase N of the scaling plan end to end: data, features, purged CV, "
        "Ray Tune search, final model, out-of-sample backtest, report, tracker and decision. "
        "With no local data, GCS credentials or Polygon key, it runs on the built-in "
        "synthetic market and says so. The feature store and the search are reused from "
        "artifacts/cache when a previous run computed them on the same data and settings.",
    )
    parser.add_argument("phase", type=int, choices=range(1, 6), metavar="N", help="phase 1-5")
    add_config_args(parser)
    parser.add_argument(
        "--sample-days",
        "--sample_days",  # the seed document's spelling
        type=int,
        default=None,
        metavar="N",
        help="train and search on N trading sessions, one drawn per equal stratum of the "
        "training period (seeded by search.seed); sets cv.sample_days and is stated in the report",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="recompute the feature store and the search even if the resume cache holds them",
    )
    parser.add_argument(
        "--optimize",
        default=None,
        metavar="RUN_ID",
        help="run the phase with the reduced configuration that RUN_ID's 'optimize' or 'stop: "
        "overfitting' verdict wrote (its config + optimized.yaml, then --set); the report and "
        "the tracker compare the two runs and say whether it recovered",
    )
    args = parser.parse_args(argv)
    return run_cli(args)


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
