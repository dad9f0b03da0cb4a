"""`report.html`: one self-contained page that answers "did it learn, where, at what cost, and
should I scale?" for one run.

Why a separate module: the run report (`report.py`) writes the machine-readable files; this one
reads them back from disk only (metrics.json, config.yaml, trades/equity parquet, the saved model,
the run's feature store and Tune trials), so it can be rebuilt for any finished run with
`vpt report RUN_ID` (or `python -m vpt_ray.html_report RUN_ID`) after the fact.

Charts are plotly figures; plotly.js is embedded once in the page (about 4.7 MB), so the file opens
offline with no CDN. Out-of-sample probabilities for the calibration plot are recomputed from the
saved model and the feature store (the same rows the backtest scored) and cached next to the report
as `predictions.parquet`. A section whose inputs are missing says so instead of failing the page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pyarrow as pa
import yaml
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from vpt_ray.backtest import tearsheet
from vpt_ray.core.config import SEARCH_PARAMS
from vpt_ray.core.run import read_status, write_text_atomic
from vpt_ray.core.storage import ArtifactError
from vpt_ray.data.local import write_parquet_atomic
from vpt_ray.report.run_report import BENCHMARK_FILE, PREDICTIONS_FILE

log = logging.getLogger("vpt_ray.html_report")

REPORT_FILE = "report.html"
TRIAL_METRICS = ("val_log_loss", "val_accuracy", "val_auc", "train_accuracy", "train_val_gap")
GREEN, RED, BLUE, ORANGE, GREY = "#1a7f37", "#cf222e", "#0969da", "#bc4c00", "#6e7781"
TEMPLATE = "plotly_white"
STAGE_COLORS = ("#ddf4ff", "#fff8c5", "#ffebe9", "#dafbe1", "#fbefff", "#eaeef2", "#fff1e5")


# ----------------------------------------------------------------------------------------- inputs


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
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc}); write the run again") from None


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
    run = RunFiles(
        report_dir=report_dir,
        metrics=metrics,
        config=yaml.safe_load(cfg_path.read_text()) if cfg_path else {},
        status=read_status(report_dir),
        meta=_read_json(model_dir / "meta.json"),
    )
    if not run.config:
        run.notes["config"] = f"no config.yaml in {report_dir} or {model_dir}"
    if (report_dir / "trades.parquet").exists():
        run.trades = pd.read_parquet(report_dir / "trades.parquet")
    if (report_dir / "equity.parquet").exists():
        eq = pd.read_parquet(report_dir / "equity.parquet")
        run.equity = eq.set_index(pd.to_datetime(eq["date"]))["equity"].astype(float)
    if (report_dir / BENCHMARK_FILE).exists():
        b = pd.read_parquet(report_dir / BENCHMARK_FILE)
        run.benchmark = b.set_index(pd.to_datetime(b["date"]))["benchmark"].astype(float)
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


# ------------------------------------------------------------------------------ derived tables


def drawdown(equity: pd.Series, capital: float) -> pd.Series:
    """equity / running peak - 1, with the starting capital counted as the first peak."""
    peak = np.maximum.accumulate(np.concatenate(([capital], equity.to_numpy())))[1:]
    return pd.Series(equity.to_numpy() / peak - 1.0, index=equity.index)


def monthly_returns(equity: pd.Series, capital: float) -> pd.DataFrame:
    """Month-end equity over the previous month-end (capital before the first): year x month."""
    month_end = equity.groupby(equity.index.to_period("M")).last()
    prev = month_end.shift(1)
    prev.iloc[0] = capital
    rets = month_end / prev - 1.0
    table = pd.DataFrame({"year": rets.index.year, "month": rets.index.month, "ret": rets.values})
    return table.pivot(index="year", columns="month", values="ret").reindex(columns=range(1, 13))


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


def calibration_table(pred: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Reliability by quantile bin of P(up): mean predicted, observed up-rate and count."""
    pred = pred.assign(p=pred["p"].astype(np.float64), y=pred["y"].astype(np.float64))
    q = pd.qcut(pred["p"], q=bins, duplicates="drop")
    g = pred.groupby(q, observed=True).agg(
        predicted=("p", "mean"), observed=("y", "mean"), n=("y", "size")
    )
    return g.reset_index(drop=True)


def per_ticker_oos(pred: pd.DataFrame) -> pd.DataFrame:
    """OOS accuracy, AUC and sample count per ticker from the predictions."""
    from vpt_ray.model.metrics import classification

    rows = []
    for t, g in pred.groupby("ticker", sort=True):
        c = classification(g["y"].to_numpy(), g["p"].to_numpy())
        rows.append(
            {"ticker": t, "oos_accuracy": c["accuracy"], "oos_auc": c["auc"], "bars": len(g)}
        )
    return pd.DataFrame(rows)


def stage_spans(stages: dict[str, float], end_s: float) -> list[tuple[str, float, float]]:
    """(stage, start, end) on the sampler's clock, laid back to back ending at its last sample.

    Stage start times are not recorded, only durations; sampling stops right after the last
    sampled stage, so aligning the stages on the end is accurate to a sample interval.
    """
    sampled = [(k, v) for k, v in stages.items() if k not in ("report",)]
    spans, t = [], end_s
    for name, dur in reversed(sampled):
        spans.append((name, max(0.0, t - dur), t))
        t -= dur
    return list(reversed(spans))


_IF_FAILS = {
    "stop": "stop",
    "optimize": "optimize",
    "advance": "advance",
    "info": "sign of overfitting (stops only if confirmed out of sample)",
}


def _rules_from_checks(checks: list[dict]) -> pd.DataFrame:
    """The decision's own checks (`vpt_ray.validation.decision`): figure, SE, threshold, outcome."""
    out = []
    for c in checks:
        if c["rule"] == "overfitting":
            out.append({"rule": "overfitting (a sign confirmed out of sample)", "needs": "none",
                        "value": None, "SE": None, "passed": not c["fired"],
                        "if it fails": "stop (overfitting)"})  # fmt: skip
            continue
        passed = c["fired"] if c["effect"] == "advance" else not c["fired"]
        threshold = c.get("threshold")
        op = ">" if c["effect"] == "advance" else "<="
        op = ">=" if c["rule"].startswith("deflated") else op
        out.append(
            {"rule": c["rule"], "needs": "n/a" if threshold is None else f"{op} {threshold:g}",
             "value": c.get("figure"), "SE": c.get("se"),
             "passed": passed if c.get("decisive", True) else None,
             "if it fails": _IF_FAILS[c["effect"]]}
        )  # fmt: skip
    return pd.DataFrame(out)


def decision_rules(metrics: dict, config: dict) -> pd.DataFrame:
    """The decision rules with their threshold, this run's figure and whether it passed (from
    the decision's own checks when the run recorded them)."""
    checks = (metrics.get("decision") or {}).get("checks")
    if checks:
        return _rules_from_checks(checks)
    rules = config.get("decision", {})
    hw = config.get("hardware", {})
    oos, bt, cv = metrics.get("oos", {}), metrics.get("backtest", {}), metrics.get("cv", {})
    peak = metrics.get("resources", {}).get("peak_memory_gb")
    rows = [
        ("OOS accuracy", ">", rules.get("min_accuracy"), oos.get("accuracy"), "advance"),
        ("Sharpe (daily, annualized)", ">", rules.get("min_sharpe"), bt.get("sharpe"), "advance"),
        ("train - validation accuracy gap", "<=", rules.get("max_train_val_gap"),
         cv.get("train_val_gap"), "stop (overfitting)"),
        ("peak memory (GB)", "<=", hw.get("memory_limit_gb"), peak, "stop (memory)"),
    ]  # fmt: skip
    over = metrics.get("overfitting") or {}
    if "max_pbo" in rules or "pbo" in over:
        rows.append(("probability of backtest overfitting", "<=", rules.get("max_pbo"),
                     over.get("pbo"), "stop (overfitting)"))  # fmt: skip
    if "min_dsr" in rules or "dsr" in over:
        rows.append(("deflated Sharpe (probability)", ">=", rules.get("min_dsr"), over.get("dsr"),
                     "advance"))  # fmt: skip
    out = []
    for name, op, threshold, value, on_fail in rows:
        ok = None
        if _finite(threshold) and _finite(value):
            ok = {">": value > threshold, ">=": value >= threshold, "<=": value <= threshold}[op]
        out.append(
            {"rule": name, "needs": f"{op} {threshold}", "value": value, "passed": ok,
             "if it fails": on_fail}
        )  # fmt: skip
    return pd.DataFrame(out)


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# -------------------------------------------------------------------------------------- figures


def fig_cv_folds(cv: dict) -> go.Figure:
    """Train vs validation accuracy, AUC and log loss per purged fold (dotted: a coin flip)."""
    folds = cv["folds"]
    x = [f["fold"] for f in folds]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("accuracy", "AUC", "log loss"))
    for col, m in enumerate(("accuracy", "auc", "log_loss"), start=1):
        for split, color in (("train", GREY), ("val", BLUE)):
            fig.add_scatter(
                x=x,
                y=[f[f"{split}_{m}"] for f in folds],
                mode="lines+markers",
                name="train" if split == "train" else "validation",
                line={"color": color},
                marker={"size": 9},
                legendgroup=split,
                showlegend=col == 1,
                row=1,
                col=col,
            )
        ref = 0.5 if m in ("accuracy", "auc") else math.log(2)
        fig.add_hline(y=ref, line_dash="dot", line_color=GREY, row=1, col=col)
    fig.update_xaxes(title="fold", dtick=1)
    return _layout(fig, "Cross-validation per fold (dotted: coin flip)", 340)


def fig_search_objective(trials: pd.DataFrame, metric: str = "val_log_loss") -> go.Figure:
    """Objective of each trial in creation order with the best so far."""
    fig = go.Figure()
    fig.add_scatter(
        x=trials["trial"],
        y=trials[metric],
        mode="markers",
        name="trial",
        marker={"color": BLUE, "size": 8},
        customdata=trials.get("trial_id", trials["trial"]),
        hovertemplate="trial %{customdata}<br>" + metric + " %{y:.5f}<extra></extra>",
    )
    fig.add_scatter(
        x=trials["trial"],
        y=trials[metric].cummin(),
        mode="lines",
        name="best so far",
        line={"color": GREEN, "shape": "hv"},
    )
    fig.update_xaxes(title="trial (creation order)")
    fig.update_yaxes(title=f"{metric} (mean over folds, lower is better)")
    return _layout(fig, "Tune search: objective over trials", 340)


def fig_search_parallel(trials: pd.DataFrame, metric: str = "val_log_loss") -> go.Figure:
    """Parallel coordinates of the searched parameters, coloured by the objective."""
    dims = []
    for p in [*SEARCH_PARAMS, metric, "val_accuracy"]:
        if p not in trials:
            continue
        v = trials[p].astype(float)
        log_scale = p in ("learning_rate", "min_child_weight", "reg_alpha", "reg_lambda")
        dims.append(
            {
                "label": f"log10 {p}" if log_scale else p,
                "values": np.log10(v) if log_scale else v,
            }
        )
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": trials[metric],
                "colorscale": "Viridis",
                "reversescale": True,  # lowest (best) value drawn yellow, highest dark purple
                "showscale": True,
                "colorbar": {"title": {"text": f"{metric}<br>(yellow = lowest = best)"}},
            },
            dimensions=dims,
        )
    )
    fig = _layout(fig, f"Searched parameters (yellow = lowest {metric} = best trial)", 440)
    fig.update_layout(margin={"t": 110, "l": 80})
    return fig


def param_importance(trials: pd.DataFrame, metric: str = "val_log_loss") -> pd.Series:
    """|Spearman rank correlation| of each parameter with the objective (association only)."""
    out = {}
    for p in SEARCH_PARAMS:
        if p in trials and trials[p].nunique() > 1:
            out[p] = abs(trials[p].rank().corr(trials[metric].rank()))
    return pd.Series(out, dtype=float).fillna(0.0).sort_values()


def fig_param_importance(imp: pd.Series) -> go.Figure:
    fig = go.Figure(go.Bar(x=imp.values, y=imp.index, orientation="h", marker_color=BLUE))
    fig.update_xaxes(title="|rank correlation| with the objective", range=[0, 1])
    return _layout(fig, "Parameter importance (association over trials, not causal)", 320)


def fig_feature_importance(imp: pd.DataFrame, top: int = 30) -> go.Figure:
    """Average gain per split of the final model's features (top `top`)."""
    d = imp.head(top).iloc[::-1]
    fig = go.Figure(
        go.Bar(
            x=d["gain"],
            y=d["feature"],
            orientation="h",
            marker_color=BLUE,
            customdata=np.stack([d["total_gain"], d["weight"]], axis=1),
            hovertemplate="%{y}<br>gain %{x:.4g}<br>total gain %{customdata[0]:.4g}"
            "<br>splits %{customdata[1]:.0f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="gain (average loss reduction per split)")
    return _layout(fig, "Feature importance of the final model (gain)", max(320, 18 * len(d) + 90))


def fig_calibration(pred: pd.DataFrame, table: pd.DataFrame, backtest_cfg: dict) -> go.Figure:
    """Reliability curve of OOS P(up) by quantile bin, and the distribution of P(up)."""
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        subplot_titles=("reliability (quantile bins)", "distribution of P(up)"),
    )
    lo = float(min(table["predicted"].min(), table["observed"].min()))
    hi = float(max(table["predicted"].max(), table["observed"].max()))
    pad = (hi - lo) * 0.1 + 1e-3
    fig.add_scatter(
        x=[lo - pad, hi + pad],
        y=[lo - pad, hi + pad],
        mode="lines",
        name="perfectly calibrated",
        line={"dash": "dot", "color": GREY},
        row=1,
        col=1,
    )
    fig.add_scatter(
        x=table["predicted"],
        y=table["observed"],
        mode="lines+markers",
        name="model",
        marker={"size": 8, "color": BLUE},
        customdata=table["n"],
        hovertemplate="predicted %{x:.4f}<br>observed %{y:.4f}<br>%{customdata} bars"
        "<extra></extra>",
        row=1,
        col=1,
    )
    fig.update_xaxes(title="mean predicted P(up)", row=1, col=1)
    fig.update_yaxes(title="observed share of up moves", row=1, col=1)
    counts, edges = binned(pred["p"].to_numpy(), 60)
    fig.add_bar(
        x=(edges[:-1] + edges[1:]) / 2,
        y=counts,
        width=np.diff(edges),
        name="P(up)",
        marker_color=BLUE,
        showlegend=False,
        row=1,
        col=2,
    )
    for key, color in (("long_threshold", GREEN), ("short_threshold", RED)):
        if _finite(backtest_cfg.get(key)):
            fig.add_vline(x=backtest_cfg[key], line_dash="dash", line_color=color, row=1, col=2)
    fig.update_xaxes(title="P(up) (dashed: long / short thresholds)", row=1, col=2)
    return _layout(fig, "Calibration of out-of-sample probabilities", 380)


def fig_equity(equity: pd.Series, capital: float, benchmark: pd.Series | None = None) -> go.Figure:
    """Portfolio equity against equal-weight buy-and-hold of the same tickers, the drawdown
    below it, and the excess return (strategy - benchmark, as a share of capital) at the bottom."""
    dd = drawdown(equity, capital)
    has_bench = benchmark is not None and len(benchmark) > 0
    rows = 3 if has_bench else 2
    heights = [0.55, 0.22, 0.23] if has_bench else [0.68, 0.32]
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, row_heights=heights)
    fig.add_scatter(x=equity.index, y=equity.values, name="equity", line={"color": BLUE})
    if has_bench:
        b = benchmark.reindex(equity.index).ffill().fillna(capital)
        fig.add_scatter(
            x=b.index, y=b.values, name="buy-and-hold (equal weight)",
            line={"color": GREY, "dash": "dash"},
        )  # fmt: skip
        excess = (equity - b) / capital
        fig.add_scatter(
            x=excess.index, y=excess.values, name="excess return", fill="tozeroy",
            line={"color": GREEN}, row=3, col=1,
        )  # fmt: skip
        fig.update_yaxes(title="excess", tickformat=".1%", row=3, col=1)
    fig.add_hline(y=capital, line_dash="dot", line_color=GREY, row=1, col=1)
    fig.add_scatter(
        x=dd.index,
        y=dd.values,
        name="drawdown",
        fill="tozeroy",
        line={"color": RED},
        row=2,
        col=1,
    )
    fig.update_yaxes(title="equity ($)", row=1, col=1)
    fig.update_yaxes(title="drawdown", tickformat=".1%", row=2, col=1)
    title = "Portfolio equity (daily close) and drawdown"
    if has_bench:
        title = "Portfolio equity vs buy-and-hold (daily close), drawdown and excess return"
    return _layout(fig, title, 560 if has_bench else 460)


def fig_rolling_sharpe(
    equity: pd.Series, capital: float, benchmark: pd.Series | None, window: int
) -> go.Figure:
    """Annualized Sharpe of the last `window` sessions, strategy and buy-and-hold."""
    fig = go.Figure()
    rs = tearsheet.rolling_sharpe(equity, capital, window)
    fig.add_scatter(x=rs.index, y=rs.values, name=f"strategy ({window} sessions)",
                    line={"color": BLUE})  # fmt: skip
    if benchmark is not None and len(benchmark):
        rb = tearsheet.rolling_sharpe(benchmark.reindex(equity.index).ffill(), capital, window)
        fig.add_scatter(x=rb.index, y=rb.values, name="buy-and-hold",
                        line={"color": GREY, "dash": "dash"})  # fmt: skip
    fig.add_hline(y=0, line_color=GREY, line_dash="dot")
    fig.update_yaxes(title="Sharpe (annualized)")
    return _layout(fig, f"Rolling Sharpe ({window} sessions, daily returns x sqrt(252))", 340)


def fig_turnover(turnover: pd.Series) -> go.Figure:
    """Traded value per session as a multiple of the equity it trades."""
    fig = go.Figure(
        go.Bar(x=turnover.index, y=turnover.values, name="turnover", marker_color=ORANGE)
    )
    mean = float(turnover.mean()) if len(turnover) else 0.0
    fig.add_hline(y=mean, line_dash="dot", line_color=GREY)
    fig.update_yaxes(title="traded value / equity")
    return _layout(fig, f"Turnover per session (mean {mean:.2f}x equity, dotted)", 300)


def fig_prices(prices: dict[str, pd.DataFrame], trades: pd.DataFrame) -> go.Figure:
    """Each ticker's close over the chosen window with its entries (triangles: up = long, down
    = short) and exits (x); a menu switches ticker. Times are New York local."""
    from vpt_ray.backtest.engine import SESSION_TZ

    def local(ts: pd.Series) -> pd.Series:
        return pd.to_datetime(ts).dt.tz_convert(SESSION_TZ).dt.tz_localize(None)

    fig, groups = go.Figure(), []
    for i, (t, bars) in enumerate(prices.items()):
        first = len(fig.data)
        x = local(bars["timestamp"])
        fig.add_scatter(x=x, y=bars["close"], name=f"{t} close", line={"color": GREY},
                        visible=i == 0)  # fmt: skip
        if len(bars) and "ticker" in trades:
            lo, hi = bars["timestamp"].min(), bars["timestamp"].max()
            tt = trades[trades["ticker"] == t]
            ent = tt[(tt["entry_time"] >= lo) & (tt["entry_time"] <= hi)]
            ext = tt[(tt["exit_time"] >= lo) & (tt["exit_time"] <= hi)]
            markers = ((1, "long entry", "triangle-up", GREEN),
                       (-1, "short entry", "triangle-down", RED))  # fmt: skip
            for side, name, symbol, color in markers:
                e = ent[ent["side"] == side]
                fig.add_scatter(
                    x=local(e["entry_time"]), y=e["entry_price"], mode="markers",
                    name=f"{t} {name} ({len(e)})", visible=i == 0,
                    marker={"symbol": symbol, "size": 9, "color": color},
                )  # fmt: skip
            fig.add_scatter(
                x=local(ext["exit_time"]), y=ext["exit_price"], mode="markers",
                name=f"{t} exit ({len(ext)})", visible=i == 0,
                marker={"symbol": "x", "size": 7, "color": "#1f2328"},
            )  # fmt: skip
        groups.append((t, first, len(fig.data)))
    n = len(fig.data)
    buttons = [
        {"label": t, "method": "update",
         "args": [{"visible": [a <= k < b for k in range(n)]}]}
        for t, a, b in groups
    ]  # fmt: skip
    fig.update_layout(
        updatemenus=[
            {
                "buttons": buttons,
                "x": 0.42,
                "xanchor": "left",
                "y": 1.18,
                "yanchor": "top",
                "direction": "down",
                "showactive": True,
            }
        ]  # fmt: skip
    )
    fig.update_xaxes(rangebreaks=[{"bounds": ["sat", "mon"]}, {"bounds": [16, 9.5],
                                                                "pattern": "hour"}])  # fmt: skip
    fig.update_yaxes(title="price ($)")
    return _layout(fig, "Prices and trades (choose a ticker; New York time)", 420)


def fig_per_ticker(per_ticker: dict) -> go.Figure:
    """Total return and Sharpe of each ticker's sleeve."""
    tickers = sorted(per_ticker, key=lambda t: per_ticker[t].get("total_return") or 0.0)
    ret = [per_ticker[t].get("total_return") for t in tickers]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("total return", "Sharpe"))
    fig.add_bar(
        x=ret,
        y=tickers,
        orientation="h",
        name="total return",
        marker_color=[GREEN if (r or 0) >= 0 else RED for r in ret],
        row=1,
        col=1,
    )
    fig.add_bar(
        x=[per_ticker[t].get("sharpe") for t in tickers],
        y=tickers,
        orientation="h",
        name="Sharpe",
        marker_color=GREY,
        row=1,
        col=2,
    )
    fig.update_xaxes(tickformat=".2%", row=1, col=1)
    fig.update_layout(showlegend=False)
    return _layout(fig, "Per-ticker returns", max(300, 22 * len(tickers) + 120))


def binned(values: np.ndarray, bins: int, clip: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Histogram counts and edges (pre-binned so the page carries counts, not every value);
    `clip` drops that share of extreme values at each end from the range."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = (
        (np.quantile(v, [clip, 1 - clip]) if clip else (v.min(), v.max())) if len(v) else (0, 1)
    )
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))


def fig_trades(trades: pd.DataFrame, bins: int = 50) -> go.Figure:
    """Trade return distribution by side (shared bins; the 0.5% extremes fold into the end
    bins), and how trades exited."""
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.65, 0.35],
        subplot_titles=("net return per trade (bps)", "exit reason"),
    )
    bps = trades["return"].to_numpy(dtype=float) * 1e4
    _, edges = binned(bps, bins, clip=0.005)
    for side, name, color in ((1, "long", GREEN), (-1, "short", RED)):
        r = np.clip(bps[trades["side"].to_numpy() == side], edges[0], edges[-1])
        if len(r):
            counts, _ = np.histogram(r, bins=edges)
            fig.add_bar(
                x=(edges[:-1] + edges[1:]) / 2,
                y=counts,
                width=np.diff(edges),
                name=f"{name} ({len(r)})",
                marker_color=color,
                opacity=0.65,
                row=1,
                col=1,
            )
    fig.add_vline(x=0, line_color=GREY, row=1, col=1)
    counts = trades["exit_reason"].astype(str).value_counts()
    fig.add_bar(x=counts.index, y=counts.values, marker_color=GREY, showlegend=False, row=1, col=2)
    fig.update_layout(barmode="overlay")
    return _layout(fig, f"Trade distribution ({len(trades)} trades)", 360)


def fig_monthly(table: pd.DataFrame) -> go.Figure:
    """Monthly portfolio returns, year by month."""
    months = [dt.date(2000, m, 1).strftime("%b") for m in table.columns]
    z = table.to_numpy(dtype=float)
    text = [["" if not math.isfinite(v) else f"{v:.2%}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=months,
            y=[str(y) for y in table.index],
            text=text,
            texttemplate="%{text}",
            colorscale="RdYlGn",
            zmid=0,
            hoverongaps=False,
            colorbar={"tickformat": ".1%"},
        )
    )
    fig.update_yaxes(type="category", autorange="reversed")
    return _layout(fig, "Monthly returns", 170 + 45 * len(table))


def fig_resources(resources: dict, hardware: dict) -> go.Figure:
    """Memory of the driver and its Ray processes over the run, warn/limit lines, stage bands.

    The y axis is logarithmic so that a run using 1 GB and a 32 GB limit are both readable.
    """
    s = np.asarray(resources.get("memory_samples") or [], dtype=float)
    if s.ndim != 2 or s.shape[1] < 2 or not len(s):
        raise ValueError("resources.memory_samples is empty")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=s[:, 0], y=s[:, 1], name="memory (GB, PSS)", line={"color": BLUE})
    if s.shape[1] >= 3:  # optional third column: CPU percent of the process tree
        fig.add_scatter(
            x=s[:, 0], y=s[:, 2], name="CPU (%)", line={"color": ORANGE}, secondary_y=True
        )
        fig.update_yaxes(title="CPU (%)", rangemode="tozero", secondary_y=True)
    peak = float(s[:, 1].max())
    tops = [peak]
    for key, label, color in (("memory_warn_gb", "warn", ORANGE), ("memory_limit_gb", "stop", RED)):
        v = hardware.get(key)
        if _finite(v) and v > 0:
            tops.append(float(v))
            fig.add_hline(y=v, line_dash="dash", line_color=color)
            # hline annotations are misplaced on log axes: place the label in log units
            fig.add_annotation(
                x=1,
                xref="paper",
                xanchor="right",
                y=math.log10(v),
                yref="y",
                yanchor="top" if label == "warn" else "bottom",
                text=f"{label} {v:g} GB",
                showarrow=False,
                font={"color": color, "size": 11},
            )
    end = float(s[-1, 0])
    spans = stage_spans(resources.get("stages", {}), end)
    if spans and spans[0][1] > 0:
        spans.insert(0, ("start-up", 0.0, spans[0][1]))
    for i, (name, a, b) in enumerate(spans):
        wide = (b - a) >= 0.04 * max(end, 1e-9)
        fig.add_vrect(
            x0=a,
            x1=b,
            fillcolor="#f6f8fa" if name == "start-up" else STAGE_COLORS[i % len(STAGE_COLORS)],
            opacity=0.7,
            layer="below",
            line_width=0,
            annotation_text=name if wide else "",
            annotation_position="top left",
            annotation_font_size=11,
        )
    low, high = max(1e-3, float(s[:, 1].min()) * 0.7), max(tops) * 1.6
    ticks = [t for t in 2.0 ** np.arange(-10, 14) if low <= t <= high]
    fig.update_yaxes(
        title="GB (log scale)",
        type="log",
        range=[math.log10(low), math.log10(high)],
        tickvals=ticks,
        ticktext=[f"{t:g}" for t in ticks],
        secondary_y=False,
    )
    fig.update_xaxes(title="seconds since the sampler started (bands: stages)")
    return _layout(fig, f"Memory over the run (peak {peak:.2f} GB)", 400)


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template=TEMPLATE,
        height=height,
        margin={"l": 60, "r": 30, "t": 90, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.1, "xanchor": "right", "x": 1},
    )
    return fig


def rolling_window(sessions: int) -> int:
    """63 sessions (a quarter), shorter for a short backtest so the curve has some length."""
    return max(5, min(63, sessions // 3))


def build_figures(run: RunFiles) -> dict[str, go.Figure]:
    """Every chart the run's files allow, by key; missing inputs are noted in `run.notes`."""
    m = run.metrics
    builders: dict[str, Callable[[], go.Figure | None]] = {
        "cv_folds": lambda: fig_cv_folds(m["cv"]) if m.get("cv", {}).get("folds") else None,
        "search_objective": lambda: (
            fig_search_objective(run.trials) if len(run.trials) else None
        ),
        "search_parallel": lambda: fig_search_parallel(run.trials) if len(run.trials) else None,
        "search_importance": lambda: (
            fig_param_importance(param_importance(run.trials)) if len(run.trials) >= 5 else None
        ),
        "feature_importance": lambda: (
            fig_feature_importance(run.importance) if run.importance is not None else None
        ),
        "calibration": lambda: (
            fig_calibration(
                run.predictions,
                calibration_table(run.predictions),
                run.config.get("backtest", {}),
            )
            if run.predictions is not None and len(run.predictions)
            else None
        ),
        "equity": lambda: (
            fig_equity(run.equity, run.capital, run.benchmark)
            if run.equity is not None and len(run.equity) else None
        ),
        "rolling_sharpe": lambda: (
            fig_rolling_sharpe(run.equity, run.capital, run.benchmark,
                               rolling_window(len(run.equity)))
            if run.equity is not None and len(run.equity) >= 10 else None
        ),
        "turnover": lambda: (
            fig_turnover(tearsheet.daily_turnover(run.trades, run.equity, run.capital))
            if run.equity is not None and len(run.equity) and len(run.trades) else None
        ),
        "prices": lambda: fig_prices(run.prices, run.trades) if run.prices else None,
        "per_ticker": lambda: (
            fig_per_ticker(m["backtest"]["per_ticker"])
            if m.get("backtest", {}).get("per_ticker")
            else None
        ),
        "trades": lambda: fig_trades(run.trades) if len(run.trades) else None,
        "monthly": lambda: (
            fig_monthly(monthly_returns(run.equity, run.capital))
            if run.equity is not None and len(run.equity)
            else None
        ),
        "resources": lambda: (
            fig_resources(m["resources"], run.config.get("hardware", {}))
            if m.get("resources", {}).get("memory_samples")
            else None
        ),
    }  # fmt: skip
    figs = {}
    for key, build in builders.items():
        try:
            fig = build()
        except Exception as exc:  # noqa: BLE001 - one broken chart must not cost the whole page
            log.exception("report chart %s failed", key)
            run.notes[key] = f"chart failed: {type(exc).__name__}: {exc}"
            continue
        if fig is not None:
            figs[key] = fig
    return figs


# ----------------------------------------------------------------------------------------- HTML


def _fmt(v: object, kind: str = "num", digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer) and kind == "num":
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        if kind == "pct":
            return f"{v:.2%}"
        return f"{v:,.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return str(v)


def html_table(
    df: pd.DataFrame, formats: dict[str, Callable[[object], str]] | None = None, cls: str = ""
) -> str:
    """A sortable HTML table (click a header); each cell keeps its raw value for sorting."""
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, rec, strict=True):
            raw = "" if v is None else str(v)
            text = formats.get(col, _fmt)(v)
            num = isinstance(v, int | float | np.number) and not isinstance(v, bool)
            cells.append(
                f'<td data-v="{html.escape(raw)}"{" class=num" if num else ""}>'
                f"{html.escape(text)}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable {cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _figure_html(key: str, fig: go.Figure) -> str:
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{key}",
        config={"displaylogo": False, "responsive": True},
    )


def _kpis(m: dict) -> str:
    cv, oos, bt = m.get("cv", {}), m.get("oos", {}), m.get("backtest", {})
    res = m.get("resources", {})
    cards = [
        ("CV accuracy", _fmt(cv.get("accuracy")), f"AUC {_fmt(cv.get('auc'))}"),
        ("OOS accuracy", _fmt(oos.get("accuracy")), f"AUC {_fmt(oos.get('auc'))}"),
        ("total return", _fmt(bt.get("total_return"), "pct"), f"{_fmt(bt.get('trades'))} trades"),
        ("Sharpe", _fmt(bt.get("sharpe"), digits=2),
         f"max DD {_fmt(bt.get('max_drawdown'), 'pct')}"),
        ("peak memory", f"{_fmt(res.get('peak_memory_gb'), digits=2)} GB",
         f"wall {_fmt(res.get('wall_seconds'), digits=0)} s"),
        ("decision", str(m.get("decision", {}).get("verdict", "n/a")).upper(), "")
        if m.get("kind") != "backtest"
        else ("backtest of", str(m.get("model_run_id")), "no decision of its own"),
    ]  # fmt: skip
    return (
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi" data-kpi="{html.escape(k)}"><div class="k">{html.escape(k)}</div>'
            f'<div class="v">{html.escape(v)}</div><div class="s">{html.escape(s)}</div></div>'
            for k, v, s in cards
        )
        + "</div>"
    )


def _header(run: RunFiles) -> str:
    m, d, w = run.metrics, run.metrics.get("data", {}), run.metrics.get("windows", {})
    status = (run.status or {}).get("status", "unknown")
    if status == "RUNNING":  # the phase writes this page before it marks the run FINISHED
        status = "complete"
    commit = m.get("git_commit") or (run.meta or {}).get("git_commit")
    items = [
        ("run", m.get("run_id")),
        ("phase", m.get("phase")),
        ("status", status),
        ("data", f"{', '.join(d.get('sources_used', [])) or 'n/a'}; "
                 f"{len(d.get('tickers', []))} tickers ({', '.join(d.get('tickers', [])[:12])}"
                 f"{', ...' if len(d.get('tickers', [])) > 12 else ''}), "
                 f"{_fmt(d.get('bars'))} {d.get('bar', '')} bars"),
        ("train window", w.get("train")),
        ("backtest window", w.get("backtest")),
        ("label horizon / embargo", f"{w.get('label_horizon')} / {w.get('embargo_bars')} bars"),
        *([("model run", m.get("model_run_id"))] if m.get("kind") == "backtest" else []),
        ("config hash", m.get("config_fingerprint")),
        ("git commit", commit[:12] if commit else "n/a"),
    ]  # fmt: skip
    dl = "".join(
        f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd></div>" for k, v in items
    )
    banner = ""
    if d.get("synthetic"):
        tick = ", ".join(d.get("synthetic_tickers", []))
        banner = (
            '<div id="synthetic-banner" class="banner">SYNTHETIC DATA: this run used the built-in '
            f"synthetic market ({html.escape(tick)}; signal strength "
            f"{html.escape(str(d.get('signal_strength')))}), not real prices. Its figures measure "
            "the pipeline, not a tradable edge.</div>"
        )
    return f"{banner}<dl class=header>{dl}</dl>{_kpis(m)}"


def _decision(run: RunFiles) -> str:
    if run.is_backtest:
        m = run.metrics
        rules = decision_rules(m, run.config)
        rules = rules[rules["value"].notna()]
        mark = {True: "pass", False: "FAIL", None: "n/a"}
        return (
            f'<div class="verdict" id="verdict">BACKTEST</div><p>Backtest of model run '
            f"<code>{html.escape(str(m.get('model_run_id')))}</code> on "
            f"{html.escape(str(m.get('windows', {}).get('backtest')))}. No decision: the phase "
            "run that trained the model decides; the rules it applies, on this window's "
            "figures:</p>"
            + html_table(rules, {"passed": lambda v: mark[v], "needs": str, "rule": str})
        )
    dec = run.metrics.get("decision", {})
    verdict = str(dec.get("verdict", "n/a"))
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in dec.get("reasons", []))
    rules = decision_rules(run.metrics, run.config)
    mark = {True: "pass", False: "FAIL", None: "n/a"}
    table = html_table(rules, {"passed": lambda v: mark[v], "needs": str, "rule": str})
    prev = dec.get("previous_phase_run")
    prev_txt = (
        f"<p>Compared with the previous phase's latest run <code>{html.escape(prev)}</code> "
        "(a drop in OOS accuracy or Sharpe beyond one SE of the difference sends the verdict "
        "to optimize).</p>"
        if prev
        else "<p>No earlier phase in the tracker to compare with.</p>"
    )
    return (
        f'<div class="verdict v-{html.escape(verdict)}" id="verdict">{html.escape(verdict.upper())}'
        f"</div><ul>{reasons}</ul>{table}{_overfitting(run.metrics.get('overfitting'))}{prev_txt}"
    )


def _overfitting(over: dict | None) -> str:
    """What the search's selection did to the numbers (metrics.json's overfitting section)."""
    if not over:
        return ""
    stab = over.get("stability") or {}
    parts = [
        f"{_fmt(over.get('n_trials'))} trials over {_fmt(over.get('validation_days'))} "
        "validation days",
        f"probability of backtest overfitting (CSCV) {_fmt(over.get('pbo'), digits=3)}",
        f"deflated Sharpe {_fmt(over.get('dsr'), digits=3)} "
        f"(Sharpe {_fmt(over.get('sharpe_annual'), digits=2)} vs "
        f"{_fmt(over.get('dsr_benchmark_sr_annual'), digits=2)} expected from the best of "
        "the trials by luck)",
        f"probabilistic Sharpe {_fmt(over.get('psr'), digits=3)}",
    ]
    if stab:
        parts.append(
            f"chosen configuration's rank per fold {stab.get('ranks')}, top in "
            f"{_fmt(stab.get('top_hit_rate'), 'pct')} of folds"
        )
    notes = [over[k] for k in ("trials_note", "pbo_note", "dsr_note") if over.get(k)]
    return "<h3>Overfitting</h3><p>" + html.escape("; ".join(parts + notes)) + ".</p>"


def _cv_table(cv: dict) -> str:
    df = pd.DataFrame(cv["folds"])
    cols = [c for c in ("fold", "train_samples", "val_samples", "rounds", "train_accuracy",
                        "val_accuracy", "train_auc", "val_auc", "train_log_loss", "val_log_loss")
            if c in df]  # fmt: skip
    mean = (
        f"<p>Mean over {cv.get('folds_count', len(df))} purged walk-forward folds "
        f"({_fmt(cv.get('samples'))} samples): validation accuracy {_fmt(cv.get('accuracy'))}, "
        f"AUC {_fmt(cv.get('auc'))}, log loss {_fmt(cv.get('log_loss'))}; train accuracy "
        f"{_fmt(cv.get('train_accuracy'))} (gap {_fmt(cv.get('train_val_gap'))}).</p>"
    )
    return mean + html_table(df[cols])


def _trials_table(trials: pd.DataFrame) -> str:
    cols = [c for c in ("trial", "trial_id", *TRIAL_METRICS, "rounds", "status", "folds_fitted",
                        "partial_val_log_loss", *SEARCH_PARAMS, "time_total_s")
            if c in trials]  # fmt: skip
    return html_table(trials[cols].sort_values("val_log_loss"), cls="wide")


def _oos_text(run: RunFiles) -> str:
    oos = run.metrics.get("oos", {})
    text = (
        f"<p>{_fmt(oos.get('samples'))} labelled out-of-sample bars: accuracy "
        f"{_fmt(oos.get('accuracy'))}, AUC {_fmt(oos.get('auc'))}, log loss "
        f"{_fmt(oos.get('log_loss'))}, base rate (share of up moves) {_fmt(oos.get('base_rate'))}."
    )
    if run.predictions is not None and len(run.predictions):
        from vpt_ray.model.metrics import classification

        pred = run.predictions
        c = classification(pred["y"].to_numpy(), pred["p"].to_numpy())
        brier = float(np.mean((pred["p"] - pred["y"]) ** 2))
        same = math.isclose(c["accuracy"], oos.get("accuracy") or -1, abs_tol=1e-9)
        text += (
            f" Rescored from the saved model: accuracy {_fmt(c['accuracy'])} "
            f"({'matches' if same else 'DIFFERS FROM'} metrics.json), Brier score {brier:.5f}.</p>"
        )
        text += html_table(per_ticker_oos(pred))
    else:
        text += "</p>"
    return text


def _resources_text(run: RunFiles) -> str:
    res = run.metrics.get("resources", {})
    ray_info = res.get("ray", {})
    stages = pd.DataFrame(
        [{"stage": k, "seconds": v} for k, v in (res.get("stages") or {}).items()]
    )
    hw = run.config.get("hardware", {})
    warn, limit = hw.get("memory_warn_gb", "n/a"), hw.get("memory_limit_gb", "n/a")
    text = (
        f"<p>Peak memory {_fmt(res.get('peak_memory_gb'), digits=2)} GB ("
        + (
            "this job's Ray processes on every node"
            if res.get("measured") == "per node"
            else "driver + every Ray process it started"
        )
        + ", proportional set size) against warn "
        f"{warn} GB and stop {limit} GB; wall "
        f"time {_fmt(res.get('wall_seconds'), digits=1)} s. "
        f"Ray: {html.escape(str(ray_info.get('mode')))}"
        f", {_fmt(ray_info.get('num_cpus'))} CPUs"
    )
    if ray_info.get("object_store_gb") is not None:
        text += f", object store {_fmt(ray_info.get('object_store_gb'), digits=1)} GB"
    if ray_info.get("clamped"):
        text += "; clamped to this machine: " + html.escape("; ".join(ray_info["clamped"]))
    text += ".</p>"
    secs = {"seconds": lambda v: _fmt(v, digits=1)}
    return text + (html_table(stages, secs) if len(stages) else "") + _nodes_table(res)


def _nodes_table(res: dict) -> str:
    """A cluster run's memory node by node: peak, object store, and what ran there."""
    nodes = res.get("nodes") or {}
    if res.get("measured") != "per node" or not nodes:
        return ""
    ran = res.get("placement") or {}
    rows = [
        {
            "node": name + (" (driver)" if n.get("driver") else ""),
            "peak GB": n.get("peak_gb"),
            "object store peak / size GB": f"{_fmt(n.get('object_store_peak_gb'), digits=2)} / "
            f"{_fmt(n.get('object_store_gb'), digits=2)}",
            "ran": "; ".join(
                f"{stage}: {len(where[name])}" for stage, where in ran.items() if name in where
            ),
        }
        for name, n in nodes.items()
    ]
    return (
        f"<p>Memory per node ({len(nodes)} nodes; the run's total peaked at "
        f"{_fmt(res.get('peak_memory_gb'), digits=2)} GB): hardware.memory_limit_gb holds per "
        "node, hardware.job_memory_limit_gb for the total.</p>"
        + html_table(pd.DataFrame(rows), {"peak GB": lambda v: _fmt(v, digits=2)})
    )


def _provenance(run: RunFiles) -> str:
    meta = run.meta or {}
    parts = []
    versions = meta.get("versions")
    if versions:
        parts.append(
            "<h3>Package versions</h3>"
            + html_table(pd.DataFrame(list(versions.items()), columns=["package", "version"]))
        )
    fp = meta.get("data_fingerprint")
    if fp:
        rows = [
            {"ticker": t,
             "sources": ", ".join(sorted({o.get("source", "?") for o in v.get("origins", [])})),
             "synthetic": v.get("synthetic"), "bytes": v.get("bytes"),
             "sha256": str(v.get("sha256", ""))[:16]}
            for t, v in fp.items()
        ]  # fmt: skip
        parts.append("<h3>Data fingerprint</h3>" + html_table(pd.DataFrame(rows)))
    if run.config:
        parts.append(
            "<details><summary>Resolved config (config.yaml)</summary><pre>"
            + html.escape(yaml.safe_dump(run.config, sort_keys=False))
            + "</pre></details>"
        )
    return "".join(parts) or "<p>No provenance files found.</p>"


def _note(run: RunFiles, *keys: str) -> str:
    notes = [run.notes[k] for k in keys if k in run.notes]
    return "".join(f'<p class="note">Not shown: {html.escape(n)}</p>' for n in notes)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;
padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 16px 16px;
margin:14px 0}
.banner{background:#cf222e;color:#fff;font-weight:700;padding:10px 14px;border-radius:6px;
margin:8px 0;letter-spacing:.2px}
dl.header{display:flex;flex-wrap:wrap;gap:4px 22px;margin:8px 0}dl.header div{min-width:120px}
dt{font-size:11px;color:#656d76;text-transform:uppercase}dd{margin:0;font-weight:600}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:12px 0}
.kpi{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px}
.kpi .k{font-size:11px;color:#656d76;text-transform:uppercase}
.kpi .v{font-size:22px;font-weight:700}
.kpi .s{font-size:12px;color:#656d76}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}th,td{padding:3px 9px;
border-bottom:1px solid #eaeef2;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f6f8fa;cursor:pointer;user-select:none;position:sticky;top:0}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
.tablewrap{max-height:420px;overflow:auto}
.verdict{display:inline-block;font-size:20px;font-weight:800;padding:4px 14px;border-radius:6px;
color:#fff;background:#6e7781}.v-advance{background:#1a7f37}.v-stop{background:#cf222e}
.v-optimize{background:#bc4c00}.v-hold{background:#9a6700}
.note{color:#9a6700}pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
nav a{margin-right:12px}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, i) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var asc = th.dataset.dir !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


NAV = {
    "decision": "Decision",
    "learn": "Cross-validation",
    "search": "Search",
    "oos": "Calibration",
    "where": "Features",
    "backtest": "Backtest",
    "cost": "Resources",
    "provenance": "Provenance",
}


def render_html(run: RunFiles, figs: dict[str, go.Figure]) -> str:
    """The whole page: header, decision, then one section per question."""
    m = run.metrics

    def fig(key: str) -> str:
        return _figure_html(key, figs[key]) if key in figs else ""

    bt = m.get("backtest", {})
    sections = [
        ("decision", "Should I scale? The decision", _decision(run)),
        (
            "learn",
            "Did it learn? Cross-validation",
            _model_run_text(run, "cross-validation")
            + (_cv_table(m["cv"]) if m.get("cv", {}).get("folds") else "")
            + fig("cv_folds"),
        ),
        (
            "search",
            f"Tune search ({len(run.trials)} trials)" if not run.is_backtest else "Tune search",
            fig("search_objective")
            + fig("search_parallel")
            + fig("search_importance")
            + (_wrap(_trials_table(run.trials)) if len(run.trials) else "")
            + _model_run_text(run, "search")
            + _note(run, "search_objective", "search_parallel", "search_importance"),
        ),
        (
            "oos",
            "Out of sample: calibration of the probabilities",
            _oos_text(run) + fig("calibration") + _note(run, "calibration"),
        ),
        (
            "where",
            "Where does the edge come from? Features",
            fig("feature_importance") + _note(run, "importance", "feature_importance"),
        ),
        (
            "backtest",
            "Backtest",
            f"<p>{_fmt(bt.get('trades'))} trades; total return "
            f"{_fmt(bt.get('total_return'), 'pct')}, "
            f"CAGR {_fmt(bt.get('cagr'), 'pct')}, Sharpe {_fmt(bt.get('sharpe'), digits=2)}, "
            f"Sortino {_fmt(bt.get('sortino'), digits=2)}, max drawdown "
            f"{_fmt(bt.get('max_drawdown'), 'pct')}, win rate {_fmt(bt.get('win_rate'), 'pct')}, "
            f"profit factor {_fmt(bt.get('profit_factor'), digits=2)}, exposure "
            f"{_fmt(bt.get('exposure'), 'pct')}, turnover {_fmt(bt.get('turnover'), digits=1)}x "
            f"capital, commissions ${_fmt(bt.get('commissions'), digits=2)}.</p>"
            + _portfolio_text(bt)
            + _benchmark_text(m.get("benchmark"))
            + fig("equity")
            + fig("rolling_sharpe")
            + _drawdowns_table(run)
            + fig("monthly")
            + fig("turnover")
            + fig("per_ticker")
            + (_per_ticker_table(bt["per_ticker"]) if bt.get("per_ticker") else "")
            + fig("trades")
            + _price_window_text(run)
            + fig("prices")
            + _note(run, "equity", "rolling_sharpe", "monthly", "turnover", "per_ticker",
                    "trades", "prices"),
        ),
        (
            "cost",
            "What did it cost? Resources",
            _resources_text(run) + fig("resources") + _note(run, "resources"),
        ),
        ("provenance", "Provenance", _provenance(run)),
    ]  # fmt: skip
    nav = "".join(f'<a href="#{k}">{html.escape(NAV.get(k, k))}</a>' for k, _, _ in sections)
    body = "".join(
        f'<section id="{k}"><h2>{html.escape(t)}</h2>{content}</section>'
        for k, t, content in sections
    )
    synthetic = " [SYNTHETIC]" if m.get("data", {}).get("synthetic") else ""
    title = f"vpt-ray run {m.get('run_id')} (phase {m.get('phase')}){synthetic}"
    if run.is_backtest:
        title = (
            f"vpt-ray backtest {m.get('run_id')} (backtest of {m.get('model_run_id')}){synthetic}"
        )
    generated = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f'<body data-figures="{len(figs)}"><main><h1>{html.escape(title)}</h1>'
        f"<nav>{nav}</nav>{_header(run)}{body}"
        f'<p class="note">Written by vpt-ray on {generated} from the files in '
        f"<code>{html.escape(str(run.report_dir))}</code>.</p></main>"
        f"<script>{SORT_JS}</script></body></html>"
    )


def _portfolio_text(bt: dict) -> str:
    """How the book was run and who made its PnL: the portfolio's definitions (one pool, Sharpe
    on daily returns, intraday drawdown), the concentration and the costs (summary.md's lines)."""
    from vpt_ray.report.run_report import _portfolio_lines

    head = (
        "<p>One pool of capital, every ticker on one clock; Sharpe from daily returns x "
        f"sqrt(252); max drawdown intraday on the bar closes (close to close: "
        f"{_fmt(bt.get('max_drawdown_daily'), 'pct')}). Per-ticker figures are each ticker's "
        "contribution to the portfolio.</p>"
    )
    lines = [html.escape(x.removeprefix("- ").replace("**", "")) for x in _portfolio_lines(bt)]
    return head + ("<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>" if lines else "")


def _model_run_text(run: RunFiles, what: str) -> str:
    """In a standalone backtest's report: where the model's own figures are (its run's report)."""
    if not run.is_backtest:
        return ""
    model_run = str(run.metrics.get("model_run_id"))
    link = f"../{html.escape(model_run)}/report.html"
    text = (
        f'<p class="model-run">The {what} belongs to the model run <a href="{link}">'
        f"<code>{html.escape(model_run)}</code></a>; this backtest re-tests its final model."
    )
    cv = (run.metrics.get("model") or {}).get("cv") or {}
    if what == "cross-validation" and cv:
        text += (
            f" Its CV: validation accuracy {_fmt(cv.get('val_accuracy'))}, AUC "
            f"{_fmt(cv.get('val_auc'))}, log loss {_fmt(cv.get('val_log_loss'))}, train accuracy "
            f"{_fmt(cv.get('train_accuracy'))}."
        )
    return text + "</p>"


def _benchmark_text(b: dict | None) -> str:
    if not b or b.get("total_return") is None:
        return ""
    return (
        f'<p id="benchmark">Benchmark: {html.escape(str(b.get("method")))}: total return '
        f"{_fmt(b.get('total_return'), 'pct')}, Sharpe {_fmt(b.get('sharpe'), digits=2)}, max "
        f"drawdown {_fmt(b.get('max_drawdown'), 'pct')}. Excess return of the strategy "
        f"<b>{_fmt(b.get('excess_return'), 'pct')}</b>.</p>"
    )


def _drawdowns_table(run: RunFiles) -> str:
    if run.equity is None or not len(run.equity):
        return ""
    dd = tearsheet.worst_drawdowns(run.equity, run.capital, 5)
    if dd.empty:
        return "<h3>Worst drawdowns</h3><p>The equity never fell below a previous high.</p>"
    day = lambda v: "start" if pd.isna(v) else str(pd.Timestamp(v).date())  # noqa: E731
    formats = {"depth": lambda v: _fmt(v, "pct"), "peak": day, "trough": day,
               "recovery": lambda v: "not recovered" if pd.isna(v) else day(v),
               "recovery_sessions": lambda v: "" if pd.isna(v) else f"{int(v)}"}  # fmt: skip
    return (
        '<h3>Five worst drawdowns</h3><div id="worst-drawdowns">'
        + html_table(dd, formats)
        + "</div><p class=note>peak: last session at the high before the fall (start: the "
        "starting capital); sessions: peak to trough; recovery: first session back at the "
        "peak's level.</p>"
    )


def _price_window_text(run: RunFiles) -> str:
    if run.price_window is None or not run.prices:
        return ""
    a, b = run.price_window
    run_id = html.escape(str(run.metrics.get("run_id")))
    return (
        f"<h3>Prices and trades, {a} .. {b}</h3><p>The five sessions around the portfolio's "
        f"worst day by default; another window: <code>vpt report {run_id} --window "
        "START..END</code>.</p>"
    )


def _wrap(table: str) -> str:
    return f'<div class="tablewrap">{table}</div>'


def _per_ticker_table(per_ticker: dict) -> str:
    cols = ["trades", "pnl", "pnl_share", "total_return", "sharpe", "max_drawdown", "win_rate",
            "profit_factor", "exposure"]  # fmt: skip
    df = pd.DataFrame.from_dict(per_ticker, orient="index").reindex(columns=cols)
    df = df.rename_axis("ticker").reset_index()
    pct = {c: (lambda v: _fmt(v, "pct")) for c in ("pnl_share", "total_return", "max_drawdown",
                                                    "win_rate", "exposure")}  # fmt: skip
    return html_table(
        df, {**pct, "sharpe": lambda v: _fmt(v, digits=2), "pnl": lambda v: _fmt(v, digits=0)}
    )


def parse_window(text: str) -> tuple[dt.date, dt.date]:
    """`START..END` (ISO dates) -> (start, end), for `--window`."""
    try:
        a, b = (dt.date.fromisoformat(p.strip()) for p in text.split(".."))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--window {text!r}: expected START..END as YYYY-MM-DD..YYYY-MM-DD"
        ) from None
    if b < a:
        raise argparse.ArgumentTypeError(f"--window {text!r}: END is before START")
    return a, b


def write_html_report(
    report_dir: Path,
    model_dir: Path | None = None,
    price_window: tuple[dt.date, dt.date] | None = None,
) -> Path:
    """Build `report_dir/report.html` from the run's files on disk; returns its path."""
    run = load_run(Path(report_dir), model_dir, price_window)
    figs = build_figures(run)
    path = Path(report_dir) / REPORT_FILE
    write_text_atomic(path, render_html(run, figs))
    log.info("HTML report: %s (%d charts)", path, len(figs))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vpt report",
        description="Build (or rebuild) a run's self-contained HTML report, "
        "artifacts/reports/RUN_ID/report.html, from the files the run left on disk.",
    )
    parser.add_argument("run", metavar="RUN_ID", help="run id, or the path of a report directory")
    parser.add_argument(
        "--artifacts",
        default="artifacts",
        metavar="DIR",
        help="artifacts root (default: artifacts)",
    )
    parser.add_argument(
        "--model-dir", default=None, metavar="DIR", help="model directory (default: the run's)"
    )
    parser.add_argument(
        "--window",
        type=parse_window,
        default=None,
        metavar="START..END",
        help="sessions of the price panel, e.g. 2024-07-08..2024-07-12 (default: the five "
        "sessions around the worst day)",
    )
    args = parser.parse_args(argv)
    report_dir = Path(args.run)
    if not (report_dir / "metrics.json").exists():
        report_dir = Path(args.artifacts) / "reports" / args.run
    try:
        path = write_html_report(
            report_dir, Path(args.model_dir) if args.model_dir else None, args.window
        )
    except (FileNotFoundError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
