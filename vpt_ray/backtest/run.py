"""Out-of-sample backtest on Ray: one task per ticker, results streamed back as they finish.

Each task receives references (the model bytes and config are put in the object store once),
predicts its ticker's out-of-sample bars, turns the predictions into the one-ticker engine's
planned round trips (`plans.plan_trades`: signals, entry/exit bars and fill prices, the volume
cap, every bar's close for marking) and returns that plan with the labelled predictions (for OOS
accuracy). The driver then sizes every ticker's plan from one pool of capital on one clock
(`portfolio.simulate_portfolio`). Tasks run
with `max_retries=0`, so an out-of-memory kill surfaces as `OutOfMemoryError` instead of retrying
forever.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import ray
import xgboost as xgb

from vpt_ray.backtest.engine import SimSettings, session_days
from vpt_ray.backtest.plans import TradePlan, plan_trades
from vpt_ray.backtest.tearsheet import daily_closes
from vpt_ray.core import storage
from vpt_ray.core.config import Config
from vpt_ray.core.node_memory import node_label
from vpt_ray.core.progress import track
from vpt_ray.core.resources import clamp_task_memory, release_freed_memory
from vpt_ray.data.local import read_bars
from vpt_ray.data.resample import resample_bars
from vpt_ray.features.store import read_ticker_window, window_task_memory

log = logging.getLogger(__name__)


def predict(booster: xgb.Booster, X: np.ndarray, names: list[str]) -> np.ndarray:
    """P(up) for each row; rows with missing features still get one (XGBoost handles NaN).

    `booster` may also be an ensemble (`vpt_ray.model.ensemble.EnsembleModel`), which averages its
    members' probabilities over the feature columns each member uses."""
    if len(X) == 0:
        return np.empty(0, dtype=np.float32)
    if not isinstance(booster, xgb.Booster):
        return booster.predict_proba(X, names)
    return booster.predict(xgb.DMatrix(X, feature_names=names))


def backtest_ticker(
    cfg: Config,
    booster: xgb.Booster,
    bars_path: str | storage.GcsPath,
    features_path: str | storage.GcsPath,
    names: list[str],
    start=None,
    end=None,
) -> dict:
    """Predict and plan one ticker's trades over [start, end] (default: the config's backtest
    window): {"plan": TradePlan, "y", "p", "fwd_ret", "timestamp" of the labelled bars}."""
    start = start or cfg.backtest.start
    end = end or cfg.backtest.end
    feats = read_ticker_window(features_path, start, end, names)
    bars = resample_bars(read_bars(bars_path, start, end, cfg.data.vwap_tolerance), cfg.data.bar)
    same = len(bars) == len(feats) and bool(
        (bars["timestamp"].to_numpy() == feats["timestamp"].to_numpy()).all()
    )
    if not same:
        raise ValueError(
            f"{bars_path}: bars and feature store disagree on {start}..{end}; rebuild the features"
        )
    proba = predict(booster, feats[names].to_numpy(np.float32), names)
    settings = SimSettings.from_config(
        cfg.backtest, capital=cfg.backtest.capital, hold_bars=cfg.hold_bars,
        daily=cfg.data.bar == "1day",
    )  # fmt: skip
    plan = plan_trades(bars, proba, settings, cfg.backtest.vol_lookback_bars)
    labelled = feats["y"].notna().to_numpy()
    return {
        "plan": plan,
        "y": feats["y"].to_numpy()[labelled].astype(np.float32),
        "p": proba[labelled].astype(np.float32),
        "fwd_ret": feats["fwd_ret"].to_numpy()[labelled].astype(np.float32),
        "timestamp": feats["timestamp"].to_numpy()[labelled],
        # for the benchmark (equal-weight buy-and-hold): the first open and each session's close
        "first_open": float(bars["open"].iloc[0]) if len(bars) else float("nan"),
        "daily_close": daily_closes(bars, session_days(pd.DatetimeIndex(bars["timestamp"]))),
    }


@ray.remote(num_cpus=1, max_retries=0)
def _backtest_task(cfg, model_raw, bars_path, features_path, names, start, end, ticker):
    if isinstance(model_raw, bytes | bytearray):
        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(bytearray(model_raw))
    else:  # an ensemble travels pickled (its boosters pickle as their raw model)
        booster = model_raw
        booster.set_nthread(1)
    out = backtest_ticker(cfg, booster, bars_path, features_path, names, start, end)
    out["ticker"], out["node"] = ticker, node_label()  # the progress line names the node
    release_freed_memory()  # the worker lives on: give back this ticker's bars and features
    return out


def run_backtests(
    cfg: Config,
    booster: xgb.Booster,
    bars_paths: dict[str, str | storage.GcsPath],
    feature_paths: dict[str, str | storage.GcsPath],
    names: list[str],
    start=None,
    end=None,
) -> dict[str, dict]:
    """Fan out one backtest task per ticker; returns their plans and predictions by ticker."""
    raw = booster.save_raw("ubj") if isinstance(booster, xgb.Booster) else booster
    model_ref = ray.put(raw)
    cfg_ref = ray.put(cfg)
    memory = clamp_task_memory(
        window_task_memory(cfg, start or cfg.backtest.start, end or cfg.backtest.end),
        1,
        "backtest task",
    )
    refs = {}
    for t in bars_paths:
        ref = _backtest_task.options(name=f"backtest:{t}", memory=memory).remote(
            cfg_ref, model_ref, bars_paths[t], feature_paths[t], names, start, end, t
        )
        refs[ref] = t
    out = {r["ticker"]: r for r in track(refs, "backtest", unit="ticker")}
    return dict(sorted(out.items()))


def pooled_predictions(results: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    ys = [r["y"] for r in results.values()]
    ps = [r["p"] for r in results.values()]
    return np.concatenate(ys), np.concatenate(ps)


def predictions_frame(results: dict[str, dict]) -> pd.DataFrame:
    """Every labelled out-of-sample bar's prediction, by ticker (the report's calibration data)."""
    frames = [
        pd.DataFrame(
            {
                "ticker": t,
                "timestamp": r["timestamp"],
                "y": r["y"],
                "p": r["p"],
                "fwd_ret": r["fwd_ret"],
            }
        )
        for t, r in results.items()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plans(results: dict[str, dict]) -> dict[str, TradePlan]:
    """The tasks' trade plans by ticker, for `portfolio.simulate_portfolio`."""
    return {t: r["plan"] for t, r in results.items()}
