"""`python -m vpt_ray.backtest --model-dir DIR --start-date D --end-date D`: backtest a saved model.

Runs the same engine and Ray fan-out as a phase on any period outside the model's training window
(plus its embargo): the model directory's config snapshot says which tickers, bars and features;
the data chain supplies the bars; features get a warm-up of sessions before the start date so
rolling windows are full. Results go to `artifacts/reports/{model run id}-bt-{start}-{end}/`.
DIR may be a gs:// model directory (read with the `gcs` settings of `--set gcs.*`); one without
meta.json, which is uploaded last, is refused as incomplete.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
from pathlib import Path

import pandas as pd
import yaml

from vpt_ray.config import Config, ConfigError

log = logging.getLogger("vpt_ray.backtest")
WARMUP_DAYS = 14  # calendar days of bars before the start date, for rolling-window features


def warmup_start(saved: dict, start: dt.date) -> dt.date:
    """First day of the features' warm-up: WARMUP_DAYS before `start`, or earlier when the
    model's longest rolling window (4 x the longest feature window, in bars: the volume
    z-scores) needs more sessions, as daily bars do (240 bars = 240 sessions)."""
    from vpt_ray.data.calendar import calendar_bounds, get_calendar

    bar = str(saved["data"]["bar"])
    per_session = 1 if bar == "1day" else -(-390 // int(bar.removesuffix("min")))
    windows = (saved.get("features") or {}).get("windows") or [60]
    need = -(-4 * max(windows) // per_session) + 1  # sessions
    calendar = saved["data"].get("calendar", "XNYS")
    before = get_calendar(calendar).sessions
    before = before[before < pd.Timestamp(start)]
    first = before[-need].date() if len(before) >= need else calendar_bounds(calendar)[0]
    return min(first, start - dt.timedelta(days=WARMUP_DAYS))


def backtest_config(model_dir: Path, start: dt.date, end: dt.date, overrides: list[str]) -> Config:
    """The model's config with the backtest window moved to [start, end] and checked."""
    from vpt_ray.config import load_config

    snapshot = model_dir / "config.yaml"
    if not snapshot.exists():
        raise FileNotFoundError(f"{model_dir}: no config.yaml; is this a vpt-ray model directory?")
    saved = yaml.safe_load(snapshot.read_text())
    train_start = dt.date.fromisoformat(str(saved["data"]["start"]))
    train_end = dt.date.fromisoformat(str(saved["data"]["end"]))
    if end < start:
        raise ConfigError(f"--end-date {end} is before --start-date {start}")
    if start <= train_end and end >= train_start:
        raise ConfigError(
            f"backtest {start}..{end} overlaps the model's training window "
            f"{train_start}..{train_end}: pick a period outside it (an in-sample backtest is not "
            "evidence)"
        )
    warm_start = warmup_start(saved, start)
    if warm_start <= train_end < start:
        log.info("warm-up bars overlap training data: features only, no labels are used")
    cfg = load_config(
        config_path=snapshot,
        overrides=[
            f"data.start={warm_start}",
            f"data.end={start - dt.timedelta(days=1)}",
            f"backtest.start={start}",
            f"backtest.end={end}",
            *overrides,
        ],
    )
    return cfg


def check_clock(meta: dict, cfg: Config) -> None:
    """Refuse a model whose recorded clock (meta.json `clock`: calendar, origin, bars a session)
    differs from the one this backtest computes: its positions would not line up. Models saved
    before the clock was recorded have none and pass."""
    from vpt_ray.features import clock_info

    saved = meta.get("clock")
    now = clock_info(cfg.data.bar_minutes, cfg.data.calendar)
    if saved and saved != now:
        raise ConfigError(
            f"the model was trained on the clock {saved}, this backtest computes {now}: "
            "backtest it with the vpt-ray version (and --set data.* values) it was trained with"
        )


def model_files(model_dir: Path | str, overrides: list[str]) -> contextlib.AbstractContextManager:
    """The model directory on this machine: a gs:// one is downloaded (complete ones only)."""
    from vpt_ray import storage
    from vpt_ray.config import load_config
    from vpt_ray.run import MODEL_MARKER

    if not str(model_dir).startswith(storage.SCHEME):
        return contextlib.nullcontext(Path(model_dir))
    gcs = load_config(1, overrides=[o for o in overrides if o.startswith("gcs.")]).gcs
    return storage.local_dir(storage.parse(str(model_dir), Path.cwd(), gcs), MODEL_MARKER)


def run(model_dir: Path | str, start: dt.date, end: dt.date, overrides: list[str]) -> dict:
    from vpt_ray import stages
    from vpt_ray.report import write_report
    from vpt_ray.resources import init_ray
    from vpt_ray.run import RunContext, setup_logging
    from vpt_ray.train import load_model

    with model_files(model_dir, overrides) as local_model:
        booster, meta = load_model(local_model)
        cfg = backtest_config(local_model, start, end, overrides)
    check_clock(meta, cfg)
    ctx = RunContext(cfg, f"{meta['run_id']}-bt-{start}-{end}")
    setup_logging(ctx.log_path)
    ctx.mark("RUNNING")
    try:
        init_ray(cfg.hardware)
        data = stages.load_data(cfg)
        store = stages.build_features(cfg, data, ctx.work_dir / "features")
        bt = stages.backtest(cfg, booster, data, store, meta["feature_names"])
        metrics = {
            "run_id": ctx.run_id,
            "model_run_id": meta["run_id"],
            "phase": cfg.phase,
            "data": {"synthetic": data.synthetic, "tickers": list(data.tickers)},
            "windows": {"backtest": f"{start}..{end}", "train": meta["train_window"]},
            "oos": bt["oos"],
            "backtest": {**bt["stats"], "per_ticker": bt["per_ticker"]},
        }
        write_report(ctx.report_dir, metrics, bt["trades"], bt["equity"], summary=False)
        ctx.mark("FINISHED")
    except BaseException as exc:
        ctx.mark("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    s = metrics["backtest"]
    print(
        f"{ctx.run_id}: {s['trades']} trades, return {s['total_return']:.2%}, Sharpe "
        f"{s['sharpe']:.2f}, max DD {s['max_drawdown']:.2%}; OOS accuracy "
        f"{bt['oos']['accuracy']:.4f} -> {ctx.report_dir}"
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    from vpt_ray.cli import user_error_exit

    parser = argparse.ArgumentParser(
        prog="python -m vpt_ray.backtest",
        description="Backtest a saved model (artifacts/models/RUN_ID) out of sample on "
        "[--start-date, --end-date], which must lie outside the model's training window.",
    )
    parser.add_argument("--model-dir", required=True, help="a model directory, or gs://...")
    parser.add_argument("--start-date", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--end-date", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args(argv)
    try:
        run(args.model_dir, args.start_date, args.end_date, args.overrides)
    except BaseException as exc:  # noqa: BLE001 - translated to an exit code
        if (code := user_error_exit(exc)) is not None:
            return code
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
