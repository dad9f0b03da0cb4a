"""What the pooled book made and what it cost: the portfolio's trading statistics, each
ticker's share of the PnL and its concentration, the commissions and slippage paid, and the
check of the cost schedule against the capital (a warning when minimum commissions or per-share
costs would eat the edge).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vpt_ray.backtest.attribution import trade_costs
from vpt_ray.backtest.stats import trading_stats

if TYPE_CHECKING:  # pragma: no cover
    pass

# The plan's cash budget: large enough that only the volume cap ever limits a planned entry.
from vpt_ray.backtest.portfolio import PortfolioResult, PortfolioSettings


def portfolio_stats(result: PortfolioResult) -> dict:
    """`trading_stats` of the portfolio (Sharpe etc. on daily returns, max drawdown intraday on
    the bar-level equity) plus its size: tickers, planned and skipped round trips.

    exposure: the mean gross exposure (sum of |notional| / equity) over the clock's bars;
    turnover: traded value of all fills / capital."""
    t = result.trades
    traded = float((t["shares"] * (t["entry_price"] + t["exit_price"])).sum()) if len(t) else 0.0
    gross = result.gross.to_numpy()
    stats = trading_stats(
        result.daily_equity,
        t,
        exposure=float(np.nanmean(gross)) if len(gross) and np.isfinite(gross).any() else 0.0,
        turnover=traded / result.capital,
        initial_equity=result.capital,
        bar_equity=result.bar_equity,
    )
    stats["capital"] = result.capital
    stats["tickers"] = len(result.planned)
    stats["trades_planned"] = int(sum(result.planned.values()))
    stats["trades_skipped"] = int(sum(result.skipped.values()))
    return stats


def per_ticker_stats(result: PortfolioResult) -> dict[str, dict]:
    """Each ticker's contribution to the portfolio: `trading_stats` of capital + its cumulative
    PnL by session (so total_return = its PnL / the portfolio's capital, Sharpe = the Sharpe of
    its daily contributions), plus pnl (net dollars), pnl_share (of the portfolio's net PnL; None
    when that is not positive), trades skipped and exposure (share of its bars in a position)."""
    t = result.trades
    by_ticker = dict(tuple(t.groupby("ticker", observed=False))) if len(t) else {}
    total = float(t["pnl"].sum()) if len(t) else 0.0
    empty = pd.DataFrame({"pnl": [], "return": [], "commission": []})
    out = {}
    for name in result.planned:
        trades = by_ticker.get(name, empty)
        path = result.capital + result.ticker_pnl[name]
        held = float(trades["bars_held"].sum()) if len(trades) else 0.0
        traded = (
            float((trades["shares"] * (trades["entry_price"] + trades["exit_price"])).sum())
            if len(trades)
            else 0.0
        )
        s = trading_stats(
            path,
            trades,
            exposure=held / result.bars[name] if result.bars[name] else 0.0,
            turnover=traded / result.capital,
            initial_equity=result.capital,
        )
        pnl = float(trades["pnl"].sum()) if len(trades) else 0.0
        s["pnl"] = pnl
        s["pnl_share"] = pnl / total if total > 0 else None
        s["trades_skipped"] = result.skipped[name]
        out[name] = s
    return out


def concentration(per_ticker: dict[str, dict]) -> dict:
    """Who made the PnL: top-1 and top-5 tickers' share of the net PnL (None when the portfolio
    made none), the share of tickers that made money, and the median ticker Sharpe."""
    pnl = pd.Series({t: s["pnl"] for t, s in per_ticker.items()}, dtype=float)
    total = float(pnl.sum())
    ranked = pnl.sort_values(ascending=False)
    sharpes = [s["sharpe"] for s in per_ticker.values() if s.get("sharpe") is not None]
    top = str(ranked.index[0]) if len(ranked) else None
    return {
        "pnl": total,
        "top_ticker": top,
        "top_ticker_pnl": float(ranked.iloc[0]) if len(ranked) else None,
        "top_ticker_share": float(ranked.iloc[0]) / total if total > 0 and len(ranked) else None,
        "top5_share": float(ranked.iloc[:5].sum()) / total if total > 0 and len(ranked) else None,
        "tickers_profitable_share": float((pnl > 0).mean()) if len(pnl) else None,
        "median_ticker_sharpe": float(np.median(sharpes)) if sharpes else None,
    }


def cost_section(result: PortfolioResult) -> dict:
    """Costs against what the trades made before them: commissions and slippage (spread
    included) in dollars, their share of the gross PnL, and per fill in bps of the notional."""
    t = result.trades
    if not len(t):
        return {"gross_pnl": 0.0, "commissions": 0.0, "slippage": 0.0, "total": 0.0,
                "net_pnl": 0.0, "cost_share_of_gross": None, "commission_bps_per_fill": None,
                "cost_bps_per_fill": None}  # fmt: skip
    parts = trade_costs(t).sum()  # the definitions: `vpt_ray.backtest.attribution`
    gross, slip, comm = float(parts["gross"]), float(parts["slippage"]), float(parts["commissions"])
    notional = float((t["shares"] * (t["entry_price"] + t["exit_price"])).sum())  # both fills
    return {
        "gross_pnl": gross,
        "commissions": comm,
        "slippage": slip,
        "total": comm + slip,
        "net_pnl": float(t["pnl"].sum()),
        "cost_share_of_gross": (comm + slip) / gross if gross > 0 else None,
        "commission_bps_per_fill": comm / notional * 1e4 if notional else None,
        "cost_bps_per_fill": (comm + slip) / notional * 1e4 if notional else None,
    }


def cost_check(
    settings: PortfolioSettings, n_tickers: int, max_cost_bps: float, prices: dict[str, float]
) -> dict:
    """Is the capital large enough for the commission schedule? The expected position is the
    full-book one (capital x `settings.weight(n_tickers)`, every ticker held at once: the
    smallest regular size), at each ticker's typical price; its commission per fill in bps of the
    position is max(min_commission / position, commission_per_share / price) (the first part
    alone when no prices are known yet: before the data is read). `capital_needed`: the capital
    that brings the minimum-commission part under `max_cost_bps` (None if it already is);
    `per_share_over`: tickers whose per-share commission alone exceeds it (capital cannot fix).
    `warn` when the median ticker's expected commission exceeds the limit."""
    w = settings.weight(n_tickers)
    position = settings.capital * w
    limit = max_cost_bps * 1e-4
    bps = {
        t: max(settings.min_commission / position, settings.commission_per_share / p) * 1e4
        for t, p in prices.items()
        if p > 0
    } or {"(any)": settings.min_commission / position * 1e4}
    over = sorted(t for t, v in bps.items() if v > max_cost_bps)
    per_share_over = sorted(
        t for t, p in prices.items() if p > 0 and settings.commission_per_share / p > limit
    )
    min_part = settings.min_commission / position
    needed = (
        math.ceil(settings.min_commission / (limit * w) / 1000.0) * 1000.0
        if min_part > limit and limit > 0
        else None
    )
    typical = float(np.median(list(bps.values())))
    return {
        "max_cost_bps": max_cost_bps,
        "expected_position": position,
        "expected_commission_bps": typical,
        "tickers_over": over,
        "per_share_over": per_share_over,
        "capital_needed": needed,
        "warn": typical > max_cost_bps,  # the typical (median) ticker, not the cheapest stock
    }


def cost_warning(check: dict, capital: float) -> str | None:
    """The log and summary line for a `cost_check` that failed (None when it passed)."""
    if not check["warn"]:
        return None
    over = check["tickers_over"]
    who = "every ticker" if over == ["(any)"] else f"{len(over)} tickers"
    parts = [
        f"expected commission per fill {check['expected_commission_bps']:.2f} bps (median "
        f"ticker) of a ${check['expected_position']:,.0f} position (every ticker held at once); "
        f"{who} over backtest.max_cost_bps = {check['max_cost_bps']:g}"
    ]
    if check["capital_needed"]:
        parts.append(
            f"the minimum commission is the cause: backtest.capital >= "
            f"{check['capital_needed']:,.0f} (now {capital:,.0f}) brings it under the limit"
        )
    if check["per_share_over"]:
        parts.append(
            f"{len(check['per_share_over'])} tickers pay more than that per share alone "
            f"({', '.join(check['per_share_over'][:5])}...): capital cannot fix it, a cheaper "
            "commission schedule or fewer trades can"
        )
    return "costs: " + "; ".join(parts)
