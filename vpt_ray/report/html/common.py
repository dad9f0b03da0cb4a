"""The page's building blocks shared by every section: number formatting, sortable tables,
figure embedding and the plotly layout every chart uses.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from vpt_ray.report.html.inputs import RunFiles

GREEN, RED, BLUE, ORANGE, GREY = "#1a7f37", "#cf222e", "#0969da", "#bc4c00", "#6e7781"
PURPLE = "#8250df"  # the short side (blue: long): neither reads as a gain or a loss


TEMPLATE = "plotly_white"


STAGE_COLORS = ("#ddf4ff", "#fff8c5", "#ffebe9", "#dafbe1", "#fbefff", "#eaeef2", "#fff1e5")


def finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


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


def tail_range(values: np.ndarray, tail: float) -> tuple[float, float]:
    """The [tail, 1 - tail] quantile range of the finite values: a histogram's body; what lies
    outside it goes to overflow bins that say how many values they hold (never folded silently
    into the end bins)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.quantile(v, [tail, 1 - tail]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def readable(v: object) -> str:
    """A threshold as a reader takes it in: 32, 0.52, 0.0098 (4 decimals at most, trailing zeros
    dropped; 2 significant digits below 0.001), not 0.00977712."""
    if not finite(v):
        return "n/a"
    x = float(v)  # type: ignore[arg-type]
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) < 1e-3:
        return f"{x:.2g}"
    return f"{x:,.4f}".rstrip("0").rstrip(".")


def apply_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template=TEMPLATE,
        height=height,
        margin={"l": 60, "r": 30, "t": 90, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.1, "xanchor": "right", "x": 1},
    )
    return fig


def show(v: object, kind: str = "num", digits: int = 4) -> str:
    """A figure as the page shows it: "n/a" when missing or not finite, yes/no, integers with
    thousands separators, `kind` "pct" as a percentage, else `digits` decimals."""
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
            text = formats.get(col, show)(v)
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


def figure_html(key: str, fig: go.Figure) -> str:
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{key}",
        config={"displaylogo": False, "responsive": True},
    )


def missing_note(run: RunFiles, *keys: str) -> str:
    notes = [run.notes[k] for k in keys if k in run.notes]
    return "".join(f'<p class="note">Not shown: {html.escape(n)}</p>' for n in notes)


def model_run_text(run: RunFiles, what: str) -> str:
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
            f" Its CV: validation accuracy {show(cv.get('val_accuracy'))}, AUC "
            f"{show(cv.get('val_auc'))}, log loss {show(cv.get('val_log_loss'))}, train accuracy "
            f"{show(cv.get('train_accuracy'))}."
        )
    return text + "</p>"


def scroll_wrap(table: str) -> str:
    return f'<div class="tablewrap">{table}</div>'
