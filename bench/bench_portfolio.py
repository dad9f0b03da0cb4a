"""The portfolio pass at phase 4's size, against the equal-sleeve roll-up it replaced, in one run.

Two questions, one set of inputs (120 synthetic tickers x 6 months of minute bars, traded on the
known truth: the oracle's probabilities at `synthetic.signal_strength`, so the edge per ticker is
the same by construction):

1. Time. The driver's work after the per-ticker Ray tasks: before, `combine` summed the sleeves'
   daily equity; now `simulate_portfolio` merges every ticker's bars onto one clock and sizes
   every planned trade, then the statistics (portfolio, per ticker, concentration, costs). The
   per-ticker work (done in Ray tasks, not timed against each other) is printed too: the old
   task simulated a sleeve, the new one plans the trades (`plan_trades`, the same engine call).
2. Scale. Phase 3's shape (the first 30 tickers) against phase 4's (all 120), each with its
   phase's capital ($20k a ticker at a full book) and with the $100k both had before issue 21:
   Sharpe, return, intraday and daily max drawdown, top-ticker share. The sleeves are shown for
   the same inputs. Adding tickers at the same edge must not lower the portfolio's Sharpe.

    .venv/bin/python bench/bench_portfolio.py [--tickers 120] [--small 30] [--signal 0.75]
                                              [--repeat 3] [--cache DIR]

Bars and oracle probabilities are generated once (~1-3 s a ticker on a shared core) and cached
as parquet in --cache; later runs time only the backtests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

START, END = dt.date(2024, 7, 8), dt.date(2024, 12, 31)  # phase 4's out-of-sample window


def inputs(n: int, signal: float, cache: Path) -> dict[str, pd.DataFrame]:
    """Bars plus the oracle's trade probability (`p_trade`) per ticker, cached as parquet."""
    from vpt_ray.data.synthetic import SyntheticParams, generate_ticker
    from vpt_ray.validation.oracle import oracle_frame

    params = SyntheticParams(seed=7, signal_strength=signal, missing_minute_rate=0.002)
    out, made, t0 = {}, 0, time.perf_counter()
    for i in range(n):
        t = f"P{i:03d}"
        path = cache / f"{t}_{signal}_{START}_{END}.parquet"
        if not path.exists():
            bars = generate_ticker(params, t, START, END)
            truth = oracle_frame(params, t, START, END, 15)
            if not (bars["timestamp"].to_numpy() == truth["timestamp"].to_numpy()).all():
                raise SystemExit(f"{t}: oracle rows differ from the bars")
            bars.assign(p_trade=truth["p_trade"].to_numpy()).to_parquet(path)
            made += 1
        out[t] = pd.read_parquet(path)
    if made:
        print(f"generated {made} tickers in {time.perf_counter() - t0:.0f} s into {cache}")
    return out


def best_of(repeat: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    from vpt_ray.backtest.engine import SimSettings, simulate
    from vpt_ray.backtest.plans import plan_trades
    from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
    from vpt_ray.backtest.portfolio_stats import (
        concentration,
        cost_section,
        per_ticker_stats,
        portfolio_stats,
    )
    from vpt_ray.backtest.sleeves import combine
    from vpt_ray.backtest.stats import summarize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickers", type=int, default=120)
    ap.add_argument("--small", type=int, default=30)
    ap.add_argument("--signal", type=float, default=0.75)  # the demo default
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vpt_bench_pool")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    data = inputs(args.tickers, args.signal, args.cache)
    n_bars = sum(len(b) for b in data.values())
    sim = SimSettings(hold_bars=15)  # the base config's rules and costs

    def sleeves(names: list[str], capital: float) -> dict:
        s = sim.replace(capital=capital / len(names))
        return {t: simulate(data[t], data[t]["p_trade"].to_numpy(), s) for t in names}

    def plans(names: list[str]) -> dict:
        return {t: plan_trades(data[t], data[t]["p_trade"].to_numpy(), sim) for t in names}

    names = list(data)
    capital = 20_000.0 * len(names)
    sleeves(names[:2], 1e5), plans(names[:2])  # load the kernels from numba's cache
    simulate_portfolio(plans(names[:2]), PortfolioSettings())
    t_sleeve_tasks, sleeve_results = best_of(1, lambda: sleeves(names, capital))
    t_plan_tasks, ticker_plans = best_of(1, lambda: plans(names))

    def old_rollup():
        eq, st = combine(sleeve_results, capital)
        return st, {t: summarize(r) for t, r in sleeve_results.items()}

    def new_pass():
        r = simulate_portfolio(ticker_plans, PortfolioSettings(capital=capital))
        per = per_ticker_stats(r)
        return r, portfolio_stats(r), concentration(per), cost_section(r)

    def kernel_only():
        return simulate_portfolio(ticker_plans, PortfolioSettings(capital=capital))

    t_old, _ = best_of(args.repeat, old_rollup)
    t_new, (res, _, _, _) = best_of(args.repeat, new_pass)
    t_kernel, _ = best_of(args.repeat, kernel_only)
    load = os.getloadavg()
    print(
        f"\n{len(names)} tickers x {START}..{END}: {n_bars / 1e6:.2f} M bars, "
        f"{len(res.bar_equity):,} clock steps, {sum(p.n_trades for p in ticker_plans.values()):,} "
        f"planned trades; load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min)"
    )
    print(f"{'driver work after the tasks (best of ' + str(args.repeat) + ')':<52} seconds")
    print(f"  {'baseline: equal-sleeve roll-up (combine + per ticker)':<50} {t_old:8.3f}")
    print(f"  {'portfolio pass + statistics (simulate_portfolio ...)':<50} {t_new:8.3f}")
    print(f"  {'  of which the one-clock kernel':<50} {t_kernel:8.3f}")
    print(f"{'per-ticker work in the Ray tasks (all tickers, one core)':<52}")
    print(f"  {'baseline: simulate a sleeve':<50} {t_sleeve_tasks:8.3f}")
    print(f"  {'plan_trades':<50} {t_plan_tasks:8.3f}")

    print(
        f"\nknown truth (oracle probabilities, signal_strength {args.signal}): phase 3 -> 4 shapes"
    )
    head = f"  {'book':<40} {'Sharpe':>7} {'return':>8} {'max DD':>8} {'DD daily':>9} {'top-1':>7}"
    print(head)

    def row(label: str, stats: dict, top: float | None) -> None:
        def f(v, p=False):
            return "n/a" if v is None else (f"{v:.2%}" if p else f"{v:.2f}")

        print(
            f"  {label:<40} {f(stats['sharpe']):>7} {f(stats['total_return'], True):>8} "
            f"{f(stats['max_drawdown'], True):>8} {f(stats.get('max_drawdown_daily'), True):>9} "
            f"{f(top, True):>7}"
        )

    for n in (args.small, len(names)):
        sub = names[:n]
        for cap in (20_000.0 * n, 100_000.0):
            for sizing in ("volatility", "equal"):
                pool = PortfolioSettings(capital=cap, sizing=sizing)
                r = simulate_portfolio({t: ticker_plans[t] for t in sub}, pool)
                c = concentration(per_ticker_stats(r))
                row(f"pool ({sizing}) {n} tickers, ${cap:,.0f}", portfolio_stats(r),
                    c["top_ticker_share"])  # fmt: skip
            sl = sleeves(sub, cap)
            _, sst = combine(sl, cap)
            pnl = pd.Series({t: x.trades["pnl"].sum() for t, x in sl.items()})
            top = float(pnl.max() / pnl.sum()) if pnl.sum() > 0 else None
            row(f"sleeves {n} tickers, ${cap:,.0f}", sst, top)
    print(
        "\nthe pool sizes each entry from the equity at that moment (equal weight over the open "
        "positions, scaled by reference vol / the ticker's vol with sizing volatility, <= "
        "backtest.max_ticker_weight, gross <= 1); sleeves split the capital once"
    )


if __name__ == "__main__":
    main()
