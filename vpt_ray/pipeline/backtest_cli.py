"""`python -m vpt_ray.backtest --model-dir DIR --start-date D --end-date D`: backtest a saved model.

Runs the same engine and Ray fan-out as a phase on any period outside the model's training window
(plus its embargo): the model directory's config snapshot says which tickers, bars and features;
the data chain supplies the bars; features get a warm-up of sessions before the start date so
rolling windows are full. Without dates, the model's own out-of-sample window is used;
`--latest-phase N` picks the newest model of phase N instead of `--model-dir`.

The result is a report like a phase's, in `artifacts/reports/{model run id}-bt-{start}-{end}/`:
metrics.json (`kind: backtest`, `model_run_id`), summary.md, report.html, trades, equity,
benchmark and predictions, and config.yaml (the config that ran, headed by the model run it
tests); the scaling tracker gets a history row "backtest of RUN" (it never replaces a phase's
latest row: a backtest decides nothing). DIR may be a gs:// model directory (read with the `gcs`
settings of `--set gcs.*`); one without meta.json, which is uploaded last, is refused as
incomplete.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
from pathlib import Path

import pandas as pd
import yaml

from vpt_ray.core import interrupt
from vpt_ray.core.bounded import short
from vpt_ray.core.config import Config, ConfigError, load_config
from vpt_ray.pipeline.cli import (
    add_mlflow_arg,
    failure_exit,
    guarded,
    overrides_of,
    run_locations,
    unwrap,
)

log = logging.getLogger("vpt_ray.backtest")
WARMUP_DAYS = 14  # calendar days of bars before the start date, for rolling-window features


def warmup_start(saved: dict, start: dt.date) -> dt.date:
    """First day of the features' warm-up: WARMUP_DAYS before `start`, or earlier when the
    model's longest rolling window (4 x the longest feature window, in bars: the volume
    z-scores) needs more sessions, as daily bars do (240 bars = 240 sessions)."""
    from vpt_ray.core.calendar import calendar_bounds, get_calendar

    bar = str(saved["data"]["bar"])
    per_session = 1 if bar == "1day" else -(-390 // int(bar.removesuffix("min")))
    windows = (saved.get("features") or {}).get("windows") or [60]
    need = -(-4 * max(windows) // per_session) + 1  # sessions
    calendar = saved["data"].get("calendar", "XNYS")
    before = get_calendar(calendar).sessions
    before = before[before < pd.Timestamp(start)]
    first = before[-need].date() if len(before) >= need else calendar_bounds(calendar)[0]
    return min(first, start - dt.timedelta(days=WARMUP_DAYS))


def backtest_config(
    model_dir: Path, start: dt.date | None, end: dt.date | None, overrides: list[str]
) -> Config:
    """The model's config with the backtest window moved to [start, end] (default: the model's
    own out-of-sample window) and checked."""
    from vpt_ray.core.storage import ArtifactError

    snapshot = model_dir / "config.yaml"
    if not snapshot.exists():
        raise FileNotFoundError(f"{model_dir}: no config.yaml; is this a vpt-ray model directory?")
    try:
        saved = yaml.safe_load(snapshot.read_text())
        train_start = dt.date.fromisoformat(str(saved["data"]["start"]))
        train_end = dt.date.fromisoformat(str(saved["data"]["end"]))
        start = start or dt.date.fromisoformat(str(saved["backtest"]["start"]))
        end = end or dt.date.fromisoformat(str(saved["backtest"]["end"]))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())  # YAML errors span lines
        raise ArtifactError(
            f"{snapshot}: damaged config snapshot ({type(exc).__name__}: {detail}); the model "
            "directory is damaged: write it again with `python -m vpt_ray.phase N`"
        ) from None
    if end < start:
        raise ConfigError(f"--end-date {end} is before --start-date {start}")
    if start <= train_end and end >= train_start:
        raise ConfigError(
            f"backtest {start}..{end} overlaps the model's training window "
            f"{train_start}..{train_end}: pick a period outside it, e.g. its own out-of-sample "
            f"window --start-date {saved['backtest']['start']} --end-date "
            f"{saved['backtest']['end']} (an in-sample backtest is not evidence)"
        )
    warm_start = warmup_start(saved, start)
    if warm_start <= train_end < start:
        log.info("warm-up bars overlap training data: features only, no labels are used")
    return load_config(
        config_path=snapshot,
        overrides=[
            f"data.start={warm_start}",
            f"data.end={start - dt.timedelta(days=1)}",
            f"backtest.start={start}",
            f"backtest.end={end}",
            *overrides,
        ],
    )


def check_clock(meta: dict, cfg: Config) -> None:
    """Refuse a model whose recorded clock (meta.json `clock`: calendar, origin, bars a session)
    differs from the one this backtest computes: its positions would not line up. Models saved
    before the clock was recorded have none and pass."""
    from vpt_ray.features.causal import clock_info

    saved = meta.get("clock")
    now = clock_info(cfg.data.bar_minutes, cfg.data.calendar)
    if saved and saved != now:
        raise ConfigError(
            f"the model was trained on the clock {saved}, this backtest computes {now}: "
            "backtest it with the vpt-ray version (and --set data.* values) it was trained with"
        )


def model_files(model_dir: Path | str, overrides: list[str]) -> contextlib.AbstractContextManager:
    """The model directory on this machine: a gs:// one is downloaded (complete ones only)."""
    from vpt_ray.core import storage
    from vpt_ray.core.run import MODEL_MARKER

    if not str(model_dir).startswith(storage.SCHEME):
        return contextlib.nullcontext(Path(model_dir))
    gcs = load_config(1, overrides=[o for o in overrides if o.startswith("gcs.")]).gcs
    return storage.local_dir(storage.parse(str(model_dir), Path.cwd(), gcs), MODEL_MARKER)


def latest_model(phase: int, overrides: list[str]) -> Path:
    """The newest complete local model of `phase` under `paths.artifacts`/models (by the time
    its meta.json was written)."""
    from vpt_ray.core.storage import read_json_object

    artifacts = Path(load_config(phase, overrides=overrides).paths.artifacts)
    found = []
    for meta in (artifacts / "models").glob("*/meta.json"):
        fix = f"move {meta.parent} away or write it again"
        if read_json_object(meta, fix).get("phase") == phase:
            found.append((meta.stat().st_mtime, meta.parent))
    if not found:
        raise FileNotFoundError(
            f"no phase-{phase} model under {artifacts / 'models'}: train one first "
            f"(python scripts/phase{phase}_train.py, or vpt phase {phase})"
        )
    return max(found)[1]


def run(
    model_dir: Path | str,
    start: dt.date | None = None,
    end: dt.date | None = None,
    overrides: list[str] | None = None,
) -> dict:
    from vpt_ray.core import run_lock
    from vpt_ray.core.run import RunContext
    from vpt_ray.model.train import load_model

    overrides = overrides or []
    with model_files(model_dir, overrides) as local_model:
        booster, meta = load_model(local_model)
        cfg = backtest_config(local_model, start, end, overrides)
    start, end = cfg.backtest.start, cfg.backtest.end
    check_clock(meta, cfg)
    ctx = RunContext(cfg, f"{meta['run_id']}-bt-{start}-{end}", kind="backtest")
    with run_lock.exclusive(ctx):  # one live run per run id (exit 2 naming the live one)
        return _run(cfg, ctx, model_dir, booster, meta)


def _run(cfg: Config, ctx, model_dir: Path | str, booster, meta: dict) -> dict:  # noqa: ANN001
    """The backtest run of `run`, holding its run id."""
    from vpt_ray.backtest.run import predictions_frame
    from vpt_ray.core.memory_sampler import MemorySampler
    from vpt_ray.core.resources import init_ray
    from vpt_ray.core.run import setup_logging
    from vpt_ray.pipeline import outputs, stages
    from vpt_ray.report import tracker
    from vpt_ray.report.html.page import write_html_report
    from vpt_ray.report.run_report import backtest_summary_markdown, write_report

    start, end = cfg.backtest.start, cfg.backtest.end
    setup_logging(ctx.log_path)
    log.info("run %s: backtest of model run %s on %s..%s", ctx.run_id, meta["run_id"], start, end)
    ctx.mark("RUNNING")
    ctx.snapshot_config(
        f"backtest of model run {meta['run_id']} ({model_dir}), on {start}..{end}\n"
        "the model's config with the data window moved to the features' warm-up"
    )
    sampler = MemorySampler.for_hardware(cfg.hardware)
    try:
        with sampler:
            with ctx.stage("ray_init"):
                sampler.stage = "ray_init"
                ray_info = init_ray(cfg.hardware)
                interrupt.install()  # ray.init replaced SIGTERM's handler with its own sys.exit
                sampler.attach()  # from now on: every node of the cluster
                sampler.hold_to(ray_info["memory_limit"])  # the config's or the machine's
            with ctx.stage("data"):
                data = stages.load_data(cfg)
            with ctx.stage("features"):
                store = stages.build_features(cfg, data, ctx.work_dir / "features")
            with ctx.stage("backtest"):
                bt = stages.backtest(cfg, booster, data, store, meta["feature_names"])
        where = (
            str(model_dir) if str(model_dir).startswith("gs://") else str(Path(model_dir).resolve())
        )
        metrics = backtest_metrics(cfg, ctx, meta, where, data, store, bt, sampler)
        metrics["resources"]["ray"] = ray_info
        interrupt.check()
        with interrupt.held(), ctx.stage("report"):  # the commit: all of it or none
            write_report(
                ctx.report_dir, metrics, bt["trades"], bt["equity"],
                predictions=predictions_frame(bt["results"]), benchmark=bt["benchmark"],
                bar_equity=outputs.bar_equity_frame(bt), ticker_pnl=bt.get("ticker_pnl"),
            )  # fmt: skip
            local = Path(model_dir)
            write_html_report(ctx.report_dir, local if local.is_dir() else None)
            tracker.update(ctx.tracker_path, tracker.row_from_metrics(metrics))
        with interrupt.held():  # every stage's time, the report stage's too
            outputs.record_wall(ctx, metrics, backtest_summary_markdown)
            ctx.mark("FINISHED")
    except BaseException as exc:
        if (stop := interrupt.as_interrupt(exc)) is not None:
            with interrupt.held():
                ctx.mark("INTERRUPTED", f"{stop.signal_name} received")
            stop.run_id = ctx.run_id  # type: ignore[attr-defined]
            raise stop from None
        inner = unwrap(exc)
        ctx.mark("FAILED", f"{type(inner).__name__}: {short(str(inner))}")
        with contextlib.suppress(AttributeError):  # where the CLI says the traceback is
            exc.vpt_run_log = str(ctx.log_path)  # type: ignore[attr-defined]
        raise
    from vpt_ray.core.console import also_to_run_log

    with also_to_run_log("summary"):  # the run log holds the summary too
        print_backtest_summary(metrics, ctx.report_dir)
    return metrics


def backtest_metrics(cfg, ctx, meta: dict, model_dir: str, data, store, bt, sampler) -> dict:
    """metrics.json of a standalone backtest: a phase's keys where they apply, `kind` and the
    model run it tests."""
    from vpt_ray.core.run import git_commit
    from vpt_ray.pipeline import outputs

    train = meta.get("train_window") or ["?", "?"]
    return {
        "run_id": ctx.run_id,
        "kind": "backtest",
        "model_run_id": meta["run_id"],
        "phase": cfg.phase,
        "data": outputs.data_section(cfg, data, store),
        "windows": {
            "train": f"{train[0]}..{train[1]}",
            "backtest": f"{cfg.backtest.start}..{cfg.backtest.end}",
            "embargo_bars": meta.get("embargo_bars", cfg.embargo_bars),
            "label_horizon": meta.get("label_horizon", cfg.labels.horizon),
        },
        "features": {"count": len(meta["feature_names"]), "names": meta["feature_names"]},
        "model": {k: meta.get(k) for k in ("cv", "params", "rounds", "git_commit")},
        "oos": bt["oos"],
        "backtest": outputs.backtest_section(bt),
        "benchmark": bt["benchmark_stats"],
        "backtest_bars": bt["bars_paths"],
        "resources": {
            **sampler.resources(),  # peak in total (all nodes) and per node, placement
            "stage_peak_gb": dict(sampler.stage_peaks),
            "wall_seconds": ctx.wall_seconds(),
            "stages": dict(ctx.stages),
            "memory_samples": sampler.samples[:: max(1, len(sampler.samples) // 500)],
        },
        "model_dir": model_dir,
        "mlflow": ctx.mlflow_info(),  # where the run is logged; None without MLflow
        "git_commit": git_commit(),
        "config_fingerprint": cfg.fingerprint(),
    }


def print_backtest_summary(m: dict, report_dir: Path) -> None:
    from vpt_ray.pipeline.outputs import benchmark_row, memory_wall
    from vpt_ray.report.run_report import num, pct

    s, b = m["backtest"], m.get("benchmark") or {}
    print(
        f"\n  {m['run_id']} (backtest of {m['model_run_id']}): {s['trades']} trades, return "
        f"{pct(s['total_return'])}, Sharpe {num(s['sharpe'], 2)}, "
        f"max DD {pct(s['max_drawdown'])}; OOS accuracy {m['oos']['accuracy']:.4f}"
    )
    if b.get("total_return") is not None:
        print(f"  buy-and-hold {benchmark_row(b)}")
    print(f"  peak memory / wall {memory_wall(m['resources'])}")
    if m.get("mlflow"):
        print(f"  MLflow {m['mlflow']['where']}")
    print(f"  report {report_dir / 'report.html'}")


@guarded
def main(argv: list[str] | None = None) -> int:
    from vpt_ray.pipeline.parsers import add_set_arg, prog

    parser = argparse.ArgumentParser(
        prog=prog("vpt_ray.backtest"),
        description="Backtest a saved model (artifacts/models/RUN_ID) out of sample on "
        "[--start-date, --end-date], which must lie outside the model's training window "
        "(default: the model's own out-of-sample window). Writes a full report and a tracker "
        "history row.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-dir", "--model_dir", help="a model directory, or gs://...")
    which.add_argument(
        "--latest-phase", type=int, choices=range(1, 6), metavar="N",
        help="the newest model of phase N under artifacts/models",
    )  # fmt: skip
    for flag in ("start", "end"):
        parser.add_argument(
            f"--{flag}-date", f"--{flag}_date", type=dt.date.fromisoformat, default=None,
            help=f"{flag} of the backtest window, YYYY-MM-DD (default: the model's own)",
        )  # fmt: skip
    add_set_arg(parser, "the model's saved config", example="backtest.capital=50000")
    add_mlflow_arg(parser)
    args = parser.parse_args(argv)
    from vpt_ray.core.run import command_started

    command_started()  # the run's wall counts the process's start-up (imports, config)
    overrides = overrides_of(args)
    try:
        model_dir = args.model_dir or latest_model(args.latest_phase, args.overrides)
        with interrupt.handle_signals():  # SIGINT / SIGTERM: INTERRUPTED, exit 130 / 143
            run(model_dir, args.start_date, args.end_date, overrides)
    except BaseException as exc:  # noqa: BLE001 - translated to an exit code
        started = getattr(exc, "vpt_run_log", None)  # set when the run had started
        outcome = "the backtest is FAILED: nothing was published" if started else ""
        cfg = None  # only to name a full disk's location
        with contextlib.suppress(Exception):
            cfg = load_config(1, overrides=[o for o in overrides if o.startswith("paths.")])
        return failure_exit(exc, run_locations(cfg), started, outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
