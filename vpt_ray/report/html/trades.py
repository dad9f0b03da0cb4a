"""The backtest section's trades: prices with the fills around the worst day, PnL per ticker
and the distribution of trade returns.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vpt_ray.report.html.common import (
    BLUE,
    GREEN,
    GREY,
    PURPLE,
    RED,
    apply_layout,
    html_table,
    show,
    tail_range,
)
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


TRADE_TAIL = 0.005  # each tail's share of the trades drawn as an overflow bar, not binned


def trade_bins(bps: np.ndarray, bins: int, tail: float = TRADE_TAIL) -> np.ndarray:
    """The histogram's bin edges (bps): `bins` equal bins over the trades' [tail, 1 - tail]
    quantile range; trades outside it go to the overflow bars."""
    lo, hi = tail_range(bps, tail)
    return np.linspace(lo, hi, bins + 1)


def fig_trades(trades: pd.DataFrame, bins: int = 50) -> go.Figure:
    """Net return per trade by side (long: blue bars, short: a purple step outline; shared
    bins; the extreme 0.5% at each end drawn as hatched overflow bars labelled with their range
    and count), and how trades exited. Every trade is counted once."""
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.65, 0.35],
        subplot_titles=("net return per trade (bps, after costs)", "exit reason"),
    )
    bps = trades["return"].to_numpy(dtype=float) * 1e4
    edges = trade_bins(bps, bins)
    lo, hi, width = edges[0], edges[-1], edges[1] - edges[0]
    side = trades["side"].to_numpy()
    tails = []
    for s, name, color in ((1, "long", BLUE), (-1, "short", PURPLE)):
        r = bps[side == s]
        if not len(r):
            continue
        inside = r[(r >= lo) & (r <= hi)]
        counts, _ = np.histogram(inside, bins=edges)
        centres = (edges[:-1] + edges[1:]) / 2
        if s == 1:  # long: bars; short: a step outline over them (no blended colours)
            fig.add_bar(
                x=centres, y=counts, width=np.diff(edges), name=f"{name} ({len(r)})",
                marker_color=color, opacity=0.55, legendgroup=name, row=1, col=1,
            )  # fmt: skip
        else:
            fig.add_scatter(
                x=centres, y=counts, mode="lines", name=f"{name} ({len(r)})",
                line={"shape": "hvh", "color": color, "width": 2}, legendgroup=name, row=1, col=1,
            )  # fmt: skip
        for label, n, x in (
            (f"< {lo:,.1f} bps", int(np.sum(r < lo)), lo - width),
            (f"> {hi:,.1f} bps", int(np.sum(r > hi)), hi + width),
        ):
            if n:
                tails.append(f"{n} {name} {label}")
            fig.add_bar(
                x=[x], y=[n], width=[width], name=f"{name} {label}", marker_color=color,
                marker_pattern_shape="/", opacity=0.6, legendgroup=name, showlegend=False,
                hovertemplate=f"{name} trades {label}: {n}<extra></extra>", row=1, col=1,
            )  # fmt: skip
    fig.add_vline(x=0, line_color=GREY, row=1, col=1)
    fig.update_yaxes(title="trades", row=1, col=1)
    counts = trades["exit_reason"].astype(str).value_counts()
    fig.add_bar(x=counts.index, y=counts.values, marker_color=GREY, showlegend=False, row=1, col=2)
    fig.update_yaxes(title="trades", row=1, col=2)
    fig.update_layout(barmode="overlay")
    tail_text = "hatched end bars: " + ", ".join(tails) if tails else "no trade outside the bins"
    title = f"Trade distribution ({len(trades)} trades)<br><sup>{tail_text}</sup>"
    return apply_layout(fig, title, 380)


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
