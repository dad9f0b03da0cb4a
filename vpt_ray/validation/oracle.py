"""The known-truth ruler: the synthetic market's true label probabilities, and how much of that
edge a run captured.

Why it exists: an accuracy of 52% means nothing on its own. On the synthetic market the truth is
known, so the best any model could do (the oracle) is computable, and a run's figures can be read
as a share of it: edge captured = (model - 0.5) / (oracle - 0.5) in accuracy and AUC, the same
against log 2 in log loss, and model Sharpe / oracle Sharpe with the same engine, costs and
thresholds, sized by the same portfolio (one pool, one clock: `vpt_ray.backtest.portfolio`).

The probability (derivation in docs/oracle.md). At minute i of a session the generator's state is
known: the pressure s_i (after minute i's flow), next minute's GARCH variance h_{i+1}, the
session's kappa (its regime) and the intraday curve. A label over K minutes (K = the minutes
between row t and row t+h, so a missing minute makes K = h + 1, exactly as `features.py` counts
rows) is the sign of R = sum_{j=1..K} r_{i+j} with r = c*sig*(kappa*s_prev + e + IMPACT*u),
c = 1/sqrt(1+IMPACT^2). Its conditional mean is c*kappa*s_i*sum_j E[sig_{i+j}]*PHI^(j-1) and its
variance adds the shocks (c^2 sum E[sig^2]) and each future flow u_m, which moves the price at once
(IMPACT) and through the future state (kappa*sqrt(1-PHI^2)*PHI^...). With E[h_{i+j}] =
1 + (alpha+beta)^(j-1)*(h_{i+1}-1), z = mean/sd is the normal approximation. It is not quite
enough: Student-t(4) shocks and the random GARCH path put more mass near zero than a normal with
the same variance, so Phi(z) understates |p - 0.5| by 6-8% (measured). The correction is
simulated once per (kappa, K) on the generator's own dynamics: paths of the true model and of its
Gaussian twin (same uniforms, t quantiles mapped to normal ones, constant sig, for which Phi(z) is
exact) give p = Phi(z) + [P_true(z) - P_gauss(z)], a low-noise difference. It is simulated on a
reference path (h = 1, flat curve); against brute-force simulation at other states (a volatility
burst, the open, the close, |p - 0.5| up to 0.35) the residual is < 0.003 (tests/test_oracle.py).

Only 1-minute bars: the generator's native resolution (other bar sizes get `{"skipped": why}`).
Nothing is stored: the bars are regenerated from their parameters (deterministic, ~0.5 s per
ticker-year) and checked against the bars file.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from functools import lru_cache

import numpy as np
import pandas as pd
import ray
from numba import njit
from scipy.special import ndtr, ndtri, stdtr

from vpt_ray.backtest.engine import SimSettings
from vpt_ray.backtest.plans import plan_trades
from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
from vpt_ray.backtest.portfolio_stats import portfolio_stats
from vpt_ray.core import storage
from vpt_ray.core.config import Config
from vpt_ray.data.local import read_bars
from vpt_ray.data.synthetic import (
    GARCH_ALPHA,
    GARCH_BETA,
    IMPACT,
    PHI,
    T_DOF,
    SessionDraw,
    SyntheticParams,
    iter_sessions,
)
from vpt_ray.features.store import read_ticker_window
from vpt_ray.model.metrics import classification

log = logging.getLogger("vpt_ray.oracle")

C = 1.0 / math.sqrt(1.0 + IMPACT**2)
OMEGA = 1.0 - GARCH_ALPHA - GARCH_BETA
CORRECTION_PATHS = 1 << 18  # simulated paths per (kappa, K) table; noise of the table ~2e-4
Z_GRID = np.linspace(-4.0, 4.0, 801)
LOG2 = math.log(2.0)
MIN_EDGE = 1e-3  # expected oracle accuracy above 0.5 needed to report an edge captured


# -- the probability ------------------------------------------------------------------------------


@njit(cache=True)
def _z_scores(
    s_after: np.ndarray,
    h_next: np.ndarray,
    curve: np.ndarray,
    kappa: float,
    start: np.ndarray,
    k: np.ndarray,
) -> np.ndarray:
    """Normal-approximation z = E[R] / sd(R) of the K-minute return after each `start` minute."""
    out = np.empty(start.shape[0])
    persist = GARCH_ALPHA + GARCH_BETA
    kk = kappa * np.sqrt(1.0 - PHI**2)
    g = np.empty(k.max() + 1 if k.shape[0] else 1)
    v = np.empty_like(g)
    for q in range(start.shape[0]):
        i, n = start[q], k[q]
        mean = 0.0
        var = 0.0
        decay = 1.0
        for j in range(1, n + 1):
            eh = 1.0 + persist ** (j - 1) * (h_next[i] - 1.0)
            v[j] = curve[i + j] ** 2 * eh
            g[j] = curve[i + j] * np.sqrt(eh)
            mean += g[j] * decay
            decay *= PHI
            var += v[j]
        a = 0.0  # A_m = sum_{j>m} g_j PHI^(j-1-m): the future state's reach of flow u_m
        for m in range(n, 0, -1):
            var += IMPACT**2 * v[m] + 2.0 * IMPACT * kk * g[m] * a + (kk * a) ** 2
            a = g[m] + PHI * a
        out[q] = kappa * s_after[i] * mean / np.sqrt(var)  # c cancels in mean / sd
    return out


def _t_cdf(x: np.ndarray) -> np.ndarray:
    """Student-t CDF; closed form for 4 degrees of freedom (10x faster than scipy's)."""
    if T_DOF != 4.0:
        return stdtr(T_DOF, x)
    q = x / np.sqrt(4.0 + x**2)
    return 0.5 + 0.75 * q * (1.0 - q**2 / 3.0)


def _unit_z(kappa: float, k: int) -> float:
    """z per unit of state on the reference path (flat curve, h = 1): z = s * this."""
    z = _z_scores(
        np.ones(k + 1), np.ones(k + 1), np.ones(k + 1), kappa, np.zeros(1, np.int64), np.array([k])
    )
    return float(z[0])


@lru_cache(maxsize=64)
def _correction_tables(kappa: float, k_max: int) -> np.ndarray:
    """corr[K-1] on Z_GRID for K = 1..k_max: P_true - P_gauss on the reference path (odd in z).

    One simulation gives every K (partial sums) and every state s: R(s) = N + kappa*s*D with
    D > 0, so P(R > 0) = P(T < s) for T = -N / (kappa*D), read off the sorted T's.
    """
    n = CORRECTION_PATHS
    out = np.zeros((k_max, len(Z_GRID)))
    noise_t, noise_g = np.zeros(n), np.zeros(n)
    drift_t, drift_g = np.zeros(n), 0.0
    s_fut_t, s_fut_g = np.zeros(n), np.zeros(n)  # state from future flows only (s_i scaled out)
    h = np.ones(n)
    e_prev = np.zeros(n)
    for j in range(k_max):
        rng = np.random.default_rng([0x0AC1E, j])  # per step: tables for any k_max share prefixes
        u = rng.standard_normal(n)
        raw = rng.standard_t(T_DOF, n)
        e = raw * math.sqrt((T_DOF - 2) / T_DOF)
        e_g = ndtri(np.clip(_t_cdf(raw), 1e-16, 1 - 1e-16))  # same uniform, normal quantile
        if j > 0:
            h = OMEGA + GARCH_ALPHA * e_prev**2 + GARCH_BETA * h
        sig = np.sqrt(h)
        noise_t += sig * (kappa * s_fut_t + e + IMPACT * u)
        noise_g += kappa * s_fut_g + e_g + IMPACT * u
        drift_t += sig * PHI**j
        drift_g += PHI**j
        s_fut_t = PHI * s_fut_t + math.sqrt(1 - PHI**2) * u
        s_fut_g = PHI * s_fut_g + math.sqrt(1 - PHI**2) * u
        e_prev = e
        s_of_z = Z_GRID / _unit_z(kappa, j + 1)
        p_true = np.searchsorted(np.sort(-noise_t / (kappa * drift_t)), s_of_z) / n
        p_gauss = np.searchsorted(np.sort(-noise_g / (kappa * drift_g)), s_of_z) / n
        corr = p_true - p_gauss
        out[j] = 0.5 * (corr - corr[::-1])  # the law is symmetric: keep the odd part
    return out


def probability(
    s_after: np.ndarray,
    h_next: np.ndarray,
    curve: np.ndarray,
    kappa: float,
    start: np.ndarray,
    k: np.ndarray,
) -> np.ndarray:
    """P(close K minutes after minute `start` > its close | the generator's state at `start`)."""
    start = np.asarray(start, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    if len(start) == 0:
        return np.empty(0)
    if (k < 1).any() or (start + k >= len(curve)).any():
        raise ValueError("oracle: every horizon must hold 1+ minutes inside the session")
    if kappa == 0.0:
        return np.full(len(start), 0.5)  # no signal: the law of R is symmetric about 0
    z = _z_scores(s_after, h_next, curve, kappa, start, k)
    k_max = max(24, -(-int(k.max()) // 8) * 8)  # few distinct tables per process
    tables = _correction_tables(round(kappa, 12), k_max)
    p = ndtr(z)
    for kv in np.unique(k):
        sel = k == kv
        p[sel] += np.interp(z[sel], Z_GRID, tables[kv - 1])
    return np.clip(p, 0.0, 1.0)


# -- per ticker -----------------------------------------------------------------------------------


def session_probabilities(draw: SessionDraw, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bar of one session: (P(label = 1), NaN where no label; P for the trade's horizon).

    The label of row r compares row r + horizon's close (same session) to row r's: it spans
    K = minute(r + h) - minute(r) minutes. The trade probability cuts the horizon at the session's
    last bar (where a position is closed under flat_at_close); NaN on the last bar itself.
    """
    if horizon < 1:
        raise ValueError(f"oracle: horizon = {horizon}: must be >= 1 bar")
    minute = np.flatnonzero(draw.keep)
    rows = len(minute)
    s_after = PHI * draw.state_before + math.sqrt(1.0 - PHI**2) * draw.u
    h = (draw.sigma / (draw.minute_sd * draw.curve)) ** 2
    h_next = OMEGA + GARCH_ALPHA * draw.e**2 + GARCH_BETA * h
    end_row = np.minimum(np.arange(rows) + horizon, rows - 1)
    k = minute[end_row] - minute
    p_trade = np.full(rows, np.nan)
    ok = k > 0
    p_trade[ok] = probability(s_after, h_next, draw.curve, draw.kappa, minute[ok], k[ok])
    p_label = p_trade.copy()
    p_label[np.arange(rows) + horizon > rows - 1] = np.nan
    return p_label, p_trade


def oracle_frame(
    params: SyntheticParams, ticker: str, start: dt.date, end: dt.date, horizon: int
) -> pd.DataFrame:
    """timestamp, close, p (label probability, NaN where no label), p_trade for the bars that
    `generate_ticker(params, ticker, start, end)` returns, row for row."""
    frames = []
    for draw in iter_sessions(params, ticker, start, end):
        p_label, p_trade = session_probabilities(draw, horizon)
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": draw.bars["timestamp"],
                    "close": draw.bars["close"],
                    "p": p_label,
                    "p_trade": p_trade,
                }
            )
        )
    if not frames:
        raise ValueError(f"oracle: no {params.calendar} sessions between {start} and {end}")
    out = pd.concat(frames, ignore_index=True)
    out["timestamp"] = out["timestamp"].astype("datetime64[ns, UTC]")
    return out


def oracle_proba(
    params: SyntheticParams, ticker: str, start: dt.date, end: dt.date, horizon: int
) -> pd.Series:
    """The true P(label = 1) of each generated bar (index: timestamp; NaN where no label)."""
    f = oracle_frame(params, ticker, start, end, horizon)
    return pd.Series(f["p"].to_numpy(), index=pd.DatetimeIndex(f["timestamp"]), name="oracle_p")


def oracle_ticker(
    cfg: Config,
    params: SyntheticParams,
    ticker: str,
    bars_path: str | storage.GcsPath,
    features_path: str | storage.GcsPath,
) -> dict:
    """The oracle's labelled probabilities and its trade plan for one synthetic ticker, on exactly
    the rows and bars the model's backtest used (same engine, costs, thresholds; the portfolio
    then sizes it exactly as it sizes the model's)."""
    start, end = cfg.backtest.start, cfg.backtest.end
    truth = oracle_frame(params, ticker, start, end, cfg.labels.horizon)
    bars = read_bars(bars_path, start, end, cfg.data.vwap_tolerance)
    feats = read_ticker_window(features_path, start, end, [])
    same = (
        len(bars) == len(truth) == len(feats)
        and (bars["timestamp"].to_numpy() == truth["timestamp"].to_numpy()).all()
        and (feats["timestamp"].to_numpy() == truth["timestamp"].to_numpy()).all()
        and np.allclose(bars["close"].to_numpy(), truth["close"].to_numpy(), rtol=1e-9, atol=0)
    )
    if not same:
        raise ValueError(
            f"oracle: {bars_path} is not what the synthetic generator makes with {params} for "
            f"{start}..{end}; regenerate the bars and the features"
        )
    labelled = feats["y"].notna().to_numpy()
    if not np.array_equal(labelled, truth["p"].notna().to_numpy()):
        raise ValueError(
            f"oracle: {features_path} labels other bars than horizon {cfg.labels.horizon}"
        )
    settings = SimSettings.from_config(
        cfg.backtest, capital=cfg.backtest.capital, hold_bars=cfg.hold_bars,
        daily=cfg.data.bar == "1day",
    )  # fmt: skip
    return {
        "plan": plan_trades(  # as the model's tasks
            bars, truth["p_trade"].to_numpy(), settings, cfg.backtest.vol_lookback_bars
        ),
        "y": feats["y"].to_numpy()[labelled].astype(np.float32),
        "p": truth["p"].to_numpy()[labelled],
    }


@ray.remote(num_cpus=1, max_retries=0)
def _oracle_task(cfg, params, bars_path, features_path, ticker):
    out = oracle_ticker(cfg, params, ticker, bars_path, features_path)
    out["ticker"] = ticker
    return out


# -- the run's section ----------------------------------------------------------------------------


def _ratio(model: float | None, oracle: float | None, base: float) -> float | None:
    """(model - base) / (oracle - base); None when either is missing or the oracle has no edge."""
    if model is None or oracle is None or not (math.isfinite(model) and oracle - base > 0):
        return None
    return (model - base) / (oracle - base)


def _scores(y: np.ndarray, p: np.ndarray, stats: dict) -> dict:
    c = classification(y, p)
    return {
        "accuracy": c["accuracy"],
        "auc": c["auc"],
        "log_loss": c["log_loss"],
        "sharpe": stats["sharpe"],
        "total_return": stats["total_return"],
        "trades": stats["trades"],
    }


def oracle_section(cfg: Config, data, store: dict, bt: dict) -> dict | None:
    """metrics.json's `oracle` section: the oracle next to the model on the synthetic tickers'
    out-of-sample bars, and the edge captured. None when no ticker is synthetic."""
    from vpt_ray.data.chain import synthetic_params  # the chain imports much; only needed here

    tickers = sorted(t for t, td in data.tickers.items() if td.synthetic)
    if not tickers:
        return None
    if cfg.data.bar != "1min":
        log.info("oracle: the synthetic market's truth is defined on 1-minute bars only")
        return {"skipped": f"bar {cfg.data.bar}: the oracle needs 1-minute bars"}
    if cfg.synthetic.drift:
        log.info("oracle: not modelled on a drifting market (synthetic.drift)")
        return {
            "skipped": f"synthetic.drift {cfg.synthetic.drift:g}: the oracle models the order-flow "
            "edge only; on a drift-only market the naive predictor (always up) is the best any "
            "model can do"
        }
    t0 = time.monotonic()
    params = synthetic_params(cfg)
    cfg_ref = ray.put(cfg)
    refs = [
        _oracle_task.options(name=f"oracle:{t}").remote(
            cfg_ref, params, storage.portable(data.tickers[t].path), store[t]["path"], t
        )
        for t in tickers
    ]
    truth = {r["ticker"]: r for r in ray.get(refs)}
    model = {t: bt["results"][t] for t in tickers}
    for t in tickers:
        if not np.array_equal(truth[t]["y"], model[t]["y"]):
            raise ValueError(f"oracle: {t}'s labelled bars differ from the model's backtest")
    y = np.concatenate([truth[t]["y"] for t in tickers])
    # both traded by the same portfolio: one pool of backtest.capital on the synthetic tickers
    # (all of them in a synthetic run, so the model's figures are the reported backtest's)
    pool = PortfolioSettings.from_config(cfg.backtest)
    o_stats = portfolio_stats(simulate_portfolio({t: truth[t]["plan"] for t in tickers}, pool))
    m_stats = portfolio_stats(simulate_portfolio({t: model[t]["plan"] for t in tickers}, pool))
    p_all = np.concatenate([truth[t]["p"] for t in tickers])
    oracle = _scores(y, p_all, o_stats)
    mod = _scores(y, np.concatenate([model[t]["p"] for t in tickers]), m_stats)
    # The oracle's expected accuracy on these bars is known exactly (mean of max(p, 1 - p)): it
    # says whether there is an edge to capture, free of the sample's luck. The realized figures
    # carry sampling noise; labels overlap by `horizon` bars, so about len(y) / horizon of them
    # are independent.
    oracle["expected_accuracy"] = float(np.mean(np.maximum(p_all, 1 - p_all)))
    se = 0.5 / math.sqrt(max(1.0, len(y) / cfg.labels.horizon))
    has_edge = oracle["expected_accuracy"] - 0.5 > MIN_EDGE
    captured = {
        "accuracy": _ratio(mod["accuracy"], oracle["accuracy"], 0.5),
        "auc": _ratio(mod["auc"], oracle["auc"], 0.5),
        "log_loss": _ratio(-mod["log_loss"], -oracle["log_loss"], -LOG2),
        "sharpe": _ratio(mod["sharpe"], oracle["sharpe"], 0.0),
    }
    log.info(
        "oracle (known truth, %d tickers, %.1f s): accuracy %.4f vs model %.4f, Sharpe %s vs "
        "model %s",
        len(tickers),
        time.monotonic() - t0,
        oracle["accuracy"],
        mod["accuracy"],
        "n/a" if oracle["sharpe"] is None else f"{oracle['sharpe']:.2f}",
        "n/a" if mod["sharpe"] is None else f"{mod['sharpe']:.2f}",
    )
    return {
        "tickers": tickers,
        "samples": len(y),
        "signal_strength": params.signal_strength,
        "model": mod,
        "oracle": oracle,
        "oracle_accuracy_se": se,
        "oracle_has_edge": bool(has_edge),
        "edge_captured": captured if has_edge else dict.fromkeys(captured),
    }


def summary_line(metrics: dict) -> str | None:
    """summary.md's line for the oracle section (None when the run has none)."""
    o = metrics.get("oracle")
    if not o:
        return None
    if "skipped" in o:
        return f"- Known truth (oracle): skipped, {o['skipped']}"
    m, t, cap = o["model"], o["oracle"], o["edge_captured"]

    def f(v: float | None, d: int = 4) -> str:
        return "n/a" if v is None or v != v else f"{v:.{d}f}"

    def pair(key: str, d: int = 4) -> str:
        return f"{f(m[key], d)} vs oracle {f(t[key], d)} (captured {f(cap[key], 2)})"

    head = f"- Known truth ({len(o['tickers'])} synthetic tickers, {o['samples']:,} bars): model "
    if not o["oracle_has_edge"]:
        head = f"- Known truth: the oracle shows no edge (signal {o['signal_strength']}); model "
    return (
        head + f"accuracy {pair('accuracy')}, AUC {pair('auc')}, log loss {pair('log_loss')}, "
        f"Sharpe {pair('sharpe', 2)}"
    )
