"""The end of a training run: `vpt train`, `scripts/train_model.py` and `scripts/phase1_train.py`
run a phase up to its final model (`run_phase(stop_after="train")`) and finish here.

What a training run leaves, like a phase run does: `artifacts/reports/{run_id}/metrics.json`
(`kind: "train"`: data, windows, the CV figures with their SEs, the search, resources; no
backtest, no decision), a short summary.md, and a row in the scaling tracker's training table and
history marked "training run", so the seed's table fills and `vpt compare` reads it. Then the
wrap-up, on the console and in the run log: the CV figures, where the model is, and the command
that backtests it on its own out-of-sample window. Before, a training run was recorded nowhere
but in its model directory, and its last console line was a mid-run "staged" message.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from vpt_ray.core import interrupt
from vpt_ray.core.config import Config
from vpt_ray.core.console import also_to_run_log
from vpt_ray.core.memory_sampler import MemorySampler
from vpt_ray.core.run import RunContext, git_commit, write_json_atomic, write_text_atomic
from vpt_ray.features.store import Matrix
from vpt_ray.model.search_result import SearchResult
from vpt_ray.model.search_result import summary_line as search_line
from vpt_ray.pipeline import outputs
from vpt_ray.pipeline.stages import Data, Folds
from vpt_ray.report import tracker
from vpt_ray.report.run_report import SYNTHETIC_BANNER, json_safe, num

log = logging.getLogger("vpt_ray.train")
SEED_BACKTEST = Path("scripts") / "backtest_model.py"  # the seed's backtest command


def training_metrics(
    cfg: Config,
    ctx: RunContext,
    data: Data,
    store: dict,
    m: Matrix,
    folds: Folds,
    result: SearchResult,
    sampler: MemorySampler,
    ray_info: dict,
    resume: dict,
) -> dict:
    """metrics.json of a training run: a phase's sections up to the final model."""
    best = result.best
    return {
        "run_id": ctx.run_id,
        "kind": "train",
        "phase": cfg.phase,
        "data": outputs.data_section(cfg, data, store, excluded=data.excluded),
        "windows": {
            "train": f"{cfg.data.start}..{cfg.data.end}",
            "backtest": None,  # not backtested: `next` is the command that does it
            "out_of_sample": f"{cfg.backtest.start}..{cfg.backtest.end}",
            "embargo_bars": cfg.embargo_bars,
            "label_horizon": cfg.labels.horizon,
        },
        "features": {"count": len(m.feature_names), "names": m.feature_names},
        "cv": outputs.cv_section(cfg, m, folds, best, outputs.cv_accuracy_se(cfg, best), None),
        "search": outputs.search_section(result),
        "resources": outputs.resources_section(ctx, sampler, ray_info),
        "resume": resume,
        "model_dir": str(ctx.model_dir),
        "next": backtest_command(str(ctx.model_dir), cfg),
        "mlflow": ctx.mlflow_info(),
        "git_commit": git_commit(),
        "config_fingerprint": cfg.fingerprint(),
    }


def backtest_command(model_dir: str, cfg: Config) -> str:
    """The command that backtests the model on its own out-of-sample window: the seed's
    `python scripts/backtest_model.py ...` where that script is at hand, else `vpt backtest`."""
    here = Path.cwd()
    shown = model_dir
    if Path(model_dir).is_absolute() and Path(model_dir).is_relative_to(here):
        shown = str(Path(model_dir).relative_to(here))
    head = f"python {SEED_BACKTEST}" if (here / SEED_BACKTEST).exists() else "vpt backtest"
    return (
        f"{head} --model-dir {shlex.quote(shown)} --start-date {cfg.backtest.start} "
        f"--end-date {cfg.backtest.end}"
    )


def finish(ctx: RunContext, metrics: dict) -> dict:
    """Commit the training run whole (metrics.json, summary.md, the tracker row, the model,
    FINISHED; signals held until done), then print the wrap-up. Returns the metrics."""
    with interrupt.held() as held:
        with ctx.stage("report"):
            metrics["resources"].update(wall_seconds=ctx.wall_seconds(), stages=dict(ctx.stages))
            write_text_atomic(ctx.report_dir / "summary.md", summary_markdown(metrics))
            write_json_atomic(ctx.report_dir / "metrics.json", json_safe(metrics))
            tracker.update(ctx.tracker_path, tracker.row_from_metrics(metrics))
        outputs.record_wall(ctx, metrics, summary_markdown)
        ctx.publish_model()
        ctx.mark("FINISHED")
    if held:
        log.warning("a signal arrived while the training run was written: it is FINISHED whole")
    with also_to_run_log("summary"):
        print_wrap_up(metrics, ctx.tracker_path)
    return metrics


def wrap_up_rows(m: dict) -> list[tuple[str, str]]:
    """(label, text) rows of the wrap-up: what was trained, how well, where it is, what next."""
    d, cv, s = m["data"], m["cv"], m["search"]
    se = cv.get("accuracy_se")
    rows = [
        ("run", f"{m['run_id']} (training run of phase {m['phase']}: no backtest)"),
        (
            "data",
            ("SYNTHETIC market" if d["synthetic"] else "real data")
            + f", {len(d['tickers'])} tickers; trained on {m['windows']['train']}",
        ),
        (
            "CV accuracy / AUC",
            f"{num(cv['accuracy'])}"
            + (f" (SE {num(se)})" if se is not None else "")
            + f" / {num(cv['auc'])}; log loss {num(cv['log_loss'])} (train accuracy "
            f"{num(cv['train_accuracy'])}, {cv['folds_count']} purged folds, "
            f"{cv['samples']:,} samples)",
        ),
        (
            "search",
            f"{s['trials']} trials"
            + (", reused from the resume cache" if m["resume"].get("search_from_cache") else ""),
        ),
        ("peak memory / wall", outputs.memory_wall(m["resources"])),
        ("model", m["model_dir"]),
    ]
    if m.get("mlflow"):
        rows.append(("MLflow", m["mlflow"]["where"]))
    return rows


def print_wrap_up(m: dict, tracker_path: object) -> None:
    rows = [*wrap_up_rows(m), ("tracker", f"{tracker_path} (training table, phase {m['phase']})")]
    rows.append(("next", f"{m['next']}   # its own out-of-sample window"))
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def summary_markdown(m: dict) -> str:
    """summary.md of a training run."""
    lines = [f"# vpt-ray training run {m['run_id']} (phase {m['phase']})", ""]
    if m["data"]["synthetic"]:
        lines += [SYNTHETIC_BANNER, ""]
    lines += [f"- {k}: {v}" for k, v in wrap_up_rows(m)]
    lines += [
        search_line(m["search"]),
        f"- stages (s): {m['resources']['stages']}",
        "",
        "No backtest and no decision: a training run only fits the model. Backtest it out of "
        "sample with:",
        "",
        f"    {m['next']}",
        "",
    ]
    return "\n".join(lines)
