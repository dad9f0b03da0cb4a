"""Bars per second of vpt_ray's one-ticker backtest vs vectorbt's `Portfolio.from_signals`.

Same work for both: 5 tickers x 2 years of random-walk minute bars (04:00-20:00 New York, 960
bars a session, 504 sessions = 483,840 bars a ticker) and the same model probabilities. Each is
timed cold (its first call in a fresh subprocess, as in a new Ray worker; median of --cold-runs;
the import is reported apart) and warm (best of --repeat calls in this process). vectorbt runs in
two forms:

- "vectorbt rules": our exact rules (next-bar-open entry, hold-bars exit, session-end close-out
  at the close) through a signal function on 3 steps per bar; its trade count and total return
  are checked against ours, so the two really did the same work.
- "vectorbt plain": its simplest, fastest form on the same signals (entry/exit arrays shifted a
  bar, exit on the opposite signal or the session's last bar, all at the open): no holding
  period, so not the same trades, but the fastest vectorbt gets on this data.

The engine's time is a whole `simulate()` call (validation, sessions, trades DataFrame); vectorbt's
is the `from_signals` call alone (its inputs are prepared outside the timer). Run:

    .venv/bin/python bench/bench_backtest.py [--tickers 5] [--sessions 504] [--repeat 5]
                                             [--cold-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
BASELINE = (
    "baseline (issue 5): vectorbt 1.2 from_signals ~10 M bars/s warm on this work, ~4 s "
    "compilation on its first call; targets: engine warm >= vectorbt, cold first call < 1 s"
)
PER_SESSION = 960  # 04:00-20:00 New York, one bar a minute
# Settings vectorbt can express exactly: a flat fee per order (no per-share part), sizes set by
# the volume cap (capital large enough that the equity budget never binds).
SETTINGS = dict(
    capital=1_000_000.0,
    long_threshold=0.53,
    short_threshold=0.47,
    hold_bars=15,
    commission_per_share=0.0,
    min_commission=0.35,
    slippage_bps=0.5,
    max_volume_fraction=0.05,
)


def make_market(tickers: int, sessions: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random-walk OHLCV minute bars and probabilities, as 2-D arrays (bars x tickers)."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2023-01-02", periods=sessions).values.astype("datetime64[m]")
    local = (days[:, None] + np.timedelta64(240, "m") + np.arange(PER_SESSION)).ravel()
    ts = pd.DatetimeIndex(local).tz_localize("America/New_York").tz_convert("UTC")
    n, k = len(ts), tickers
    close = 15.0 * np.exp(np.cumsum(rng.normal(0, 0.0008, (n, k)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.0003, (n, k)))
    return {
        "timestamp": ts.as_unit("ns").asi8,
        "open": open_,
        "high": np.maximum(open_, close) * (1 + rng.uniform(0, 0.0006, (n, k))),
        "low": np.minimum(open_, close) * (1 - rng.uniform(0, 0.0006, (n, k))),
        "close": close,
        "volume": rng.integers(100, 20_000, (n, k)).astype(np.float64),
        "proba": rng.uniform(0.40, 0.60, (n, k)),
    }


def frames(data: dict[str, np.ndarray]) -> list[pd.DataFrame]:
    ts = pd.DatetimeIndex(data["timestamp"].astype("datetime64[ns]")).tz_localize("UTC")
    cols = ("open", "high", "low", "close", "volume")
    return [
        pd.DataFrame({"timestamp": ts, **{c: data[c][:, i] for c in cols}})
        for i in range(data["open"].shape[1])
    ]


# --- vectorbt, given the same bars and probabilities ---------------------------------------


def vbt_rules_inputs(data: dict[str, np.ndarray], s) -> dict:
    """from_signals arguments reproducing the engine's rules on 3 steps per bar (exits at the
    open, entry at the open, the close); see tests/test_backtest_engine.py for the proof."""
    from numba import njit

    @njit
    def rules_signal_nb(c, sig, same, last, entry_bar, hold_bars):
        j, phase, col = c.i // 3, c.i % 3, c.col
        side = 1 if c.position_now > 0 else -1 if c.position_now < 0 else 0
        if phase == 0 and side != 0 and j - entry_bar[col] >= hold_bars:
            return False, side == 1, False, side == -1
        if phase == 1 and side == 0 and j > 0 and same[j, col] and sig[j - 1, col] != 0:
            entry_bar[col] = j
            return sig[j - 1, col] == 1, False, sig[j - 1, col] == -1, False
        if phase == 2 and side != 0 and last[j, col]:
            return False, side == 1, False, side == -1
        return False, False, False, False

    same, last = _session_flags(data)
    o, c = data["open"], data["close"]
    price = np.stack([o, o, c], axis=1).reshape(3 * len(o), o.shape[1])
    p = data["proba"]
    sig = np.where(p >= s.long_threshold, 1, np.where(p <= s.short_threshold, -1, 0))
    return dict(
        close=price,
        price=price,
        signal_func_nb=rules_signal_nb,
        signal_args=(sig, same, last, np.full(o.shape[1], -1), s.hold_bars),
        size=np.repeat(np.floor(s.max_volume_fraction * data["volume"]), 3, axis=0),
        fixed_fees=s.min_commission,
        slippage=s.slippage_bps / 1e4,
        init_cash=s.capital,
    )


def vbt_plain_inputs(data: dict[str, np.ndarray], s) -> dict:
    """from_signals in its plain array form on the same signals (entries shifted one bar)."""
    same, last = _session_flags(data)
    p = data["proba"]
    up = np.zeros_like(p, bool)
    down = np.zeros_like(p, bool)
    up[1:] = (p[:-1] >= s.long_threshold) & same[1:]
    down[1:] = (p[:-1] <= s.short_threshold) & same[1:]
    return dict(
        close=data["close"],
        price=data["open"],
        entries=up,
        exits=down | last,
        short_entries=down,
        short_exits=up | last,
        size=np.floor(s.max_volume_fraction * data["volume"]),
        fixed_fees=s.min_commission,
        slippage=s.slippage_bps / 1e4,
        init_cash=s.capital,
    )


def _session_flags(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ts = pd.DatetimeIndex(data["timestamp"].astype("datetime64[ns]")).tz_localize("UTC")
    day = ts.tz_convert("America/New_York").normalize().asi8
    k = data["open"].shape[1]
    same = np.zeros((len(day), k), bool)
    same[1:] = (day[1:] == day[:-1])[:, None]
    last = np.ones((len(day), k), bool)
    last[:-1] = (day[1:] != day[:-1])[:, None]
    return same, last


# --- measurements ---------------------------------------------------------------------------


def time_engine(bars: list[pd.DataFrame], proba: np.ndarray, settings) -> tuple[float, list]:
    from vpt_ray.backtest.engine import simulate

    t = time.perf_counter()
    results = [simulate(b, proba[:, i], settings) for i, b in enumerate(bars)]
    return time.perf_counter() - t, results


def time_vbt(kwargs: dict):
    import vectorbt as vbt

    t = time.perf_counter()
    pf = vbt.Portfolio.from_signals(**kwargs)
    return time.perf_counter() - t, pf


def child(kind: str, data_path: str) -> None:
    """Cold measurement in a fresh process: import, then the first call on all tickers."""
    data = dict(np.load(data_path))
    bars, n = frames(data), data["open"].size
    out: dict = {"kind": kind}
    if kind.startswith("engine"):
        t = time.perf_counter()
        from vpt_ray.backtest.engine import SimSettings, simulate

        out["import_s"] = time.perf_counter() - t
        s = SimSettings(**SETTINGS)
        t, cpu = time.perf_counter(), time.process_time()
        simulate(bars[0], data["proba"][:, 0], s)
        out["first_call_s"] = time.perf_counter() - t
        out["first_call_cpu_s"] = time.process_time() - cpu
        seconds, _ = time_engine(bars[1:], data["proba"][:, 1:], s)
        out["all_s"] = out["first_call_s"] + seconds
    else:
        t = time.perf_counter()
        import vectorbt  # noqa: F401

        from vpt_ray.backtest.engine import SimSettings

        out["import_s"] = time.perf_counter() - t
        s = SimSettings(**SETTINGS)
        kwargs = vbt_rules_inputs(data, s) if kind == "vbt_rules" else vbt_plain_inputs(data, s)
        cpu = time.process_time()
        out["all_s"] = out["first_call_s"] = time_vbt(kwargs)[0]
        out["first_call_cpu_s"] = time.process_time() - cpu
    out["bars_per_s"] = n / out["all_s"]
    print(json.dumps(out))


def cold(kind: str, data_path: str, runs: int, env: dict | None = None) -> dict:
    """Median over `runs` fresh subprocesses (cold starts are noisy on a shared machine)."""
    outs = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--data", data_path],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"cold run {kind} failed:\n{proc.stderr[-3000:]}")
        outs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    keys = ("import_s", "first_call_s", "first_call_cpu_s", "all_s", "bars_per_s")
    return {k: float(np.median([o[k] for o in outs])) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickers", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=504, help="504 = 2 years")
    ap.add_argument("--repeat", type=int, default=5, help="warm calls; the best is reported")
    ap.add_argument("--cold-runs", type=int, default=3, help="fresh processes; median reported")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    sys.path.insert(0, str(ROOT))
    import numba
    import vectorbt as vbt

    from vpt_ray.backtest.engine import SimSettings

    data = make_market(args.tickers, args.sessions)
    n_bars = data["open"].size
    print(
        f"work: {args.tickers} tickers x {len(data['timestamp']):,} minute bars = {n_bars:,} bars"
    )
    print(f"numba {numba.__version__}, vectorbt {vbt.__version__}, pandas {pd.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "market.npz")
        np.savez(path, **data)
        cold("engine", path, 1)  # make sure numba's on-disk cache holds the kernel
        cold_runs = {
            "engine": cold("engine", path, args.cold_runs),
            # a fresh cache directory per run: numba compiles the kernels as on a new machine
            "engine (no numba cache)": cold("engine", path, 1, {"NUMBA_CACHE_DIR": tmp}),
            "vectorbt rules": cold("vbt_rules", path, args.cold_runs),
            "vectorbt plain": cold("vbt_plain", path, args.cold_runs),
        }

    s = SimSettings(**SETTINGS)
    bars = frames(data)
    rules, plain = vbt_rules_inputs(data, s), vbt_plain_inputs(data, s)
    warm: dict[str, float] = {}
    outputs: dict = {}
    for round_ in range(args.repeat + 1):  # round 0 compiles / loads caches; best of the rest
        for name, fn in (
            ("engine", lambda: time_engine(bars, data["proba"], s)),
            ("vectorbt rules", lambda: time_vbt(rules)),
            ("vectorbt plain", lambda: time_vbt(plain)),
        ):
            seconds, outputs[name] = fn()
            if round_:
                warm[name] = min(warm.get(name, np.inf), seconds)
    ours, theirs = outputs["engine"], outputs["vectorbt rules"]

    trades = sum(len(r.trades) for r in ours)
    vbt_trades = int(theirs.trades.count().sum())
    ret = np.array([r.equity.iloc[-1] / s.capital - 1 for r in ours])
    rel = float(np.max(np.abs(ret / theirs.total_return().to_numpy() - 1)))
    print(f"same work: engine {trades:,} trades, vectorbt rules {vbt_trades:,} trades; "
          f"total return per ticker agrees to {rel:.1e} relative")  # fmt: skip

    print()
    # cold: all tickers in a fresh process; its first call in wall and CPU seconds (CPU time
    # is what the call costs when the shared machine's other load is taken away)
    print(f"{'':26}{'warm M bars/s':>14}{'cold M bars/s':>14}{'1st call s':>11}"
          f"{'1st call CPU s':>15}{'import s':>9}")  # fmt: skip
    for name in ("engine", "engine (no numba cache)", "vectorbt rules", "vectorbt plain"):
        c = cold_runs[name]
        w = f"{n_bars / warm[name] / 1e6:14.1f}" if name in warm else f"{'':>14}"
        print(f"{name:26}{w}{c['bars_per_s'] / 1e6:14.2f}{c['first_call_s']:11.3f}"
              f"{c['first_call_cpu_s']:15.3f}{c['import_s']:9.2f}")  # fmt: skip
    best_vbt = min(warm["vectorbt rules"], warm["vectorbt plain"])
    print()
    print(f"engine warm / fastest vectorbt warm: {best_vbt / warm['engine']:.1f}x")
    print(BASELINE)


if __name__ == "__main__":
    main()
