"""The scaling outlook in words and in the tracker: the summary's sentence, the decision table's
"scaling outlook" line (information: it never changes the verdict), the compact record a tracker
row keeps (what the next phase fits on and charts) and the tracker's log-x chart.

metrics.json `scaling` is built by `vpt_ray.pipeline.outlook` from the pure fit in
`vpt_ray.validation.scaling`; this module only reads it.
"""

from __future__ import annotations

import io
import math

from vpt_ray.model.cost_model import RunCost
from vpt_ray.validation.scaling import POINT_KEYS

BAND_POINTS = 12  # the fit's band kept in a tracker row (its chart redraws from it)


def market_key(metrics: dict) -> dict:
    """What must match for two runs' points to lie on one curve: real or synthetic data (and
    its signal strength), the bar size and the label horizon."""
    d, w = metrics["data"], metrics.get("windows") or {}
    return {
        "synthetic": bool(d.get("synthetic")),
        "signal_strength": d.get("signal_strength"),
        "bar": d.get("bar"),
        "horizon": w.get("label_horizon"),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "an unknown time"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def _times(n: float | None, base: float) -> str:
    if n is None or not math.isfinite(n):
        return "unbounded"  # the replicate's asymptote lies below the target
    return f"{n / base:.1f}x" if n / base < 100 else f"{n / base:.0f}x"


def full_point(section: dict) -> dict:
    pts = (section.get("learning_curve") or {}).get("points") or []
    return next((p for p in pts if p.get("full")), pts[-1] if pts else {})


def _per(v: float | None, lo: float | None, hi: float | None) -> str:
    f = lambda x: "n/a" if x is None else f"{x:+.4f}"  # noqa: E731
    return f"{f(v)} [{f(lo)}, {f(hi)}]"


def _naive_clause(section: dict) -> str:
    full = full_point(section)
    skill, se = full.get("skill"), full.get("skill_se")
    if skill is None or not se or abs(skill) >= 2 * se:
        return ""
    return (
        f"; the model does not beat the naive predictor (always "
        f"{full.get('naive_direction', 'the majority')}: skill {skill:+.4f}, SE {se:.4f})"
    )


def trend_text(section: dict) -> str:
    """The curve's trend in words: the gain per doubling of the data at this size and, with a
    trend, the asymptote and the data that buys +gain; else "no trend detectable" (naming a
    rise over the measured range that has flattened, and a model no better than naive)."""
    fa = section["fit"]["accuracy"]
    level = section.get("level", 0.95)
    if fa.get("slope_per_doubling") is None:
        return "no trend detectable (the curve has a single size)" + _naive_clause(section)
    here = (
        f"{_per(fa['slope_per_doubling'], fa['slope_lo'], fa['slope_hi'])} OOS accuracy per "
        f"doubling of the training data at this size ({level:.0%} interval)"
    )
    if fa["trend"]:
        text = (
            f"the learning curve still rises: {here}, toward an asymptote of "
            f"{fa['asymptote']:.4f} [{fa['asymptote_lo']:.4f}, {fa['asymptote_hi']:.4f}]"
        )
        base = full_point(section).get("samples")
        if fa.get("gain") and base:
            need = fa.get("samples_for_gain")
            text += (
                f"; +{fa['gain']:g} needs {_times(need, base)} this phase's training samples "
                f"[{_times(fa.get('samples_for_gain_lo'), base)}, "
                f"{_times(fa.get('samples_for_gain_hi'), base)}]"
                if need is not None
                else f"; +{fa['gain']:g} lies above the asymptote"
            )
        return text
    text = f"no trend detectable: {here} covers 0"
    r_lo = fa.get("range_slope_lo")
    if r_lo is not None and r_lo > 0:
        lo, hi = fa["range"]
        text += (
            f" (the curve rose "
            f"{_per(fa['range_slope_per_doubling'], r_lo, fa['range_slope_hi'])} per doubling "
            f"over {lo:,.0f}..{hi:,.0f} samples and has flattened)"
        )
    return text + _naive_clause(section)


def forecast_text(row: dict, phase: int, accuracy: float, trend: bool) -> str:
    """'phase 4 is forecast to reach 0.5338 [0.5331, 0.5345] for ~30 min and 4.0 GB: +0.0004
    over phase 3'."""
    verb = "reach" if trend else "stay at"
    gb = row.get("peak_gb")
    return (
        f"phase {row['phase']} is forecast to {verb} {row['accuracy']:.4f} "
        f"[{row['accuracy_lo']:.4f}, {row['accuracy_hi']:.4f}] for "
        f"{_duration(row.get('wall_s'))} and {'?' if gb is None else f'{gb:.1f}'} GB: "
        f"{row['accuracy'] - accuracy:+.4f} over phase {phase}"
    )


def sentence(section: dict, metrics: dict) -> str:
    """The summary's plain sentence: the next phase's forecast, then the trend."""
    trend = trend_text(section)
    fc = section.get("forecast") or []
    if not fc:
        return trend[0].upper() + trend[1:] + " (no later phase to forecast)"
    head = forecast_text(fc[0], metrics["phase"], metrics["oos"]["accuracy"],
                         section["fit"]["accuracy"]["trend"])  # fmt: skip
    return f"{head[0].upper()}{head[1:]}; {trend}"


def summary_line(metrics: dict) -> str | None:
    """summary.md's line: the sentence and what the learning curve cost against the final fit."""
    sec = metrics.get("scaling")
    if not sec:
        return None
    if "sentence" not in sec:
        return f"- Scaling outlook: not available ({sec.get('error', 'not computed')})"
    lc = sec.get("learning_curve") or {}
    cost = ""
    if lc.get("stage_s") is not None and lc.get("cost_vs_final_fit") is not None:
        cost = (
            f" (learning curve: {len(lc.get('points', [])) - 1} refits, {lc['stage_s']:.1f} s = "
            f"{lc['cost_vs_final_fit']:.2f}x the final fit)"
        )
    return f"- Scaling outlook{cost}: {sec['sentence']}"


def outlook_check(section: dict) -> dict:
    """The decision table's information line (effect "note", never decisive)."""
    fa = section["fit"]["accuracy"]
    return {
        "rule": "scaling outlook",
        "effect": "note",
        "fired": bool(fa.get("trend")),
        "line": f"scaling outlook (information, not a rule): {section['sentence']}",
        "figure": fa.get("slope_per_doubling"),
        "se": None,
        "threshold": None,
        "decisive": False,
        "bound": None,
    }


def _r(v: object, d: int = 5) -> object:
    return round(v, d) if isinstance(v, float) and math.isfinite(v) else v


def tracker_record(metrics: dict) -> dict | None:
    """What a tracker row keeps of the outlook: the full fit's point (a later phase fits it),
    the run's costs (a later phase calibrates on them), the curve, a thinned band, the forecast
    and the sentence; None when the run has no outlook."""
    sec = metrics.get("scaling")
    if not sec or "sentence" not in sec:
        return None
    full = full_point(sec)
    band = sec.get("band") or {}
    n = len(band.get("samples", []))
    keep = sorted({round(i * (n - 1) / (BAND_POINTS - 1)) for i in range(BAND_POINTS)}) if n else []
    return {
        **{k: _r(full.get(k)) for k in POINT_KEYS},
        "market": sec.get("market"),
        "cost": RunCost.from_metrics(metrics).to_dict(),
        "sentence": sec.get("sentence"),
        "curve": [[p["samples"], _r(p["accuracy"])] for p in sec["learning_curve"]["points"]],
        "earlier": [[e["phase"], e["samples"], _r(e["accuracy"])] for e in sec["earlier_phases"]],
        "band": {k: [_r(v[i]) for i in keep] for k, v in band.items()},
        "forecast": [
            {
                k: _r(f.get(k))
                for k in (
                    "phase",
                    "samples",
                    "accuracy",
                    "accuracy_lo",
                    "accuracy_hi",
                    "wall_s",
                    "peak_gb",
                )
            }
            for f in sec.get("forecast") or []
        ],  # fmt: skip
    }


def forecast_labels(forecast: list[dict]) -> list[str]:
    """A chart label per forecast row: "phase 4, 5" on the first of the rows at one size (phase 5
    trains on phase 4's data), "" on the others, so labels never print over each other."""
    out, seen = [], set()
    for f in forecast:
        same = [g["phase"] for g in forecast if g["samples"] == f["samples"]]
        out.append("" if f["samples"] in seen else "phase " + ", ".join(map(str, same)))
        seen.add(f["samples"])
    return out


def newest_record(state: dict) -> tuple[dict, dict] | None:
    """The newest phase run of the tracker's history with an outlook: (row, its record)."""
    for row in state.get("history", []):
        if row.get("kind", "phase") == "phase" and row.get("scaling"):
            return row, row["scaling"]
    return None


def outlook_png(row: dict, rec: dict) -> bytes:
    """The tracker's outlook chart: OOS accuracy against training samples (log x): the run's
    learning curve, the earlier phases, the fit and its band, the forecast with intervals."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), dpi=90, layout="constrained")
    ax = fig.subplots()
    band = rec.get("band") or {}
    if band.get("samples"):
        ax.fill_between(band["samples"], band["accuracy_lo"], band["accuracy_hi"],
                        color="#54aeff", alpha=0.25, lw=0, label="fit's interval")  # fmt: skip
        ax.plot(band["samples"], band["accuracy"], color="#0969da", lw=1.4, label="fit")
    curve = rec.get("curve") or []
    ax.plot([c[0] for c in curve], [c[1] for c in curve], "o", color="#1f2328", ms=6,
            label=f"learning curve (run {row['run_id']}, phase {row['phase']})")  # fmt: skip
    earlier = rec.get("earlier") or []
    if earlier:
        ax.plot([e[1] for e in earlier], [e[2] for e in earlier], "s", color="#8250df", ms=7,
                label="earlier phases")  # fmt: skip
    forecast = rec.get("forecast") or []
    for f, label in zip(forecast, forecast_labels(forecast), strict=True):
        ax.errorbar([f["samples"]], [f["accuracy"]],
                    yerr=[[f["accuracy"] - f["accuracy_lo"]], [f["accuracy_hi"] - f["accuracy"]]],
                    fmt="D", color="#bc4c00", ms=6, capsize=4)  # fmt: skip
        ax.annotate(label, (f["samples"], f["accuracy_hi"]), fontsize=8, ha="center",
                    va="bottom", color="#bc4c00")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training samples (log scale)", fontsize=9)
    ax.set_ylabel("OOS accuracy", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Scaling outlook (orange: forecast for the later phases)", fontsize=10, loc="left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def tracker_lines(state: dict, chart: str | None) -> list[str]:
    """The tracker's outlook paragraph: the newest run's sentence and its chart."""
    newest = newest_record(state)
    if newest is None:
        return []
    row, rec = newest
    lines = [
        "### Scaling outlook",
        "",
        f"Phase {row['phase']} ({row['run_id']}): {rec['sentence']}.",
    ]
    if chart:
        lines += ["", f"![Scaling outlook]({chart})"]
    return [*lines, ""]
