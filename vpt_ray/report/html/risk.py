"""The "Risk and the benchmark" section: the distribution of daily returns (skew, kurtosis, VaR,
CVaR), the strategy against equal-weight buy-and-hold (beta, alpha, tracking error, information
ratio) and a table per calendar year; plus the note a CAGR from less than a year carries. The
figures come from `vpt_ray.backtest.risk` (pure functions); this module only shows them.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from vpt_ray.backtest import risk as backtest_risk
from vpt_ray.backtest.stats import TRADING_DAYS
from vpt_ray.backtest.tearsheet import daily_returns
from vpt_ray.report.html.common import (
    BLUE,
    GREY,
    ORANGE,
    RED,
    apply_layout,
    html_table,
    missing_note,
    show,
)
from vpt_ray.report.html.inputs import RunFiles

FIGURES = ("daily_returns",)


def returns_of(run: RunFiles) -> tuple[pd.Series, pd.Series | None]:
    """Daily returns of the strategy and of the benchmark on the same sessions."""
    r = daily_returns(run.equity, run.capital)
    if run.benchmark is None or not len(run.benchmark):
        return r, None
    b = run.benchmark.reindex(run.equity.index).ffill().fillna(run.capital)
    return r, daily_returns(b, run.capital)


def fig_daily_returns(r: pd.Series, b: pd.Series | None, bins: int = 40) -> go.Figure:
    """Histogram of daily returns (strategy; buy-and-hold in grey) with the strategy's VaR and
    CVaR at 95%. The bins span the best and the worst day of both: nothing is clipped."""
    d = backtest_risk.return_distribution(r)
    values = np.concatenate([r.to_numpy(), b.to_numpy() if b is not None else []])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
    if hi <= lo:
        lo, hi = lo - 1e-3, hi + 1e-3
    edges = np.linspace(lo, hi, bins + 1)
    fig = go.Figure()
    for series, name, color in ((r, "strategy", BLUE), (b, "buy-and-hold", GREY)):
        if series is None:
            continue
        counts, _ = np.histogram(series.to_numpy(), bins=edges)
        fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                    name=f"{name} ({len(series)} sessions)", marker_color=color,
                    opacity=0.55)  # fmt: skip
    for key, name, color in (("var", "VaR 95%", ORANGE), ("cvar", "CVaR 95%", RED)):
        if d[key] is not None:
            fig.add_vline(
                x=d[key], line_color=color, line_dash="dash",
                annotation_text=f"{name} {d[key]:.2%}",
                annotation_position="top left" if key == "cvar" else "top right",
            )  # fmt: skip
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="daily return", tickformat=".1%")
    fig.update_yaxes(title="sessions")
    sub = (
        f"strategy: skew {show(d['skew'], digits=2)}, excess kurtosis "
        f"{show(d['kurtosis'], digits=2)}; every session drawn (best to worst day)"
    )
    return apply_layout(fig, f"Daily returns<br><sup>{sub}</sup>", 360)


def builders(run: RunFiles) -> dict[str, Callable[[], go.Figure | None]]:
    """This section's charts, for `page.build_figures`."""
    ok = run.equity is not None and len(run.equity) >= 2
    return {"daily_returns": lambda: fig_daily_returns(*returns_of(run)) if ok else None}


_DIST_ROWS = (
    ("sessions", "sessions", "int"),
    ("mean", "mean daily return", "pct"),
    ("std", "daily volatility (std)", "pct"),
    ("best", "best day", "pct"),
    ("worst", "worst day", "pct"),
    ("up_share", "share of up days", "pct"),
    ("skew", "skew", "num"),
    ("kurtosis", "excess kurtosis", "num"),
    ("var", "VaR 95% (5th percentile day)", "pct"),
    ("cvar", "CVaR 95% (mean of the worst 5% days)", "pct"),
)


def _fmt(v: object, kind: str) -> str:
    if kind == "pct":
        return show(v, "pct")
    if kind == "int":
        return show(v)
    return show(v, digits=2)


def distribution_table(r: pd.Series, b: pd.Series | None) -> str:
    """Strategy against buy-and-hold, one row per statistic of the daily returns."""
    ds = backtest_risk.return_distribution(r)
    db = backtest_risk.return_distribution(b) if b is not None else {}
    rows = [
        {"daily returns": label, "strategy": _fmt(ds.get(k), kind),
         "buy-and-hold": _fmt(db.get(k), kind) if db else "n/a"}
        for k, label, kind in _DIST_ROWS
    ]  # fmt: skip
    return '<div id="return-distribution">' + html_table(pd.DataFrame(rows)) + "</div>"


def relative_text(r: pd.Series, b: pd.Series | None) -> str:
    """Beta, alpha, correlation, tracking error and information ratio against buy-and-hold."""
    if b is None:
        return "<p>No benchmark in this run: no beta, alpha or information ratio.</p>"
    s = backtest_risk.relative_stats(r, b)
    n = s["sessions"]
    short = f"; annualized from {n} sessions: an extrapolation" if n < TRADING_DAYS else ""
    return (
        f'<p id="relative">Against equal-weight buy-and-hold ({s["sessions"]} sessions): beta '
        f"<b>{show(s['beta'], digits=3)}</b>, alpha <b>{show(s['alpha'], 'pct')}</b> a year "
        f"((1 + mean daily residual)<sup>252</sup> - 1{short}), correlation "
        f"{show(s['correlation'], digits=2)}, tracking error {show(s['tracking_error'], 'pct')} "
        f"a year, information ratio <b>{show(s['information_ratio'], digits=2)}</b> (mean / "
        "std of the daily excess return x sqrt(252)).</p>"
    )


def yearly_html(run: RunFiles) -> str:
    """Return, Sharpe, drawdown and the benchmark per calendar year."""
    t = backtest_risk.yearly_table(run.equity, run.capital, run.benchmark)
    pct = lambda v: show(v, "pct")  # noqa: E731
    formats = {"year": str, "return": pct, "max_drawdown": pct, "benchmark": pct, "excess": pct,
               "sharpe": lambda v: show(v, digits=2)}  # fmt: skip
    t = t.rename(columns={"max_drawdown": "max drawdown (close to close)"})
    formats["max drawdown (close to close)"] = pct
    return (
        '<h3>By calendar year</h3><div id="yearly">'
        + html_table(t, formats)
        + "</div><p class=note>A year the window only partly covers shows its sessions; its "
        "return is not annualized.</p>"
    )


def cagr_text(bt: dict) -> str:
    """'CAGR x%' with the note a window shorter than a year needs."""
    note = backtest_risk.cagr_note(bt.get("days"))
    text = f"CAGR {show(bt.get('cagr'), 'pct')}"
    return text + (
        f' <span class="note" id="cagr-note">({html.escape(note)})</span>' if note else ""
    )


def risk_section(run: RunFiles, fig: Callable[[str], str]) -> str:
    """The section's HTML; `fig(key)` embeds a chart built by `builders`."""
    if run.equity is None or len(run.equity) < 2:
        return "<p>Fewer than two sessions of equity: no distribution to show.</p>"
    r, b = returns_of(run)
    return (
        relative_text(r, b)
        + fig("daily_returns")
        + distribution_table(r, b)
        + yearly_html(run)
        + missing_note(run, *FIGURES)
    )
