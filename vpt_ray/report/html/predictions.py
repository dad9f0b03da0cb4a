"""The out-of-sample sections: the calibration of the model's probabilities (overall and per
ticker) and where the edge comes from (feature importance).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vpt_ray.report.html.common import (
    BLUE,
    GREEN,
    GREY,
    RED,
    apply_layout,
    binned,
    finite,
    html_table,
    show,
)
from vpt_ray.report.html.inputs import RunFiles


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
    return apply_layout(
        fig, "Feature importance of the final model (gain)", max(320, 18 * len(d) + 90)
    )


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
        if finite(backtest_cfg.get(key)):
            fig.add_vline(x=backtest_cfg[key], line_dash="dash", line_color=color, row=1, col=2)
    fig.update_xaxes(title="P(up) (dashed: long / short thresholds)", row=1, col=2)
    return apply_layout(fig, "Calibration of out-of-sample probabilities", 380)


def oos_text(run: RunFiles) -> str:
    oos = run.metrics.get("oos", {})
    text = (
        f"<p>{show(oos.get('samples'))} labelled out-of-sample bars: accuracy "
        f"{show(oos.get('accuracy'))}, AUC {show(oos.get('auc'))}, log loss "
        f"{show(oos.get('log_loss'))}, base rate (share of up moves) {show(oos.get('base_rate'))}."
    )
    if run.predictions is not None and len(run.predictions):
        from vpt_ray.model.metrics import classification

        pred = run.predictions
        c = classification(pred["y"].to_numpy(), pred["p"].to_numpy())
        brier = float(np.mean((pred["p"] - pred["y"]) ** 2))
        same = math.isclose(c["accuracy"], oos.get("accuracy") or -1, abs_tol=1e-9)
        text += (
            f" Rescored from the saved model: accuracy {show(c['accuracy'])} "
            f"({'matches' if same else 'DIFFERS FROM'} metrics.json), Brier score {brier:.5f}.</p>"
        )
        text += html_table(per_ticker_oos(pred))
    else:
        text += "</p>"
    return text
