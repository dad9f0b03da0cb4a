"""The backtest section's book: equity against the benchmark, rolling Sharpe, drawdowns,
monthly returns, turnover, and how the portfolio was run.
"""

from __future__ import annotations

import datetime as dt
import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vpt_ray.backtest import tearsheet
from vpt_ray.report.html.common import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    RED,
    apply_layout,
    html_table,
    show,
)
from vpt_ray.report.html.inputs import RunFiles


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
    return apply_layout(fig, title, 560 if has_bench else 460)


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
    return apply_layout(fig, f"Rolling Sharpe ({window} sessions, daily returns x sqrt(252))", 340)


def fig_turnover(turnover: pd.Series) -> go.Figure:
    """Traded value per session as a multiple of the equity it trades."""
    fig = go.Figure(
        go.Bar(x=turnover.index, y=turnover.values, name="turnover", marker_color=ORANGE)
    )
    mean = float(turnover.mean()) if len(turnover) else 0.0
    fig.add_hline(y=mean, line_dash="dot", line_color=GREY)
    fig.update_yaxes(title="traded value / equity")
    return apply_layout(fig, f"Turnover per session (mean {mean:.2f}x equity, dotted)", 300)


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
    return apply_layout(fig, "Monthly returns", 170 + 45 * len(table))


def rolling_window(sessions: int) -> int:
    """63 sessions (a quarter), shorter for a short backtest so the curve has some length."""
    return max(5, min(63, sessions // 3))


def portfolio_text(bt: dict) -> str:
    """How the book was run and who made its PnL: the portfolio's definitions (one pool, Sharpe
    on daily returns, intraday drawdown), the concentration and the costs (summary.md's lines)."""
    from vpt_ray.report.run_report import portfolio_lines

    head = (
        "<p>One pool of capital, every ticker on one clock; Sharpe from daily returns x "
        f"sqrt(252); max drawdown intraday on the bar closes (close to close: "
        f"{show(bt.get('max_drawdown_daily'), 'pct')}). Per-ticker figures are each ticker's "
        "contribution to the portfolio.</p>"
    )
    lines = [html.escape(x.removeprefix("- ").replace("**", "")) for x in portfolio_lines(bt)]
    return head + ("<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>" if lines else "")


def benchmark_text(b: dict | None) -> str:
    if not b or b.get("total_return") is None:
        return ""
    return (
        f'<p id="benchmark">Benchmark: {html.escape(str(b.get("method")))}: total return '
        f"{show(b.get('total_return'), 'pct')}, Sharpe {show(b.get('sharpe'), digits=2)}, max "
        f"drawdown {show(b.get('max_drawdown'), 'pct')}. Excess return of the strategy "
        f"<b>{show(b.get('excess_return'), 'pct')}</b>.</p>"
    )


def drawdowns_table(run: RunFiles) -> str:
    if run.equity is None or not len(run.equity):
        return ""
    dd = tearsheet.worst_drawdowns(run.equity, run.capital, 5)
    if dd.empty:
        return "<h3>Worst drawdowns</h3><p>The equity never fell below a previous high.</p>"
    day = lambda v: "start" if pd.isna(v) else str(pd.Timestamp(v).date())  # noqa: E731
    formats = {"depth": lambda v: show(v, "pct"), "peak": day, "trough": day,
               "recovery": lambda v: "not recovered" if pd.isna(v) else day(v),
               "recovery_sessions": lambda v: "" if pd.isna(v) else f"{int(v)}"}  # fmt: skip
    return (
        '<h3>Five worst drawdowns</h3><div id="worst-drawdowns">'
        + html_table(dd, formats)
        + "</div><p class=note>peak: last session at the high before the fall (start: the "
        "starting capital); sessions: peak to trough; recovery: first session back at the "
        "peak's level.</p>"
    )
