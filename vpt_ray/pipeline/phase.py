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

from vpt_ray.core import interrupt, run_lock, storage
from vpt_ray.core.bounded import short
from vpt_ray.core.config import Config, ConfigError, load_config
from vpt_ray.core.console import also_to_run_log
from vpt_ray.core.memory_sampler import MemorySampler
from vpt_ray.core.resources import init_ray
from vpt_ray.core.run import (
    RunContext,
    command_started,
    mark_abandoned,
    new_run_id,
    remove_owned,
    setup_logging,
)
from vpt_ray.data import gcs
from vpt_ray.model import ensemble
from vpt_ray.pipeline import (
    memory_stop,
    optimize,
    outlook,
    outputs,
    parsers,
    preflight,
    resume,
    stages,
    training_run,
)
from vpt_ray.pipeline.cli import (
    EXIT_STOPPED,
    failure_exit,
    guarded,
    overrides_of,
    run_locations,
    unwrap,
)
from vpt_ray.report import tracker
from vpt_ray.report.run_report import summary_markdown

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
    ctx = RunContext(cfg, new_run_id(cfg) if run_id is None else run_id, config_chain=cfg.layers)
    with run_lock.exclusive(ctx):  # one live run per run id (exit 2 naming the live one)
        setup_logging(ctx.log_path)
        log.info("run %s: phase %d, %d tickers", ctx.run_id, cfg.phase, len(cfg.data.tickers))
        ctx.check_storage(gcs.check_location)  # gs:// outputs: fail in seconds if unreachable
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
            with ctx.stage("ray_init"):  # timed; its safe point is the next stage's
                sampler.stage = "ray_init"
                ray_info = state["ray"] = init_ray(hw)
                interrupt.install()  # ray.init replaced SIGTERM's handler with its own sys.exit
                preflight.check(cfg, ray_info)  # settings Ray's resources cannot run: refused now
                sampler.attach()  # from now on: every node of the cluster
                sampler.hold_to(ray_info["memory_limit"])  # the config's or the machine's
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
                booster = stages.train_final(cfg, ctx, store, search, data, ray_info, cache, force)
            ens, ens_cached = None, False
            if cfg.model.ensemble.enabled:
                with step("ensemble"):
                    ens, ens_info, ens_cached = resume.ensemble(
                        cfg, store, *stages.search_sample(cfg, matrix, folds), search, booster,
                        ray_info["num_cpus"], cache, force, ctx.work_dir,
                    )  # fmt: skip
                    ensemble.save_ensemble(ctx.staged_model_dir, ens)
            if stop_after == "train":  # a training run: CV figures, tracker row, wrap-up
                sampler.check("the end of training")
                return training_run.finish(ctx, training_run.training_metrics(
                    cfg, ctx, data, store, matrix, folds, search, sampler, ray_info,
                    _resume_info(cache, force, store, search_cached, ens_cached),
                ))  # fmt: skip
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
        state["stage"] = "report"  # the figures, the verdict's reduction and the commit
        metrics = outputs.assemble_metrics(
            cfg, ctx, data, store, matrix, folds, search, backtest, sampler, ray_info
        )
        metrics = outlook.add_outlook(cfg, ctx, metrics, curve)  # scaling: curve, fit, forecast
        if universe is not None:
            metrics["universe"] = universe
        metrics["resume"] = _resume_info(cache, force, store, search_cached, ens_cached)
        if ens is not None:
            metrics["ensemble"] = ensemble.comparison(
                ens_info, backtest, ens_bt, cfg.labels.horizon, cfg.backtest.capital
            )
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
            outputs.record_wall(ctx, metrics, summary_markdown)  # the report stage's time too
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
            ctx.mark(
                "FAILED", f"{type(inner).__name__} in stage {state['stage']}: {short(str(inner))}"
            )
            with contextlib.suppress(AttributeError):  # where the CLI says the traceback is
                exc.vpt_run_log = str(ctx.log_path)  # type: ignore[attr-defined]
            raise
        return memory_stop.write_stopped(cfg, ctx, stop, state, sampler)
    finally:  # the sample file is scratch: the features again, time-sorted (features.samples)
        with contextlib.suppress(OSError):
            remove_owned(ctx.work_dir / "samples", ctx.work_dir)
        ctx.remove_temp_scratch()  # gs:// outputs: the local mirror, once uploaded
    with also_to_run_log("summary"):  # the run log holds the summary and the decision too
        outputs.print_summary(metrics)  # its last line: where report.html is
    return metrics


def _resume_info(cache, force: bool, store: dict, search: bool, ensemble: bool) -> dict:  # noqa: ANN001
    """metrics.json `resume`: what came from the resume cache."""
    return {
        "cache": str(cache),
        "forced": force,
        "features_from_cache": sum(bool(s.get("from_cache")) for s in store.values()),
        "search_from_cache": search,
        "ensemble_from_cache": ensemble,
    }


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
    command_started()  # the run's wall counts the process's start-up (imports, config)
    phase = getattr(args, "phase", None)
    config = args.config
    if phase is None and config is None:
        config = "config/base.yaml"
    cfg = None
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
    except BaseException as exc:  # noqa: BLE001 - translated to an exit code
        started = getattr(exc, "vpt_run_log", None)  # set when the run had started
        outcome = "the run is FAILED: nothing was published" if started else ""
        return failure_exit(exc, run_locations(cfg), started, outcome)
    if out.get("status") == "STOPPED":
        print(f"stopped: {out['stopped']['reason']}", file=sys.stderr)
        return EXIT_STOPPED
    return 0


@guarded
def main(argv: list[str] | None = None) -> int:
    """`python -m vpt_ray.phase N`: parse (`parsers.phase_parser`), then run."""
    return run_cli(parsers.phase_parser().parse_args(argv))


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
