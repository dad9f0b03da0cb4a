"""The "PnL, costs and exposure" section: what the trades made before costs and what slippage
and commissions took, long against short, the book's gross and net exposure over time, and each
ticker's equity contribution. The figures come from `vpt_ray.backtest.attribution` and
`vpt_ray.backtest.exposure` (pure functions); this module only draws them.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go

from vpt_ray.backtest import attribution, exposure
from vpt_ray.report.html.common import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    PURPLE,
    RED,
    apply_layout,
    html_table,
    missing_note,
    show,
)
from vpt_ray.report.html.inputs import RunFiles

FIGURES = ("pnl_costs", "side_pnl", "exposure", "ticker_equity")


def fig_pnl_costs(curves: pd.DataFrame) -> go.Figure:
    """Cumulative PnL before costs (gross), after them (net) and the two costs between, by the
    trades' exit session, in dollars."""
    fig = go.Figure()
    for key, name, color, dash in (
        ("gross", "before costs (gross)", GREY, "dash"),
        ("net", "after costs (net)", BLUE, "solid"),
    ):
        fig.add_scatter(x=curves.index, y=curves[key], name=name,
                        line={"color": color, "dash": dash})  # fmt: skip
    # the costs stacked below zero: their lower edge is -(gross - net)
    fig.add_scatter(x=curves.index, y=-curves["slippage"], name="- slippage", fill="tozeroy",
                    line={"color": ORANGE, "width": 1})  # fmt: skip
    fig.add_scatter(x=curves.index, y=-(curves["slippage"] + curves["commissions"]),
                    name="- commissions (below slippage)", fill="tonexty",
                    line={"color": RED, "width": 1})  # fmt: skip
    fig.add_hline(y=0, line_color=GREY, line_dash="dot")
    fig.update_yaxes(title="cumulative PnL ($)")
    return apply_layout(fig, "PnL before and after costs (realized, by exit session)", 380)


def fig_side_pnl(trades: pd.DataFrame, sessions: pd.DatetimeIndex) -> go.Figure:
    """Cumulative net PnL of the long and the short trades (gross dotted), by exit session."""
    fig = go.Figure()
    side = trades["side"].to_numpy()
    for s, name, color in ((1, "long", BLUE), (-1, "short", PURPLE)):
        c = attribution.cumulative_pnl(trades[side == s], sessions)
        fig.add_scatter(x=c.index, y=c["net"], name=f"{name} net", line={"color": color})
        fig.add_scatter(x=c.index, y=c["gross"], name=f"{name} gross",
                        line={"color": color, "dash": "dot", "width": 1})  # fmt: skip
    fig.add_hline(y=0, line_color=GREY, line_dash="dot")
    fig.update_yaxes(title="cumulative PnL ($)")
    return apply_layout(fig, "Long vs short PnL (net solid, before costs dotted)", 340)


def fig_exposure(daily: pd.DataFrame) -> go.Figure:
    """Per session: mean and peak gross exposure, mean net, and the long and short books."""
    fig = go.Figure()
    for key, name, color, dash in (
        ("gross_max", "gross (session peak)", GREY, "dot"),
        ("gross_mean", "gross (session mean)", ORANGE, "solid"),
        ("long_mean", "long book (mean)", BLUE, "dash"),
        ("short_mean", "short book (mean)", PURPLE, "dash"),
        ("net_mean", "net (mean)", GREEN, "solid"),
    ):
        fig.add_scatter(x=daily.index, y=daily[key], name=name,
                        line={"color": color, "dash": dash})  # fmt: skip
    fig.add_hline(y=0, line_color=GREY, line_dash="dot")
    fig.update_yaxes(title="share of equity", tickformat=".0%")
    return apply_layout(
        fig, "Gross and net exposure per session (|notional|, signed / equity)", 360
    )


def fig_ticker_equity(contrib: pd.DataFrame) -> go.Figure:
    """Each ticker's cumulative net PnL as a share of the capital (the best and worst five, the
    rest summed), open positions marked at the close."""
    fig = go.Figure()
    for col in contrib.columns:
        rest = str(col).startswith("other ")
        fig.add_scatter(x=contrib.index, y=contrib[col], name=str(col),
                        line={"dash": "dot" if rest else "solid"})  # fmt: skip
    fig.add_hline(y=0, line_color=GREY, line_dash="dot")
    fig.update_yaxes(title="cumulative PnL / capital", tickformat=".1%")
    return apply_layout(fig, "Per-ticker equity: each ticker's contribution", 380)


def builders(run: RunFiles) -> dict[str, Callable[[], go.Figure | None]]:
    """This section's charts, for `page.build_figures`."""
    has_trades = len(run.trades) > 0 and run.equity is not None and len(run.equity) > 0
    sessions = run.equity.index if run.equity is not None else pd.DatetimeIndex([])
    return {
        "pnl_costs": lambda: (
            fig_pnl_costs(attribution.cumulative_pnl(run.trades, sessions)) if has_trades else None
        ),
        "side_pnl": lambda: fig_side_pnl(run.trades, sessions) if has_trades else None,
        "exposure": lambda: (
            fig_exposure(exposure.session_exposure(run.exposure_bars))
            if run.exposure_bars is not None and len(run.exposure_bars)
            else None
        ),
        "ticker_equity": lambda: (
            fig_ticker_equity(attribution.ticker_equity(run.ticker_pnl, run.capital))
            if run.ticker_pnl is not None and not run.ticker_pnl.empty
            else None
        ),
    }


def _money(v: object) -> str:
    return show(v, digits=0) if v is not None else "n/a"


def side_table(trades: pd.DataFrame) -> str:
    """Gross, slippage, commissions and net PnL of the long, the short and all trades."""
    df = attribution.pnl_by_side(trades)
    pct = lambda v: show(v, "pct")  # noqa: E731
    formats = {k: _money for k in (*attribution.COMPONENTS, "net_per_trade")}
    formats.update(cost_share_of_gross=pct, win_rate=pct, side=str)
    df = df.rename(columns=lambda c: c.replace("_", " "))
    formats = {k.replace("_", " "): f for k, f in formats.items()}
    formats["net per trade"] = lambda v: show(v, digits=2)
    return '<div id="pnl-by-side">' + html_table(df, formats) + "</div>"


def costs_text(trades: pd.DataFrame, exposure_bars: pd.DataFrame | None) -> str:
    """One paragraph: the gross, what each cost took, the net; the mean exposure."""
    a = attribution.pnl_by_side(trades).set_index("side").loc["all"]
    share = a["cost_share_of_gross"]
    took = (
        f"{show(share, 'pct')} of it" if share is not None else "more than all of it"
    )  # a non-positive gross: the costs turned nothing or a loss into a larger loss
    text = (
        f"<p id=costs-text>Before costs the {int(a['trades']):,} trades made "
        f"${_money(a['gross'])}; slippage (spread included) ${_money(a['slippage'])} and "
        f"commissions ${_money(a['commissions'])} took {took}, leaving "
        f"<b>${_money(a['net'])}</b> net."
    )
    if exposure_bars is not None and len(exposure_bars):
        e = exposure.exposure_summary(exposure_bars)
        text += (
            f" Exposure over every bar: gross {show(e['gross_mean'], 'pct')} on average "
            f"(peak {show(e['gross_max'], 'pct')}), net {show(e['net_mean'], 'pct')} (long "
            f"{show(e['long_mean'], 'pct')}, short {show(e['short_mean'], 'pct')}); in the "
            f"market {show(e['in_market'], 'pct')} of the bars."
        )
    return text + "</p>"


def pnl_section(run: RunFiles, fig: Callable[[str], str]) -> str:
    """The section's HTML; `fig(key)` embeds a chart built by `builders`."""
    if not len(run.trades):
        return "<p>No trades: nothing to attribute.</p>"
    return (
        costs_text(run.trades, run.exposure_bars)
        + side_table(run.trades)
        + fig("pnl_costs")
        + fig("side_pnl")
        + fig("exposure")
        + fig("ticker_equity")
        + '<p class="note">Realized PnL is booked on the exit session; the equity curve marks '
        + "open positions every night, so they differ only while a position is held across "
        + "sessions. Gross = at the bar prices the fills were planned at; slippage = what the "
        + "fills cost against them.</p>"
        + missing_note(run, *FIGURES)
    )
