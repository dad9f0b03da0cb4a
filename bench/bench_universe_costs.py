"""Can the known truth pay phase 5's costs? The oracle traded on the $10-20 universe, by entry
thresholds and holding period.

    .venv/bin/python bench/bench_universe_costs.py --cache DIR [--thresholds 0.53,0.55,0.57]
                                                   [--holds 15,30] [--model-dir DIR]
                                                   [--set k=v ...]

Phase 5 backtests on stocks at $10-20, where the per-share commission ($0.0035, $0.35 minimum)
is ~2.3 bps of every fill whatever the capital. This builds phase 5's universe as a run does
(`stages.backtest_universe`: the selection before `backtest.start`, the bars and features;
cached in `--cache` so a rerun starts in seconds), computes the synthetic market's true label
probabilities for every selected ticker (`validation.oracle`, no model), and trades them with
the pipeline's own engine and pool (`backtest.plans`, `backtest.portfolio`) for each long
threshold t (short threshold 1 - t) and holding period. Printed per cell: trades, gross PnL,
costs and their share of gross, commission bps per fill, net return, Sharpe (daily, SE) and the
share of the oracle's expected accuracy edge the entries carry. With `--model-dir` (a phase 4
model: phase 5 trains on the same tickers and window) the same grid is run on that model's
predictions for the universe's bars, next to the oracle's: a model's probabilities are shrunk
toward 0.5, so a threshold the oracle clears may leave a real model few trades. The shipped
phase 5 config should
be a cell whose Sharpe clears 1.0 by its SE: then the demo can show the phase working, and a
model that cannot pay its costs is told apart from one that can.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True, help="workspace kept between runs")
    ap.add_argument("--thresholds", default="0.53,0.55,0.57,0.6")
    ap.add_argument("--holds", default="15,30,60")
    ap.add_argument("--model-dir", type=Path, default=None, help="also trade this model")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from vpt_ray.backtest.engine import SimSettings
    from vpt_ray.backtest.plans import plan_trades
    from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
    from vpt_ray.backtest.portfolio_stats import cost_section, portfolio_stats
    from vpt_ray.backtest.run import predict
    from vpt_ray.core.config import load_config
    from vpt_ray.core.resources import init_ray
    from vpt_ray.data.chain import synthetic_params
    from vpt_ray.data.local import read_bars
    from vpt_ray.features.store import read_ticker_window
    from vpt_ray.model.train import load_model
    from vpt_ray.pipeline import resume, stages
    from vpt_ray.validation.oracle import oracle_frame
    from vpt_ray.validation.uncertainty import sharpe_se_annual

    ws = args.cache.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    cfg = load_config(
        5,
        overrides=[
            f"data.dir={ws / 'data'}",
            f"paths.artifacts={ws / 'artifacts'}",
            "data.sources=[synthetic]",
            *args.overrides,
        ],
    )
    capital = cfg.backtest.capital
    print(f"load average {os.getloadavg()[0]:.2f}; phase 5 universe, capital ${capital:,.0f}")
    init_ray(cfg.hardware)
    t0 = time.monotonic()
    section, data, store = stages.backtest_universe(
        cfg, ws / "universe_features", resume.cache_dir(cfg, ws)
    )
    print(f"universe: {section['selected_count']} tickers ({time.monotonic() - t0:.0f} s)")
    params = synthetic_params(cfg)
    start, end = cfg.backtest.start, cfg.backtest.end
    truth, bars = {}, {}
    for t, td in data.tickers.items():
        frame = oracle_frame(params, t, start, end, cfg.labels.horizon)
        truth[t] = frame["p_trade"].to_numpy()
        bars[t] = read_bars(td.path, start, end, cfg.data.vwap_tolerance)
        if len(bars[t]) != len(frame):
            raise SystemExit(f"{t}: bars and the oracle's frame differ; delete {ws} and rerun")
    p_all = np.concatenate([frame_p[~np.isnan(frame_p)] for frame_p in truth.values()])
    print(
        f"oracle expected accuracy {np.mean(np.maximum(p_all, 1 - p_all)):.4f} on "
        f"{len(p_all):,} bars (signal {params.signal_strength})"
    )
    signals = {"oracle": truth}
    if args.model_dir is not None:
        booster, meta = load_model(args.model_dir)
        names = list(meta["feature_names"])
        signals["model"] = {}
        for t in bars:
            feats = read_ticker_window(store[t]["path"], start, end, names)
            signals["model"][t] = predict(booster, feats[names].to_numpy(np.float32), names)
        p_m = np.concatenate(list(signals["model"].values()))
        print(
            f"model {args.model_dir.name}: share of bars with p >= t or <= 1 - t: "
            + ", ".join(
                f"{t}: {np.mean((p_m >= t) | (p_m <= 1 - t)):.3%}"
                for t in (float(x) for x in args.thresholds.split(","))
            )
        )
    pool = PortfolioSettings.from_config(cfg.backtest)
    print(
        f"{'signal':>6} {'long':>5} {'hold':>4} {'trades':>7} {'gross $':>10} {'costs $':>10} "
        f"{'cost/gross':>10} {'comm bps':>8} {'net ret':>8} {'Sharpe':>7} {'SE':>5}"
    )
    grid = [
        (who, float(thr), int(hold))
        for who in signals
        for thr in args.thresholds.split(",")
        for hold in args.holds.split(",")
    ]
    for who, thr, hold in grid:
        bt = cfg.backtest.model_copy(update={"long_threshold": thr, "short_threshold": 1 - thr})
        sim = SimSettings.from_config(bt, capital=bt.capital, hold_bars=hold, daily=False)
        plans = {
            t: plan_trades(
                bars[t], np.nan_to_num(signals[who][t], nan=0.5), sim, bt.vol_lookback_bars
            )
            for t in bars
        }
        result = simulate_portfolio(plans, pool)
        s, c = portfolio_stats(result), cost_section(result)
        path = np.concatenate(([result.capital], result.daily_equity.to_numpy(float)))
        se = sharpe_se_annual(path[1:] / path[:-1] - 1.0)
        share = c["cost_share_of_gross"]
        print(
            f"{who:>6} {thr:5.2f} {hold:4d} {s.get('trades', 0):7d} {c['gross_pnl']:10,.0f} "
            f"{c['total']:10,.0f} {'n/a' if share is None else f'{share:.0%}':>10} "
            f"{c['commission_bps_per_fill'] or 0:8.2f} {s['total_return']:8.2%} "
            f"{s['sharpe'] or 0.0:7.2f} {se:5.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
