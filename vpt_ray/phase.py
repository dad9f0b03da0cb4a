"""`python -m vpt_ray.phase N`: one phase of the scaling plan, end to end on Ray.

data -> features -> purged CV -> search (Ray Tune) -> final model [-> ensemble] -> OOS backtest
(a Ray task per ticker) -> report -> tracker -> decision. The stages read top to bottom in
`run_phase`.

Two things wrap the stages. Resume: the feature store and the search come from the
content-addressed cache when a previous run (any run id) already computed them (`vpt_ray.resume`;
`--force` recomputes). The memory stop: every stage boundary, fan-out progress loop and the Tune
search is a safe point where a crossed `hardware.memory_limit_gb` (or a Ray OOM kill) ends the run
cleanly: status STOPPED, metrics.json and summary.md with verdict "stop" and the reason, a tracker
row saying so, and no published model.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator

import numpy as np

from vpt_ray import ensemble, resume, stages, tracker
from vpt_ray.config import Config, ConfigError
from vpt_ray.report import SYNTHETIC_BANNER, _clean
from vpt_ray.resources import (
    MemoryLimitExceeded,
    MemorySampler,
    init_ray,
    is_ray_oom,
    ray_oom_stop,
)
from vpt_ray.run import (
    RunContext,
    git_commit,
    new_run_id,
    setup_logging,
    write_json_atomic,
    write_text_atomic,
)

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
) -> dict:
    """Run the pipeline; returns metrics.json's content (or the model summary if stop_after).

    A memory stop returns the stop's metrics (verdict "stop", `status` "STOPPED") instead of
    raising; any other failure marks the run FAILED and raises.
    """
    cfg = with_sample_days(cfg, sample_days)
    ctx = RunContext(cfg, run_id or new_run_id(cfg))
    setup_logging(ctx.log_path)
    log.info("run %s: phase %d, %d tickers", ctx.run_id, cfg.phase, len(cfg.data.tickers))
    ctx.mark("RUNNING")
    ctx.snapshot_config()
    hw = cfg.hardware
    sampler = MemorySampler(hw.sample_interval_s, hw.memory_warn_gb, hw.memory_limit_gb)
    cache = resume.cache_dir(cfg, ctx.root)
    state: dict = {"stage": "start", "ray": {}, "data": None}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        """A stage, preceded by a safe point of the memory stop."""
        state["stage"] = name
        sampler.check(f"the start of stage {name}")
        with ctx.stage(name):
            yield

    try:
        with sampler:
            ray_info = state["ray"] = init_ray(hw)
            with step("data"):
                data = state["data"] = stages.load_data(cfg)
            with step("features"):
                store = resume.build_features(
                    cfg, data.tickers, ctx.work_dir / "features", cache, force
                )
            with step("cv"):
                matrix, folds = stages.make_folds(cfg, store)
            with step("search"):
                search, search_cached = resume.search(
                    cfg, store, matrix, folds, ctx.work_dir, ray_info["num_cpus"], cache, force
                )
            with step("train"):
                booster = stages.train_final(cfg, ctx, matrix, folds, search, data, ray_info)
            ens = None
            if cfg.model.ensemble.enabled:
                with step("ensemble"):
                    ens, ens_info = ensemble.run_ensemble(
                        cfg, matrix, folds, search, ray_info["num_cpus"]
                    )
                    ensemble.save_ensemble(ctx.staged_model_dir, ens)
            if stop_after == "train":
                sampler.check("the end of training")
                ctx.publish_model()
                ctx.mark("FINISHED")
                return {"run_id": ctx.run_id, "model_dir": str(ctx.model_dir)}
            bt_data, bt_store, universe = data, store, None
            if cfg.universe.active:  # phase 5: backtest on the price-band universe instead
                with step("universe"):
                    universe, bt_data, bt_store = stages.backtest_universe(
                        cfg, ctx.work_dir / "universe_features"
                    )
            with step("backtest"):
                backtest = stages.backtest(cfg, booster, bt_data, bt_store, matrix.feature_names)
            if ens is not None:
                with step("backtest_ensemble"):
                    ens_bt = stages.backtest(cfg, ens, bt_data, bt_store, matrix.feature_names)
            sampler.check("the end of the backtest")
        metrics = stages.assemble_metrics(
            cfg, ctx, data, store, matrix, folds, search, backtest, sampler, ray_info
        )
        if universe is not None:
            metrics["universe"] = universe
        metrics["resume"] = {
            "cache": str(cache),
            "forced": force,
            "features_from_cache": sum(bool(s.get("from_cache")) for s in store.values()),
            "search_from_cache": search_cached,
        }
        if ens is not None:
            metrics["ensemble"] = ensemble.comparison(ens_info, backtest, ens_bt)
        with ctx.stage("report"):
            stages.write_outputs(cfg, ctx, metrics, backtest)
        ctx.publish_model()
        ctx.mark("FINISHED")
    except BaseException as exc:
        stop = as_stop(exc, state["stage"], sampler)
        if stop is None:
            ctx.mark("FAILED", f"{type(exc).__name__}: {exc}")
            raise
        return write_stopped(cfg, ctx, stop, state, sampler)
    stages.print_summary(metrics)
    if ens is not None:
        print_ensemble(metrics["ensemble"])
    return metrics


def as_stop(exc: BaseException, stage: str, sampler: MemorySampler) -> MemoryLimitExceeded | None:
    """The clean stop `exc` amounts to, or None for an ordinary failure.

    Our own stop; Ray's OOM kill anywhere inside `exc`; or any error raised after the sampler
    saw the limit crossed (the likely cause, named in the reason)."""
    if isinstance(exc, MemoryLimitExceeded):
        return exc
    if not isinstance(exc, Exception):
        return None  # KeyboardInterrupt, SystemExit: not a memory matter
    if is_ray_oom(exc):
        return ray_oom_stop(exc, stage)
    if sampler.over_limit:
        try:
            sampler.check(f"stage {stage}")
        except MemoryLimitExceeded as stop:
            stop.args = (f"{stop.args[0]} (then {type(exc).__name__}: {exc})",)
            return stop
    return None


def write_stopped(
    cfg: Config, ctx: RunContext, stop: MemoryLimitExceeded, state: dict, sampler: MemorySampler
) -> dict:
    """Report, summary, tracker row and status of a run stopped for memory (verdict "stop")."""
    stage = state["stage"]
    data = state["data"]
    reason = f"stop: {stop}"
    log.error("run %s STOPPED in stage %s: %s", ctx.run_id, stage, stop)
    synthetic = bool(data.synthetic) if data is not None else None
    metrics = {
        "run_id": ctx.run_id,
        "phase": cfg.phase,
        "status": "STOPPED",
        "stopped": {
            "stage": stage,
            "cause": stop.cause,
            "reason": str(stop),
            "memory_gb": stop.used_gb,
            "memory_limit_gb": cfg.hardware.memory_limit_gb,
            "memory_warn_gb": cfg.hardware.memory_warn_gb,
        },
        "data": {
            "synthetic": synthetic,
            "tickers": list(data.tickers) if data is not None else list(cfg.data.tickers),
            "start": str(cfg.data.start),
            "end": str(cfg.backtest.end),
            "bar": cfg.data.bar,
        },
        "cv": {"sample_days": cfg.cv.sample_days},
        "resources": {
            "peak_memory_gb": round(sampler.peak_gb, 3),
            "wall_seconds": ctx.wall_seconds(),
            "stages": dict(ctx.stages),
            "ray": state["ray"],
            "memory_samples": sampler.samples[:: max(1, len(sampler.samples) // 500)],
        },
        "decision": {"verdict": "stop", "reasons": [reason]},
        "model_dir": None,
        "git_commit": git_commit(),
        "config_fingerprint": cfg.fingerprint(),
    }
    write_json_atomic(ctx.report_dir / "metrics.json", _clean(metrics))
    lines = [f"# vpt-ray run {ctx.run_id} (phase {cfg.phase}): STOPPED", ""]
    if synthetic:
        lines += [SYNTHETIC_BANNER, ""]
    lines += [
        "## Decision: STOP",
        "",
        f"- {reason}",
        f"- Stopped in stage `{stage}` after {ctx.wall_seconds():.0f} s; stages completed: "
        f"{dict(ctx.stages)}",
        f"- Peak memory (driver + Ray processes) {sampler.peak_gb:.2f} GB; "
        f"hardware.memory_warn_gb {cfg.hardware.memory_warn_gb:g}, "
        f"hardware.memory_limit_gb {cfg.hardware.memory_limit_gb:g}",
        "- No model was published; the feature store and search, if they finished, are in the "
        "resume cache and a rerun starts from them.",
        "",
    ]
    write_text_atomic(ctx.report_dir / "summary.md", "\n".join(lines))
    notes = ["SYNTHETIC data"] if synthetic else []
    notes += ["verdict: stop", f"STOPPED in {stage}: {stop}"]
    row = {
        "phase": cfg.phase,
        "run_id": ctx.run_id,
        "synthetic": bool(synthetic),
        **dict.fromkeys(("samples", "features", "trades"), ""),
        **dict.fromkeys(
            ("cv_accuracy", "cv_auc", "cv_log_loss", "accuracy", "total_return", "sharpe"), None
        ),
        **dict.fromkeys(("max_drawdown", "win_rate"), None),
        "notes": "; ".join(notes).replace("|", "/"),
    }
    tracker.update(ctx.tracker_path, row)
    ctx.mark("STOPPED", str(stop))
    print(f"\n  run       {ctx.run_id}\n  decision  STOP\n            - {reason}")
    print(f"  report    {ctx.report_dir}/summary.md\n")
    return metrics


def print_ensemble(section: dict) -> None:
    cv, oos, bt = section["cv"], section["oos"], section["backtest"]
    print(f"  ensemble ({section['used']} of {section['candidates']} members weighted) vs single:")
    print(
        f"    CV log loss {cv['ensemble']['log_loss']:.5f} vs {cv['single']['log_loss']:.5f}; "
        f"OOS accuracy {oos['ensemble']['accuracy']:.4f} vs {oos['single']['accuracy']:.4f}; "
        f"Sharpe {_f(bt['ensemble']['sharpe'])} vs {_f(bt['single']['sharpe'])}"
    )
    print()


def _f(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    from vpt_ray.cli import add_config_args, run_cli

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
    args = parser.parse_args(argv)
    return run_cli(args)


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
