"""The "Does more data still pay?" section: the learning curve measured inside the run, the
tracker's earlier phases, the saturating power law fitted to them with its interval, and the
forecast for the later phases (accuracy and log loss with intervals, wall time, peak memory),
on a log-x chart; from metrics.json `scaling` (`vpt_ray.pipeline.outlook`).
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vpt_ray.report.html.common import BLUE, GREY, ORANGE, apply_layout, html_table, show
from vpt_ray.report.outlook import forecast_labels

FIGS = (("accuracy", "OOS accuracy"), ("log_loss", "OOS log loss"))


def fig_scaling(sec: dict) -> go.Figure:
    """OOS accuracy and log loss against training samples (log x): the curve's points with
    their SEs, the earlier phases, the fit and its band, the forecast with its intervals."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in FIGS])
    band = sec.get("band") or {}
    pts = sec["learning_curve"]["points"]
    for col, (key, _) in enumerate(FIGS, start=1):
        legend = col == 1
        if band.get("samples"):
            x = band["samples"]
            fig.add_scatter(x=x + x[::-1], y=band[f"{key}_hi"] + band[f"{key}_lo"][::-1],
                            fill="toself", line={"width": 0}, fillcolor="rgba(9,105,218,0.15)",
                            name=f"fit's {sec.get('level', 0.9):.0%} interval", hoverinfo="skip",
                            legendgroup="band", showlegend=legend, row=1, col=col)  # fmt: skip
            fig.add_scatter(x=x, y=band[key], mode="lines", line={"color": BLUE}, name="fit",
                            legendgroup="fit", showlegend=legend, row=1, col=col)  # fmt: skip
        fig.add_scatter(
            x=[p["samples"] for p in pts], y=[p[key] for p in pts], mode="markers",
            error_y={"type": "data", "array": [p.get(f"{key}_se") or 0 for p in pts]},
            marker={"color": "#1f2328", "size": 9}, name="learning curve (this run)",
            text=[p["label"] for p in pts], hovertemplate="%{text}: %{y:.4f} at %{x:,.0f}",
            legendgroup="curve", showlegend=legend, row=1, col=col,
        )  # fmt: skip
        earlier = [e for e in sec.get("earlier_phases") or [] if e.get(key) is not None]
        if earlier:
            fig.add_scatter(
                x=[e["samples"] for e in earlier], y=[e[key] for e in earlier], mode="markers",
                error_y={"type": "data", "array": [e.get(f"{key}_se") or 0 for e in earlier]},
                marker={"color": "#8250df", "size": 10, "symbol": "square"},
                text=[f"phase {e['phase']} ({e['run_id']})" for e in earlier],
                hovertemplate="%{text}: %{y:.4f}", name="earlier phases",
                legendgroup="earlier", showlegend=legend, row=1, col=col,
            )  # fmt: skip
        fc = sec.get("forecast") or []
        if fc:
            fig.add_scatter(
                x=[f["samples"] for f in fc], y=[f[key] for f in fc], mode="markers+text",
                error_y={"type": "data", "symmetric": False,
                         "array": [f[f"{key}_hi"] - f[key] for f in fc],
                         "arrayminus": [f[key] - f[f"{key}_lo"] for f in fc]},
                marker={"color": ORANGE, "size": 10, "symbol": "diamond"},
                text=forecast_labels(fc), textposition="top center",
                name="forecast", legendgroup="forecast", showlegend=legend, row=1, col=col,
            )  # fmt: skip
    fig.update_xaxes(type="log", title="training samples (log scale)")
    if pts:
        naive = next((p for p in pts if p.get("full")), pts[-1]).get("naive_accuracy")
        if naive is not None:
            fig.add_hline(y=naive, line_dash="dot", line_color=GREY, row=1, col=1)
    return apply_layout(
        fig, "Scaling outlook: learning curve, fit and forecast (dotted: the naive predictor)", 420
    )


def _interval(row: dict, key: str) -> str:
    return f"{show(row.get(key))} [{show(row.get(key + '_lo'))}, {show(row.get(key + '_hi'))}]"


def scaling_html(sec: dict) -> str:
    """The sentence, the learning curve's cost and points, the fit and the forecast tables."""
    lc = sec["learning_curve"]
    cost = (
        f"The learning curve cost {show(lc.get('stage_s'), digits=1)} s (fits "
        f"{show(lc.get('fit_s'), digits=1)} s, OOS scoring {show(lc.get('score_s'), digits=1)} s): "
        f"{show(lc.get('cost_vs_final_fit'), digits=2)}x the final fit's "
        f"{show(lc.get('final_fit_s'), digits=1)} s. Intervals: {sec.get('level', 0.9):.0%}, from "
        f"{show((lc.get('bootstrap') or {}).get('replicates'))} block-bootstrap replicates of the "
        f"OOS window ({show((lc.get('bootstrap') or {}).get('blocks'))} blocks of "
        f"{html.escape(str((lc.get('bootstrap') or {}).get('block')))}); a forecast's interval "
        "also holds the noise of that phase's own OOS measurement."
    )
    points = pd.DataFrame(
        [{"point": p["label"], "sessions": p.get("sessions"), "samples": p["samples"],
          "rounds": p.get("rounds"), "accuracy": p["accuracy"], "SE": p.get("accuracy_se"),
          "naive": p.get("naive_accuracy"), "skill": p.get("skill"),
          "skill SE": p.get("skill_se"), "log loss": p.get("log_loss"),
          "log loss SE": p.get("log_loss_se")} for p in lc["points"]]
        + [{"point": f"phase {e['phase']} ({e['run_id']})", "samples": e["samples"],
            "accuracy": e["accuracy"], "SE": e.get("accuracy_se"), "log loss": e.get("log_loss"),
            "log loss SE": e.get("log_loss_se")} for e in sec.get("earlier_phases") or []]
    )  # fmt: skip
    fits = []
    for key, title in FIGS:
        f = sec["fit"][key]
        fits.append(
            {"figure": title, "per doubling": f.get("slope_per_doubling"),
             "per doubling lo": f.get("slope_lo"), "per doubling hi": f.get("slope_hi"),
             "trend": f.get("trend"), "asymptote": f.get("asymptote"),
             "asymptote lo": f.get("asymptote_lo"), "asymptote hi": f.get("asymptote_hi"),
             "b": f.get("b")}
        )  # fmt: skip
    forecast = pd.DataFrame(
        [{"phase": r["phase"], "training samples": r["samples"],
          "OOS accuracy": _interval(r, "accuracy"), "OOS log loss": _interval(r, "log_loss"),
          "wall (min)": None if r.get("wall_s") is None else round(r["wall_s"] / 60, 1),
          "search (min)": round((r.get("search_s") or 0) / 60, 1),
          "ensemble (min)": round((r.get("ensemble_s") or 0) / 60, 1), "peak GB": r.get("peak_gb")}
         for r in sec.get("forecast") or []]
    )  # fmt: skip
    rates = (sec.get("costs") or {}).get("rates") or {}
    src = "; ".join(f"{k}: {v}" for k, v in (rates.get("source") or {}).items())
    return (
        f"<p><b>{html.escape(sec.get('sentence', ''))}.</b></p><p>{cost}</p>"
        + html_table(points)
        + "<h3>The fit</h3>"
        + html_table(pd.DataFrame(fits))
        + (
            "<h3>Forecast for the later phases (as shipped, on this machine)</h3>"
            + html_table(
                forecast,
                formats={
                    **{
                        c: (lambda v: show(v, digits=1))
                        for c in ("wall (min)", "search (min)", "ensemble (min)")
                    },
                    "peak GB": lambda v: show(v, digits=2),
                },
            )
            + f'<p class="note">Costs from the measured rates ({html.escape(src)}).</p>'
            if len(forecast)
            else ""
        )
    )
