"""The same planned trades at a multiple of the configured costs: does the result survive
higher costs?

Why it exists: commissions and slippage take 65-75% of the gross PnL in every phase as shipped,
so a verdict that holds only at exactly the configured costs is fragile. The plan (which trades,
when) does not depend on costs; only the fill prices and the commissions do, and so the sizes the
pool gives them. Scaling both and re-running the pool (`simulate_portfolio`, ~0.4 s at phase 4's
size) gives the exact result of the same signals at k x costs:

- every fill's adverse offset from its reference price (slippage and, with `half_spread`, the
  half range) x k: fill = ref + k (fill - ref);
- `commission_per_share` and `min_commission` x k.
"""

from __future__ import annotations

import dataclasses

from vpt_ray.backtest.plans import TradePlan
from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
from vpt_ray.backtest.portfolio_stats import portfolio_stats

MULTIPLIERS = (2.0, 3.0)


def with_costs(
    plans: dict[str, TradePlan], settings: PortfolioSettings, k: float
) -> tuple[dict[str, TradePlan], PortfolioSettings]:
    """`plans` and `settings` with every cost multiplied by `k` (>= 0)."""
    if not k >= 0:
        raise ValueError(f"with_costs: k = {k!r}: must be >= 0")
    scaled = {
        t: dataclasses.replace(
            p,
            entry_price=p.entry_ref + k * (p.entry_price - p.entry_ref),
            exit_price=p.exit_ref + k * (p.exit_price - p.exit_ref),
        )
        for t, p in plans.items()
    }
    return scaled, dataclasses.replace(
        settings,
        commission_per_share=settings.commission_per_share * k,
        min_commission=settings.min_commission * k,
    )


def cost_stress(
    plans: dict[str, TradePlan], settings: PortfolioSettings, multipliers=MULTIPLIERS
) -> dict[str, dict]:
    """{"2": {sharpe, total_return, trades, commissions}, "3": ...}: the pool's statistics with
    the costs multiplied by each of `multipliers` (keys: the multiplier, JSON-ready)."""
    out = {}
    for k in multipliers:
        s = portfolio_stats(simulate_portfolio(*with_costs(plans, settings, k)))
        out[f"{k:g}"] = {key: s[key] for key in ("sharpe", "total_return", "trades", "commissions")}
    return out
