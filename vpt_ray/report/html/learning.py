"""The "Did it learn?" and search sections: the purged CV folds, the Tune trials' objective,
their parallel coordinates and which hyperparameters mattered.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vpt_ray.core.config_sections import SEARCH_PARAMS
from vpt_ray.report.html.common import BLUE, GREEN, GREY, apply_layout, html_table, show
from vpt_ray.report.html.inputs import TRIAL_METRICS


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
    return apply_layout(fig, "Cross-validation per fold (dotted: coin flip)", 340)


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
    return apply_layout(fig, "Tune search: objective over trials", 340)


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
    fig = apply_layout(fig, f"Searched parameters (yellow = lowest {metric} = best trial)", 440)
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
    return apply_layout(fig, "Parameter importance (association over trials, not causal)", 320)


def cv_table(cv: dict) -> str:
    df = pd.DataFrame(cv["folds"])
    cols = [c for c in ("fold", "train_samples", "val_samples", "rounds", "train_accuracy",
                        "val_accuracy", "train_auc", "val_auc", "train_log_loss", "val_log_loss")
            if c in df]  # fmt: skip
    mean = (
        f"<p>Mean over {cv.get('folds_count', len(df))} purged walk-forward folds "
        f"({show(cv.get('samples'))} samples): validation accuracy {show(cv.get('accuracy'))}, "
        f"AUC {show(cv.get('auc'))}, log loss {show(cv.get('log_loss'))}; train accuracy "
        f"{show(cv.get('train_accuracy'))} (gap {show(cv.get('train_val_gap'))}).</p>"
    )
    return mean + html_table(df[cols])


def trials_table(trials: pd.DataFrame) -> str:
    """Every trial, best first, narrow enough for the page (no sideways scroll at 1,400 px): 4
    significant digits, headers that wrap, the trial's number (its Tune id is in the objective
    chart's hover) and the status / folds / partial-loss columns only when a trial differs there
    (a pruned or failed one)."""
    cols = [c for c in ("trial", *TRIAL_METRICS, "rounds", "status", "folds_fitted",
                        "partial_val_log_loss", *SEARCH_PARAMS, "time_total_s")
            if c in trials]  # fmt: skip
    informative = {
        "status": lambda s: s.astype(str).nunique() > 1 or (s.astype(str) != "completed").any(),
        "folds_fitted": lambda s: s.nunique() > 1,
        "partial_val_log_loss": lambda s: (
            not np.allclose(s.astype(float), trials["val_log_loss"].astype(float), equal_nan=True)
        ),
    }
    cols = [c for c in cols if c not in informative or informative[c](trials[c])]
    table = trials[cols].sort_values("val_log_loss")
    short = {"time_total_s": "time (s)", "train_val_gap": "gap", "min_child_weight":
             "min child weight", "colsample_bytree": "colsample bytree"}  # fmt: skip
    table = table.rename(columns=lambda c: short.get(c, c.replace("_", " ")))

    def sig4(v: object) -> str:
        if isinstance(v, float | np.floating) and math.isfinite(v):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
        return show(v)

    formats = dict.fromkeys(table.columns, sig4)
    for c in ("val log loss", "partial val log loss"):  # trials differ in the 5th decimal
        formats[c] = lambda v: show(v, digits=5)
    return html_table(table, formats, cls="wide")
