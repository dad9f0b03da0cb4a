"""The memory stop's two ends: recognising a stop in an exception, and writing a stopped run.

A run that crosses `hardware.memory_limit_gb` (or whose Ray task is OOM-killed) ends cleanly: status
STOPPED, metrics.json and summary.md with verdict "stop" and the reason, a tracker row saying so,
and no published model. `vpt_ray.pipeline.phase` calls these from its failure path.
"""

from __future__ import annotations

import logging

from vpt_ray.core.config import Config
from vpt_ray.core.memory_sampler import MemoryLimitExceeded, MemorySampler, is_ray_oom, ray_oom_stop
from vpt_ray.core.run import RunContext, git_commit, write_json_atomic, write_text_atomic
from vpt_ray.report import tracker
from vpt_ray.report.run_report import SYNTHETIC_BANNER, json_safe, node_memory_line

log = logging.getLogger("vpt_ray.phase")


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
            "scope": stop.scope,  # "node": hardware.memory_limit_gb; "job": the total's limit
            "node": stop.node,
            "memory_limit_gb": cfg.hardware.memory_limit_gb,
            "job_memory_limit_gb": cfg.hardware.job_memory_limit_gb,
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
            **sampler.resources(),  # peak in total (all nodes) and per node, placement
            "stage_peak_gb": dict(sampler.stage_peaks),
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
    # the peak includes the reading that stopped the run (the sampler's peak may predate it)
    res = metrics["resources"]
    res["peak_memory_gb"] = max(res.get("peak_memory_gb") or 0.0, stop.used_gb or 0.0)
    write_json_atomic(ctx.report_dir / "metrics.json", json_safe(metrics))
    lines = [f"# vpt-ray run {ctx.run_id} (phase {cfg.phase}): STOPPED", ""]
    if synthetic:
        lines += [SYNTHETIC_BANNER, ""]
    lines += [
        "## Decision: STOP",
        "",
        f"- {reason}",
        f"- Stopped in stage `{stage}` after {ctx.wall_seconds():.0f} s; stages completed: "
        f"{dict(ctx.stages)}",
        f"- Peak memory (driver + Ray processes) {res['peak_memory_gb']:.2f} GB; "
        f"hardware.memory_warn_gb {cfg.hardware.memory_warn_gb:g}, "
        f"hardware.memory_limit_gb {cfg.hardware.memory_limit_gb:g} per node, "
        f"hardware.job_memory_limit_gb {cfg.hardware.job_memory_limit_gb or 'none'}",
        *filter(None, [node_memory_line(metrics["resources"])]),
        "- No model was published; the feature store and search, if they finished, are in the "
        "resume cache and a rerun starts from them.",
        "",
    ]
    write_text_atomic(ctx.report_dir / "summary.md", "\n".join(lines))
    notes = ["SYNTHETIC data"] if synthetic else []
    memory = tracker.memory_fields(res)
    notes += ["verdict: stop", tracker.memory_note(res)]
    notes += [f"STOPPED in {stage}: {stop}"]
    row = {
        "phase": cfg.phase,
        "run_id": ctx.run_id,
        "status": "STOPPED",  # a history row only: never the phase's latest (`tracker.update`)
        "synthetic": synthetic,  # None: stopped before any data was loaded
        **dict.fromkeys(("samples", "features", "trades"), ""),
        **dict.fromkeys(
            ("cv_accuracy", "cv_auc", "cv_log_loss", "accuracy", "total_return", "sharpe"), None
        ),
        **dict.fromkeys(("max_drawdown", "win_rate"), None),
        **memory,
        "notes": "; ".join(notes).replace("|", "/"),
    }
    tracker.update(ctx.tracker_path, row)
    ctx.mark("STOPPED", str(stop))
    print(f"\n  run       {ctx.run_id}\n  decision  STOP\n            - {reason}")
    print(f"  report    {ctx.report_dir}/summary.md\n")
    return metrics
