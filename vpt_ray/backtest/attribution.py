"""Where the PnL went: each filled round trip's PnL before costs, its slippage and commissions,
by side and over time, and each ticker's equity contribution.

- gross PnL of a trade: side x shares x (exit reference - entry reference), the reference prices
  being the bar prices the fills were planned at (before slippage and spread);
- slippage (spread included): side x shares x ((entry fill - entry reference) - (exit fill - exit
  reference)), what the fills cost against those references;
- commissions: both fills' (with the minimum);
- net PnL = gross - slippage - commissions = side x shares x (exit fill - entry fill) -
  commissions, the trades table's `pnl` (checked in `tests/test_attribution.py`).

Over time the components are realized: booked on the trade's exit session (New York date), so
their cumulative sums end at the totals of `portfolio_stats.cost_section`. Positions held across
sessions (daily bars) are booked when they close; the daily equity marks them every night.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COMPONENTS = ("gross", "slippage", "commissions", "net")


def trade_costs(trades: pd.DataFrame) -> pd.DataFrame:
    """Per trade: gross, slippage, commissions and net PnL in dollars (module docstring)."""
    missing = {"side", "shares", "entry_price", "exit_price", "entry_ref", "exit_ref",
               "commission", "pnl"} - set(trades.columns)  # fmt: skip
    if missing:
        raise ValueError(f"trades: missing columns {sorted(missing)} for the PnL attribution")
    n = trades["shares"].to_numpy(np.float64)
    side = trades["side"].to_numpy(np.float64)
    entry_ref = trades["entry_ref"].to_numpy(np.float64)
    exit_ref = trades["exit_ref"].to_numpy(np.float64)
    gross = side * n * (exit_ref - entry_ref)
    entry_slip = trades["entry_price"].to_numpy(np.float64) - entry_ref
    exit_slip = trades["exit_price"].to_numpy(np.float64) - exit_ref
    slip = side * n * (entry_slip - exit_slip)
    return pd.DataFrame(
        {
            "gross": gross,
            "slippage": slip,
            "commissions": trades["commission"].to_numpy(np.float64),
            "net": trades["pnl"].to_numpy(np.float64),
        },
        index=trades.index,
    )


def pnl_by_side(trades: pd.DataFrame) -> pd.DataFrame:
    """Rows long, short, all: trades, gross, slippage, commissions, net (dollars), costs as a
    share of the gross (None unless the gross is positive), win rate and mean net PnL per trade."""
    costs = trade_costs(trades) if len(trades) else pd.DataFrame(columns=list(COMPONENTS))
    side = trades["side"].to_numpy() if len(trades) else np.zeros(0)
    rows = []
    for name, mask in (("long", side > 0), ("short", side < 0), ("all", np.ones(len(side), bool))):
        c = costs[mask]
        gross = float(c["gross"].sum())
        cost = float(c["slippage"].sum() + c["commissions"].sum())
        rows.append(
            {
                "side": name,
                "trades": int(mask.sum()),
                **{k: float(c[k].sum()) for k in COMPONENTS},
                "cost_share_of_gross": cost / gross if gross > 0 else None,
                "win_rate": float(np.mean(c["net"] > 0)) if len(c) else None,
                "net_per_trade": float(c["net"].mean()) if len(c) else None,
            }
        )
    return pd.DataFrame(rows)


def exit_sessions(trades: pd.DataFrame) -> pd.DatetimeIndex:
    """Each trade's exit session: its exit time's New York date (naive, like the daily equity)."""
    from vpt_ray.backtest.engine import SESSION_TZ

    local = pd.to_datetime(trades["exit_time"]).dt.tz_convert(SESSION_TZ)
    return pd.DatetimeIndex(local.dt.tz_localize(None).dt.normalize(), name="session")


def cumulative_pnl(trades: pd.DataFrame, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """Cumulative gross, slippage, commissions and net PnL by exit session over `sessions` (the
    daily equity's index): 0 before the first exit, flat on sessions without one."""
    if not len(trades):
        return pd.DataFrame(0.0, index=sessions, columns=list(COMPONENTS))
    daily = trade_costs(trades).groupby(exit_sessions(trades).to_numpy()).sum()
    return daily.reindex(sessions, fill_value=0.0).cumsum()


def ticker_equity(ticker_pnl: pd.DataFrame, capital: float, top: int = 5) -> pd.DataFrame:
    """Each ticker's contribution as a share of the capital by session (cumulative net PnL /
    capital, open positions marked at the close), the `top` best and `top` worst by their final
    PnL, the rest summed into one column "other N tickers"; best first."""
    if ticker_pnl.empty:
        return ticker_pnl
    final = ticker_pnl.iloc[-1].sort_values(ascending=False)
    if len(final) <= 2 * top:
        keep = list(final.index)
    else:
        keep = list(final.index[:top]) + list(final.index[-top:])
    out = ticker_pnl[keep] / capital
    rest = [t for t in ticker_pnl.columns if t not in keep]
    if rest:
        out[f"other {len(rest)} tickers"] = ticker_pnl[rest].sum(axis=1) / capital
    return out
