"""What report.html is built from: a run's files read back from disk (metrics.json, config.yaml,
trades / equity / benchmark parquet, the saved model, the run's feature store and Tune trials).
A missing input becomes a note on its section, never a failed page. Out-of-sample probabilities
are recomputed from the saved model and the feature store and cached as `predictions.parquet`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from vpt_ray.backtest import tearsheet
from vpt_ray.core.bounded import load_yaml
from vpt_ray.core.run import read_status
from vpt_ray.core.storage import ArtifactError, read_json_object, read_parquet_artifact
from vpt_ray.data.local import write_parquet_atomic
from vpt_ray.report.run_report import (
    BAR_EQUITY_FILE,
    BENCHMARK_FILE,
    PREDICTIONS_FILE,
    TICKER_PNL_FILE,
)

TRIAL_METRICS = ("val_log_loss", "val_accuracy", "val_auc", "train_accuracy", "train_val_gap")


@dataclass
class RunFiles:
    """Everything the page shows, as read from a run's files (None or empty when absent)."""

    report_dir: Path
    metrics: dict
    config: dict
    status: dict | None = None
    meta: dict | None = None
    trades: pd.DataFrame = field(default_factory=pd.DataFrame)
    equity: pd.Series | None = None
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictions: pd.DataFrame | None = None
    importance: pd.DataFrame | None = None
    benchmark: pd.Series | None = None  # equal-weight buy-and-hold equity by session
    prices: dict[str, pd.DataFrame] = field(default_factory=dict)  # ticker -> bars of the window
    price_window: tuple[dt.date, dt.date] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is missing
    exposure_bars: pd.DataFrame | None = None  # every clock step: timestamp, gross/net exposure
    ticker_pnl: pd.DataFrame | None = None  # cumulative net PnL by session (rows) and ticker

    @property
    def is_backtest(self) -> bool:
        """A standalone backtest of a saved model (no CV, search or decision of its own)."""
        return self.metrics.get("kind") == "backtest"

    @property
    def capital(self) -> float:
        return float(self.config.get("backtest", {}).get("capital") or 0.0) or (
            float(self.equity.iloc[0]) if self.equity is not None and len(self.equity) else 1.0
        )


def _read_json(path: Path) -> dict | None:
    """A JSON object the run wrote, None when absent; ArtifactError naming a damaged one."""
    if not path.exists():
        return None
    return read_json_object(path, "write the run again")


def _read_frame(path: Path, column: str) -> pd.Series | None:
    """`column` of a run's parquet table by its `date`, None when absent; ArtifactError naming
    a damaged one."""
    if not path.exists():
        return None
    df = read_parquet_artifact(path, "write the run again")
    if "date" not in df or column not in df:
        raise ArtifactError(f"{path}: lacks the date and {column} columns; write the run again")
    return df.set_index(pd.to_datetime(df["date"]))[column].astype(float)


SECTIONS = ("data", "cv", "oos", "backtest", "benchmark", "resources", "decision", "search")


def _read_config(path: Path) -> dict:
    """A run's config.yaml; ArtifactError naming it when it is damaged."""
    try:
        config = load_yaml(path.read_bytes().decode())
    except (OSError, ValueError, yaml.YAMLError) as exc:  # not UTF-8, not YAML, too large
        raise ArtifactError(f"{path}: not a readable config ({exc}); write the run again") from None
    return config if isinstance(config, dict) else {}


def default_model_dir(report_dir: Path, metrics: dict) -> Path:
    """The model written by the same run: metrics' model_dir, else artifacts/models/{run_id}."""
    recorded = metrics.get("model_dir")
    if recorded and Path(recorded).exists():
        return Path(recorded)
    return report_dir.parent.parent / "models" / str(metrics.get("run_id", report_dir.name))


def load_run(
    report_dir: Path,
    model_dir: Path | None = None,
    price_window: tuple[dt.date, dt.date] | None = None,
) -> RunFiles:
    """Read a finished run's files; raises FileNotFoundError when metrics.json is missing.
    `price_window`: the sessions the price panel shows (default: around the worst day)."""
    report_dir = Path(report_dir)
    metrics = _read_json(report_dir / "metrics.json")
    if metrics is None:
        status = read_status(report_dir) or {}
        why = status.get("abandoned") or status.get("error")
        raise FileNotFoundError(
            f"{report_dir}: no metrics.json (run status: {status.get('status', 'unknown')}"
            f"{f': {why}' if why else ''}); an HTML report needs a finished run: `vpt phase N` "
            "writes one"
        )
    run_id = str(metrics.get("run_id", report_dir.name))
    model_dir = Path(model_dir) if model_dir else default_model_dir(report_dir, metrics)
    work_dir = report_dir.parent.parent / "runs" / run_id
    cfg_path = next(
        (p for p in (report_dir / "config.yaml", model_dir / "config.yaml") if p.exists()), None
    )
    bad = [k for k in SECTIONS if not isinstance(metrics.get(k, {}), dict)]
    if bad:
        raise ArtifactError(
            f"{report_dir / 'metrics.json'}: damaged: {', '.join(bad)} is not a section of "
            "figures; write the run again"
        )
    run = RunFiles(
        report_dir=report_dir,
        metrics=metrics,
        config=_read_config(cfg_path) if cfg_path else {},
        status=read_status(report_dir),
        meta=_read_json(model_dir / "meta.json"),
    )
    if not run.config:
        run.notes["config"] = f"no config.yaml in {report_dir} or {model_dir}"
    if (report_dir / "trades.parquet").exists():
        run.trades = read_parquet_artifact(report_dir / "trades.parquet", "write the run again")
    run.equity = _read_frame(report_dir / "equity.parquet", "equity")
    run.benchmark = _read_frame(report_dir / BENCHMARK_FILE, "benchmark")
    read_book(run)
    try:
        run.price_window = price_window or default_price_window(run.equity, run.capital)
        if run.price_window is not None:
            run.prices = window_bars(metrics, run.config, *run.price_window)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        run.notes["prices"] = f"bars for the price panel: {exc}"
    run.trials = load_trials(work_dir / "trials.parquet", metrics)
    try:
        run.importance = feature_importance(model_dir)
    except (FileNotFoundError, ValueError) as exc:
        run.notes["importance"] = str(exc)
    try:
        run.predictions = oos_predictions(report_dir, model_dir, work_dir / "features", run.config)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        run.notes["calibration"] = str(exc)
    return run


def _schema_names(path: Path) -> list[str]:
    """The columns of a parquet file; ArtifactError naming a damaged one."""
    try:
        return pq.read_schema(path).names
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ArtifactError(f"{path}: not readable parquet ({exc}); write the run again") from None


def read_book(run: RunFiles) -> None:
    """The book's exposure at every bar (equity_bars.parquet with net exposure) and each ticker's
    cumulative PnL (ticker_pnl.parquet), when the run wrote them (runs before issue 28 did not)."""
    bars = run.report_dir / BAR_EQUITY_FILE
    cols = ["timestamp", "gross_exposure", "net_exposure"]
    if bars.exists() and set(cols) <= set(_schema_names(bars)):
        run.exposure_bars = read_parquet_artifact(bars, "write the run again", columns=cols)
    else:
        run.notes["exposure"] = f"no net exposure in {bars.name} (a run from before issue 28)"
    pnl = run.report_dir / TICKER_PNL_FILE
    if pnl.exists():
        tp = read_parquet_artifact(pnl, "write the run again")
        if "date" not in tp:
            raise ArtifactError(f"{pnl}: lacks the date column; write the run again")
        run.ticker_pnl = tp.set_index(pd.to_datetime(tp["date"])).drop(columns="date")
    else:
        run.notes["ticker_equity"] = f"no {pnl.name} (a run from before issue 28)"


def load_trials(path: Path, metrics: dict) -> pd.DataFrame:
    """Every Tune trial (trials.parquet), else the first 50 kept in metrics.json; creation order."""
    if path.exists():
        df = pd.read_parquet(path)
    else:
        df = pd.DataFrame(metrics.get("search", {}).get("table", []))
    if df.empty:
        return df
    if "trial_id" in df:
        order = df["trial_id"].astype(str).str.rsplit("_", n=1).str[-1]
        df = df.assign(trial=pd.to_numeric(order, errors="coerce"))
        df = df.sort_values("trial", kind="stable", ignore_index=True)
    else:
        df = df.assign(trial=np.arange(len(df)))
    return df


def feature_importance(model_dir: Path) -> pd.DataFrame:
    """Gain, total gain and split count per feature of the saved booster (0 for unused ones)."""
    from vpt_ray.model.train import load_model

    booster, meta = load_model(model_dir)
    names = meta.get("feature_names") or booster.feature_names or []
    cols = {k: booster.get_score(importance_type=k) for k in ("gain", "total_gain", "weight")}
    df = pd.DataFrame({k: [v.get(n, 0.0) for n in names] for k, v in cols.items()}, index=names)
    return df.rename_axis("feature").sort_values("gain", ascending=False).reset_index()


def oos_predictions(
    report_dir: Path, model_dir: Path, store_dir: Path, config: dict
) -> pd.DataFrame:
    """P(up) of every labelled out-of-sample bar: predictions.parquet as the backtest wrote it, or,
    for a report directory without it, recomputed from the saved model and the run's feature
    store over the backtest window (and cached)."""
    cached = report_dir / PREDICTIONS_FILE
    if cached.exists():
        return pd.read_parquet(cached)
    from vpt_ray.backtest.run import predict
    from vpt_ray.features.store import read_ticker_window
    from vpt_ray.model.train import load_model

    if not store_dir.exists():
        raise FileNotFoundError(f"no feature store at {store_dir} to score the OOS bars")
    booster, meta = load_model(model_dir)
    names = meta["feature_names"]
    start = dt.date.fromisoformat(str(config["backtest"]["start"]))
    end = dt.date.fromisoformat(str(config["backtest"]["end"]))
    parts = []
    for path in sorted(store_dir.glob("*.parquet")):
        df = read_ticker_window(str(path), start, end, names)
        df = df[df["y"].notna()]
        p = predict(booster, df[names].to_numpy(np.float32), names)
        parts.append(
            pd.DataFrame(
                {
                    "ticker": path.stem,
                    "timestamp": df["timestamp"].to_numpy(),
                    "y": df["y"].to_numpy(np.float32),
                    "p": p.astype(np.float32),
                    "fwd_ret": df["fwd_ret"].to_numpy(np.float32),
                }
            )
        )
    if not parts:
        raise FileNotFoundError(f"feature store {store_dir} holds no ticker files")
    out = pd.concat(parts, ignore_index=True)
    write_parquet_atomic(pa.Table.from_pandas(out, preserve_index=False), cached)
    return out


def default_price_window(
    equity: pd.Series | None, capital: float, sessions: int = 5
) -> tuple[dt.date, dt.date] | None:
    """`sessions` sessions centred on the portfolio's worst day: where a reader looks first."""
    if equity is None or not len(equity):
        return None
    r = tearsheet.daily_returns(equity, capital).to_numpy()
    worst = int(np.nanargmin(r)) if np.isfinite(r).any() else 0
    lo = max(0, min(worst - sessions // 2, len(equity) - sessions))
    days = equity.index[lo : lo + sessions]
    return days[0].date(), days[-1].date()


MAX_PRICE_TICKERS = 12  # the price panel's tickers (most traded in the window first)


def window_bars(metrics: dict, config: dict, start: dt.date, end: dt.date) -> dict:
    """Each backtested ticker's bars (at the run's bar size) over [start, end], from the bar
    files the backtest read (metrics.json `backtest_bars`)."""
    from vpt_ray.data.local import read_bars
    from vpt_ray.data.resample import resample_bars

    paths = metrics.get("backtest_bars")
    if not paths:
        raise KeyError("metrics.json has no backtest_bars (a run from before the price panel)")
    data = config.get("data", {})
    out = {}
    for t, path in list(paths.items())[:MAX_PRICE_TICKERS]:
        if str(path).startswith("gs://") or not Path(path).exists():
            raise FileNotFoundError(f"{t}: bar file {path} is not on this machine")
        bars = read_bars(path, start, end, data.get("vwap_tolerance", 0.001))
        out[t] = resample_bars(bars, data.get("bar", "1min"))
    return out
