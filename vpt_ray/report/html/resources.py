"""The cost and provenance sections: memory and CPU over the run's stages (per node on a
cluster), and where the run's data, code and config came from.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.subplots import make_subplots

from vpt_ray.report.html.common import (
    BLUE,
    ORANGE,
    RED,
    STAGE_COLORS,
    apply_layout,
    finite,
    html_table,
    show,
)
from vpt_ray.report.html.inputs import RunFiles

NOT_SAMPLED = ("start-up", "oracle", "optimize", "report")  # before or after the sampler ran


def memory_thresholds(metrics: dict, config: dict) -> dict:
    """The memory chart's warn and stop lines: the run's effective limit (metrics.json
    `resources.ray.memory_limit`: the config's, or the machine's memory when smaller), else
    the config's hardware section (runs recorded before it)."""
    lim = ((metrics.get("resources") or {}).get("ray") or {}).get("memory_limit")
    if lim:
        return {"memory_warn_gb": lim.get("warn_gb"), "memory_limit_gb": lim.get("limit_gb"),
                "source": lim.get("source")}  # fmt: skip
    return config.get("hardware", {})


def stage_spans(stages: dict[str, float], end_s: float) -> list[tuple[str, float, float]]:
    """(stage, start, end) on the sampler's clock, laid back to back ending at its last sample.

    Stage start times are not recorded, only durations; sampling stops right after the last
    sampled stage, so aligning the stages on the end is accurate to a sample interval.
    """
    sampled = [(k, v) for k, v in stages.items() if k not in NOT_SAMPLED]
    spans, t = [], end_s
    for name, dur in reversed(sampled):
        spans.append((name, max(0.0, t - dur), t))
        t -= dur
    return list(reversed(spans))


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
        if finite(v) and v > 0:
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
    return apply_layout(fig, f"Memory over the run (peak {peak:.2f} GB)", 400)


def resources_text(run: RunFiles) -> str:
    res = run.metrics.get("resources", {})
    ray_info = res.get("ray", {})
    stages = pd.DataFrame(
        [{"stage": k, "seconds": v} for k, v in (res.get("stages") or {}).items()]
    )
    hw = memory_thresholds(run.metrics, run.config)
    warn, limit = hw.get("memory_warn_gb", "n/a"), hw.get("memory_limit_gb", "n/a")
    if hw.get("source") == "machine":
        limit = f"{limit} GB (this machine's memory, below hardware.memory_limit_gb)"
    else:
        limit = f"{limit} GB"
    text = (
        f"<p>Peak memory {show(res.get('peak_memory_gb'), digits=2)} GB ("
        + (
            "this job's Ray processes on every node"
            if res.get("measured") == "per node"
            else "driver + every Ray process it started"
        )
        + ", proportional set size) against warn "
        f"{warn} GB and stop {limit}; wall "
        f"time {show(res.get('wall_seconds'), digits=1)} s. "
        f"Ray: {html.escape(str(ray_info.get('mode')))}"
        f", {show(ray_info.get('num_cpus'))} CPUs"
    )
    if ray_info.get("object_store_gb") is not None:
        text += f", object store {show(ray_info.get('object_store_gb'), digits=1)} GB"
    if ray_info.get("clamped"):
        text += "; clamped to this machine: " + html.escape("; ".join(ray_info["clamped"]))
    text += ".</p>"
    secs = {"seconds": lambda v: show(v, digits=1)}
    return text + (html_table(stages, secs) if len(stages) else "") + nodes_table(res)


def nodes_table(res: dict) -> str:
    """A cluster run's memory node by node: peak, object store, and what ran there."""
    nodes = res.get("nodes") or {}
    if res.get("measured") != "per node" or not nodes:
        return ""
    ran = res.get("placement") or {}
    rows = [
        {
            "node": name + (" (driver)" if n.get("driver") else ""),
            "peak GB": n.get("peak_gb"),
            "object store peak / size GB": f"{show(n.get('object_store_peak_gb'), digits=2)} / "
            f"{show(n.get('object_store_gb'), digits=2)}",
            "ran": "; ".join(
                f"{stage}: {len(where[name])}" for stage, where in ran.items() if name in where
            ),
        }
        for name, n in nodes.items()
    ]
    return (
        f"<p>Memory per node ({len(nodes)} nodes; the run's total peaked at "
        f"{show(res.get('peak_memory_gb'), digits=2)} GB): hardware.memory_limit_gb holds per "
        "node, hardware.job_memory_limit_gb for the total.</p>"
        + html_table(pd.DataFrame(rows), {"peak GB": lambda v: show(v, digits=2)})
    )


def provenance_section(run: RunFiles) -> str:
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
