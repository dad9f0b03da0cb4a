"""The pipeline's stages as functions of (config, previous stage's output).

`phase.run_phase` calls them in order; each is small and delegates to the module that owns the
work (data chain, feature store, CV, search, train, backtest, report, tracker), so the phase reads
as a list of stages and each part stays testable on its own.

The last stage, the run's outputs (metrics.json, the report files, the console summary), is
`vpt_ray.pipeline.outputs`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
import yaml

from vpt_ray.backtest.cost_stress import cost_stress
from vpt_ray.backtest.portfolio import PortfolioSettings, simulate_portfolio
from vpt_ray.backtest.portfolio_stats import (
    concentration,
    cost_check,
    cost_section,
    cost_warning,
    per_ticker_stats,
    portfolio_stats,
)
from vpt_ray.backtest.run import plans, pooled_predictions, run_backtests
from vpt_ray.backtest.tearsheet import benchmark_section, buy_and_hold
from vpt_ray.core import storage
from vpt_ray.core.config import Config
from vpt_ray.core.memory_sampler import note_node
from vpt_ray.core.node_memory import node_label
from vpt_ray.core.resources import release_freed_memory
from vpt_ray.core.run import RunContext, git_commit, package_versions
from vpt_ray.data import chain, quality
from vpt_ray.data.chain import TickerData
from vpt_ray.data.universe import resolve_universe
from vpt_ray.features.causal import clock_info, clock_slots
from vpt_ray.features.store import Matrix, build_store, load_matrix, load_samples
from vpt_ray.model import budget
from vpt_ray.model.cv import CombinatorialPurgedCV, PurgedWalkForward, sample_days_mask
from vpt_ray.model.metrics import classification
from vpt_ray.model.search import run_search
from vpt_ray.model.search_result import SearchResult
from vpt_ray.model.train import final_rounds, fit_final, save_model, training_rows
from vpt_ray.pipeline import resume
from vpt_ray.pipeline.resume import file_digest
from vpt_ray.pipeline.resume import stage_bars as stage_ticker_bars

log = logging.getLogger("vpt_ray.stages")

Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Data:
    tickers: dict[str, TickerData]
    skipped: list[str]
    excluded: dict[str, str] = field(default_factory=dict)  # ticker -> the data.quality rule

    @property
    def synthetic(self) -> bool:
        return any(td.synthetic for td in self.tickers.values())


def load_data(cfg: Config) -> Data:
    """Resolve every ticker through the data chain for the training + backtest period."""
    check_costs(cfg, len(cfg.data.tickers), {})  # the minimum commission needs no prices
    sources = chain.Sources(cfg)
    tickers, skipped = chain.resolve(cfg, cfg.data.start, cfg.backtest.end, sources)
    synthetic = sorted(t for t, td in tickers.items() if td.synthetic)
    if synthetic:
        banner = "!" * 78
        log.warning(banner)
        log.warning(
            "SYNTHETIC MARKET in use for %s: no real source had their bars (%s). Results "
            "measure the pipeline, not a real edge.",
            ", ".join(synthetic),
            why_no_real_data(cfg, sources),
        )
        log.warning(banner)
    return Data(tickers, skipped)


def why_no_real_data(cfg: Config, sources: chain.Sources) -> str:
    """What each configured real source said, for the synthetic banner: the state it ended the
    data stage in (no key, no credentials, down for the run...), never a guess."""
    parts = [f"local: none in {cfg.data.dir}"] if "local" in cfg.data.sources else []
    for name in cfg.data.sources:
        if name not in chain.REMOTE:
            continue
        built = [src for (n, _), src in sources.built.items() if n == name]
        if not built:
            parts.append(f"{name}: not asked")
            continue
        reason = built[0].unavailable_reason()
        parts.append(f"{name}: {reason or 'answered without bars for them (see the log)'}")
    if not any(n in chain.REMOTE for n in cfg.data.sources):
        parts.append("gcs and polygon not in data.sources")
    return "; ".join(parts)


def stage_bars(data: Data, cache: storage.Location) -> Data:
    """`data` with its bar files staged in the resume cache when that is on gs://, so the tasks
    that read bars run on any node of a cluster (`resume.stage_bars`); else `data` itself."""
    return Data(stage_ticker_bars(data.tickers, cache), data.skipped)


def build_features(cfg: Config, data: Data, store_dir: Path) -> dict[str, dict]:
    return build_store(cfg, data.tickers, store_dir)


def exclude_unusable(data: Data, store: dict[str, dict]) -> tuple[Data, dict[str, dict]]:
    """Drop the tickers whose training bars carry no volume-price information (`data.quality`:
    zero volume everywhere, a close that never moves) from training and the backtest, with a
    warning each; warn about tickers that give no training sample or cannot trade in the
    backtest window. Raises `DataUnavailableError` when no ticker is left."""
    excluded = {}
    for t, s in store.items():
        facts = s.get("quality")
        reason = quality.exclusion_reason(facts["train"]) if facts else None
        if reason:
            excluded[t] = reason
            log.warning("%s: excluded from training and the backtest: %s", t, reason)
    for t, s in store.items():
        if t in excluded:
            continue
        if s.get("train_samples") == 0:
            log.warning(
                "%s: gives no training sample (no labelled bar of the training window has every "
                "feature defined: too little history for the rolling windows?)",
                t,
            )
        bt = (s.get("quality") or {}).get("backtest")
        if bt and (bt["bars"] == 0 or bt["zero_volume_bars"] == bt["bars"]):
            log.warning("%s: no bar with volume in the backtest window: it cannot trade there", t)
    if len(excluded) == len(store):
        raise chain.DataUnavailableError(
            "every ticker is excluded by the data quality rules: "
            + "; ".join(f"{t}: {why}" for t, why in excluded.items())
        )
    keep = [t for t in store if t not in excluded]
    tickers = {t: data.tickers[t] for t in keep if t in data.tickers}
    return Data(tickers, data.skipped, {**data.excluded, **excluded}), {t: store[t] for t in keep}


def subset_matrix(m: Matrix, keep: np.ndarray) -> Matrix:
    """The rows of `m` where the boolean mask `keep` is true (same order); features on disk
    stay there (`rows` then says which of the sample file's rows these are)."""
    cols = ("y", "pos", "label_end", "ticker", "fwd_ret")
    out = {k: getattr(m, k)[keep] for k in cols}
    if m.X is not None:
        out["X"] = m.X[keep]
    if m.samples is not None:
        out["rows"] = m.sample_rows()[keep]
    return dataclasses.replace(m, **out)


def restrict_folds(folds: Folds, keep: np.ndarray) -> Folds:
    """`folds` restricted to the rows where `keep` is true, re-indexed into the kept rows.

    Dropping rows from a purged split keeps it purged: no training row is added, so none can come
    closer to a validation window than before. A fold left without training or validation rows
    raises (too few sampled sessions for the folds).
    """
    new_index = np.cumsum(keep) - 1
    out = []
    for k, (tr, va) in enumerate(folds):
        tr_s, va_s = new_index[tr[keep[tr]]], new_index[va[keep[va]]]
        if len(tr_s) == 0 or len(va_s) == 0:
            raise ValueError(
                f"search.sample_days: fold {k} keeps {len(tr_s)} training and {len(va_s)} "
                "validation samples of the sampled sessions: sample more days or use fewer "
                "cv.n_splits"
            )
        out.append((tr_s, va_s))
    return out


def search_sample(cfg: Config, m: Matrix, folds: Folds) -> tuple[Matrix, Folds]:
    """The matrix and folds the search runs on: with `search.sample_days` N, N sessions drawn
    one per equal stratum of the training period (seeded by `search.seed`) and the folds
    restricted to them; else `m` and `folds` themselves. The final fit still uses all of `m`."""
    n_days = cfg.search.sample_days
    if not n_days:
        return m, folds
    keep = sample_days_mask(m.pos, m.slots, n_days, cfg.search.seed)
    if keep.all():
        log.info("search.sample_days %d: no more sessions than that; the search uses all", n_days)
        return m, folds
    sub, sub_folds = subset_matrix(m, keep), restrict_folds(folds, keep)
    log.info(
        "search.sample_days %d: the search runs on %d of %d sessions (%d of %d samples); "
        "the final fit uses them all",
        n_days,
        len(np.unique(sub.pos // sub.slots)),
        len(np.unique(m.pos // m.slots)),
        len(sub),
        len(m),
    )
    return sub, sub_folds


def make_folds(
    cfg: Config,
    store: dict[str, dict],
    sample_days: int | None = None,
    samples_dir: Path | None = None,
) -> tuple[Matrix, Folds]:
    """Pooled training samples and purged walk-forward folds over the training period. With
    `samples_dir` the features go to a sample file there and the driver keeps the per-sample
    index only (`store.load_samples`); else they are loaded into memory."""
    names = cfg.features.model_features()
    slots = clock_slots(cfg.data.bar_minutes)
    window = (store, names, cfg.data.start, cfg.data.end, cfg.labels.stride, slots)
    m = load_samples(*window, samples_dir) if samples_dir else load_matrix(*window)
    release_freed_memory()  # the month frames the samples were merged from
    sample_days = sample_days or cfg.cv.sample_days
    if sample_days:
        m = subset_matrix(m, sample_days_mask(m.pos, slots, sample_days, cfg.search.seed))
        log.info(
            "--sample-days %d: %d sessions, %d samples kept",
            sample_days,
            len(np.unique(m.pos // slots)),
            len(m),
        )
    if cfg.cv.method == "combinatorial":
        splitter = CombinatorialPurgedCV(cfg.cv.n_splits, cfg.cv.n_test_groups, cfg.embargo_bars)
    else:
        splitter = PurgedWalkForward(cfg.cv.n_splits, cfg.embargo_bars, cfg.cv.min_train_fraction)
    folds = list(splitter.split(m.pos, m.label_end))
    log.info(
        "%d samples x %d features, %d purged folds (embargo %d bars)",
        len(m),
        len(names),
        len(folds),
        cfg.embargo_bars,
    )
    return m, folds


def search(
    cfg: Config,
    m: Matrix,
    folds: Folds,
    work_dir: Path,
    num_cpus: float,
    tune_storage: storage.Location | None = None,
    store: dict[str, dict] | None = None,
    bars: int | None = None,
    trial_cache: tuple | None = None,
) -> SearchResult:
    """The search on the full training matrix, or on `search.sample_days` sampled sessions,
    within the budget and trial count `budget.resolve` derives from the phase's time limit and
    the data size (`bars` in the feature store; the training samples when not given). `store`
    (the feature store's summaries) gives each ticker's price level for the trials' after-cost
    validation returns; `trial_cache` (location, samples key) serves fold fits already made
    (`model.trial_cache`)."""
    m, folds = search_sample(cfg, m, folds)
    fold_sizes = [len(tr) + len(va) for tr, va in folds]
    bars = bars if bars is not None else len(m) * cfg.labels.stride
    cfg, plan = budget.resolve(cfg, bars, fold_sizes, int(num_cpus))
    path, fs = storage.tune_storage(work_dir if tune_storage is None else tune_storage)
    prices = [s.get("median_close") for s in store.values()] if store else None
    result = run_search(
        cfg, m, folds, path, int(num_cpus), storage_filesystem=fs, prices=prices,
        trial_cache=trial_cache,
    )  # fmt: skip
    result.info["budget"] = plan
    result.info["cpu_us_per_sample_fold"] = budget.cpu_us_per_sample_fold(result.trials, fold_sizes)
    log.info(
        "search: %d trials (%d fitted every fold), best val log loss %.5f, val accuracy %.4f",
        len(result.trials),
        len(result.completed_trials),
        result.best["val_log_loss"],
        result.best["val_accuracy"],
    )
    result.trials.to_parquet(work_dir / "trials.parquet")
    result.daily_perf.rename(columns=str).to_parquet(work_dir / "trials_daily.parquet")
    return result


def data_fingerprint(data: Data) -> dict:
    out = {}
    for t, td in data.tickers.items():
        digest = file_digest(td.path)  # memoized: the resume keys hashed it
        out[t] = {
            "path": str(td.path),
            "bytes": digest["bytes"],
            "sha256": digest["sha256"],
            "synthetic": td.synthetic,
            "origins": td.origins,
        }
    return out


def train_final(
    cfg: Config,
    ctx: RunContext,
    store: dict[str, dict],
    result: SearchResult,
    data: Data,
    ray_info: dict,
    cache: storage.Location | None = None,
    force: bool = False,
) -> xgb.Booster:
    """The final fit on the whole training set, streamed from the feature store (`train`), in
    this process (`model.backend: local`) or on Ray Train workers (`distributed`); from the
    resume `cache`'s fit cache (`vpt_ray.model.fit_cache`; off with `search.trial_cache`) when
    the same fit was made before (never with `force`, which fits again)."""
    rows = training_rows(cfg, store)
    rounds = final_rounds(
        [f["rounds"] for f in result.best["folds"]],
        [f["train_samples"] for f in result.best["folds"]],
        rows.n_rows,
    )
    fit_info: dict = {"backend": cfg.model.backend, "samples": rows.n_rows}
    fits = resume.fit_cache(cfg, store, cache, force) if cache is not None else None
    how = {"rounds": rounds, "seed": cfg.search.seed, "max_bin": cfg.model.max_bin,
           "backend": cfg.model.backend, "workers": cfg.model.num_workers,
           "nthread": int(ray_info["num_cpus"])}  # fmt: skip
    booster = fits.get(result.best_params, **how) if fits is not None else None
    if booster is not None:
        fit_info["from_cache"] = True
    elif cfg.model.backend == "distributed":
        from vpt_ray.model.distributed import fit_distributed  # Ray Train: only when configured

        booster, used = fit_distributed(
            cfg, rows, result.best_params, rounds, ctx.work_location, f"final_fit-{ctx.run_id}"
        )
        fit_info.update(used)
    else:
        nthread = int(ray_info["num_cpus"])
        booster = fit_final(cfg, rows, result.best_params, rounds, nthread, ctx.work_dir)
        note_node("final fit (driver)", node_label())
        release_freed_memory()  # the quantized matrix is gone; the backtest comes next
    if fits is not None and not fit_info.get("from_cache"):
        fits.put(booster, result.best_params, **how)
    meta = {
        "run_id": ctx.run_id,
        "phase": cfg.phase,
        "feature_names": list(rows.names),
        "params": result.best_params,
        "rounds": rounds,
        "final_fit": fit_info,
        "train_window": [str(cfg.data.start), str(cfg.data.end)],
        "embargo_bars": cfg.embargo_bars,
        "label_horizon": cfg.labels.horizon,
        "bar": cfg.data.bar,
        "clock": clock_info(cfg.data.bar_minutes, cfg.data.calendar),  # positions' origin
        "cv": {k: v for k, v in result.best.items() if k != "folds"},
        "data_fingerprint": data_fingerprint(data),
        "synthetic": data.synthetic,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "config_fingerprint": cfg.fingerprint(),
    }
    config_yaml = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    save_model(ctx.staged_model_dir, booster, meta, config_yaml)
    log.info(
        "final model (%d rounds, %d samples, %s backend) staged; published to %s at the end",
        rounds,
        rows.n_rows,
        cfg.model.backend,
        ctx.model_dir,
    )
    return booster


def backtest_universe(
    cfg: Config, store_dir: Path, cache: storage.Location | None = None, force: bool = False
) -> tuple[dict, Data, dict]:
    """Phase 5: the price-band universe the model is backtested on (`vpt_ray.data.universe`);
    returns metrics.json's `universe` section, its data and its feature store, built by the same
    per-ticker feature map as the training store (from the resume `cache` when given)."""
    selection, sel_cfg, tickers, skipped = resolve_universe(cfg)
    if cache is None:
        store = build_store(sel_cfg, tickers, store_dir)
    else:  # through the resume cache (a rerun rebuilds none); with gs://, tasks read the bucket
        tickers = resume.stage_bars(tickers, cache)
        store = resume.build_features(sel_cfg, tickers, store_dir, cache, force)
    section = {**selection.section(), "skipped_backtest_data": skipped}
    return section, Data(tickers, skipped), store


def portfolio(cfg: Config, ticker_plans: dict) -> dict:
    """Size the tickers' planned trades from one pool (`backtest.portfolio`) and measure it:
    the result, its statistics, each ticker's contribution, the concentration and the costs."""
    settings = PortfolioSettings.from_config(cfg.backtest)
    t0 = time.perf_counter()
    result = simulate_portfolio(ticker_plans, settings)
    per_ticker = per_ticker_stats(result)
    out = {
        "result": result,
        "stats": portfolio_stats(result),
        "per_ticker": per_ticker,
        "concentration": concentration(per_ticker),
        "costs": cost_section(result),
        "cost_stress": cost_stress(ticker_plans, settings),  # the same plans at 2x, 3x costs
    }
    log.info(
        "portfolio: %d tickers on one clock (%d bars), %d of %d planned trades filled, in %.2f s",
        len(ticker_plans),
        len(result.bar_equity),
        len(result.trades),
        out["stats"]["trades_planned"],
        time.perf_counter() - t0,
    )
    return out


def check_costs(cfg: Config, n_tickers: int, prices: dict[str, float]) -> dict:
    """`cost_check` of the config's capital and commissions for `n_tickers`; warns when the
    expected commission per fill passes `backtest.max_cost_bps` (the warning names the fix)."""
    bt = cfg.backtest
    check = cost_check(PortfolioSettings.from_config(bt), n_tickers, bt.max_cost_bps, prices)
    if (line := cost_warning(check, bt.capital)) is not None:
        log.warning(line)
    return check


def backtest(cfg: Config, booster: xgb.Booster, data: Data, store: dict, names: list[str]) -> dict:
    """Backtest on `data`'s tickers (the training tickers, or the universe's): one Ray task per
    ticker plans its trades, then one pass sizes them all from the pool."""
    bars_paths = {t: storage.portable(td.path) for t, td in data.tickers.items()}
    feature_paths = {t: s["path"] for t, s in store.items()}
    results = run_backtests(cfg, booster, bars_paths, feature_paths, names)
    ticker_plans = plans(results)
    prices = {t: float(np.median(p.close)) for t, p in ticker_plans.items() if p.n_bars}
    pf = portfolio(cfg, ticker_plans)
    y, p = pooled_predictions(results)
    result = pf["result"]
    bench = buy_and_hold(
        pd.DataFrame({t: r["daily_close"] for t, r in results.items() if "daily_close" in r}),
        pd.Series({t: r["first_open"] for t, r in results.items() if "first_open" in r}),
        cfg.backtest.capital,
    )
    if cfg.data.bar == "1day" and cfg.backtest.flat_at_close:
        log.info(
            "backtest: daily bars are held across sessions (flat_at_close needs intraday bars)"
        )
    if pf["stats"]["trades"] == 0:
        warn_no_trades(cfg, p)
    return {
        "results": results,
        "equity": result.daily_equity,
        "bar_equity": result.bar_equity,
        "gross": result.gross,
        "net": result.net,
        "ticker_pnl": result.ticker_pnl,  # per-ticker equity in the report
        "stats": pf["stats"],
        "benchmark": bench,
        "benchmark_stats": benchmark_section(
            result.daily_equity, bench, cfg.backtest.capital, pf["stats"]
        ),
        "bars_paths": {t: str(p) for t, p in bars_paths.items()},
        "per_ticker": pf["per_ticker"],
        "concentration": pf["concentration"],
        "costs": {**pf["costs"], "check": check_costs(cfg, len(ticker_plans), prices)},
        "cost_stress": pf["cost_stress"],
        "oos": classification(y, p),
        "trades": result.trades,
        "data": data,  # what was backtested: the oracle replays these tickers
        "store": store,
    }


def warn_no_trades(cfg: Config, p: np.ndarray) -> None:
    """Say why a backtest made no trade instead of reporting Sharpe 0 silently."""
    bt = cfg.backtest
    if len(p) == 0:
        log.warning("backtest: 0 trades: no out-of-sample bar has a prediction")
        return
    lo, hi = float(np.nanmin(p)), float(np.nanmax(p))
    if hi < bt.long_threshold and (lo > bt.short_threshold or not bt.allow_short):
        why = (
            f"no out-of-sample probability reached backtest.long_threshold ({bt.long_threshold})"
            + (f" or backtest.short_threshold ({bt.short_threshold})" if bt.allow_short else "")
            + f": they ranged {lo:.4f}..{hi:.4f}"
        )
    else:
        why = (
            "signals crossed the thresholds but no order filled: check backtest.capital (the "
            "pool's) and backtest.max_ticker_weight against the price, backtest.position_fraction "
            "and backtest.max_volume_fraction"
        )
    log.warning("backtest: 0 trades: %s", why)
