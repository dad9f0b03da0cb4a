"""The backtest section's trades: prices with the fills around the worst day, PnL per ticker
and the distribution of trade returns.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vpt_ray.report.html.common import GREEN, GREY, RED, apply_layout, binned, html_table, show
from vpt_ray.report.html.inputs import RunFiles


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
    return apply_layout(fig, "Prices and trades (choose a ticker; New York time)", 420)


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
    return apply_layout(fig, "Per-ticker returns", max(300, 22 * len(tickers) + 120))


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
    return apply_layout(fig, f"Trade distribution ({len(trades)} trades)", 360)


def price_window_text(run: RunFiles) -> str:
    if run.price_window is None or not run.prices:
        return ""
    a, b = run.price_window
    run_id = html.escape(str(run.metrics.get("run_id")))
    return (
        f"<h3>Prices and trades, {a} .. {b}</h3><p>The five sessions around the portfolio's "
        f"worst day by default; another window: <code>vpt report {run_id} --window "
        "START..END</code>.</p>"
    )


def per_ticker_html(per_ticker: dict) -> str:
    cols = ["trades", "pnl", "pnl_share", "total_return", "sharpe", "max_drawdown", "win_rate",
            "profit_factor", "exposure"]  # fmt: skip
    df = pd.DataFrame.from_dict(per_ticker, orient="index").reindex(columns=cols)
    df = df.rename_axis("ticker").reset_index()
    pct = {c: (lambda v: show(v, "pct")) for c in ("pnl_share", "total_return", "max_drawdown",
                                                    "win_rate", "exposure")}  # fmt: skip
    return html_table(
        df, {**pct, "sharpe": lambda v: show(v, digits=2), "pnl": lambda v: show(v, digits=0)}
    )
