"""The report stage: every stage's result assembled into metrics.json's content (figures with
their standard errors, the decision, the overfitting and oracle sections), written as the run's
files (metrics.json, trades / equity parquet, summary.md, report.html, the tracker row) and
summarised on the console.

`phase.run_phase` calls `assemble_metrics`, `write_outputs` and `print_summary` after the
compute stages (`vpt_ray.pipeline.stages`); the saved-model backtest reuses the backtest's
sections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from vpt_ray.backtest.run import predictions_frame
from vpt_ray.core.config import Config
from vpt_ray.core.memory_sampler import MemorySampler
from vpt_ray.core.resources import limit_text, memory_limit
from vpt_ray.core.run import RunContext, git_commit, write_json_atomic, write_text_atomic
from vpt_ray.features.causal import clock_info, session_of
from vpt_ray.features.store import Matrix
from vpt_ray.model.search_result import SearchResult
from vpt_ray.pipeline.evidence import decision_evidence, evidence_sections
from vpt_ray.pipeline.stages import Data, Folds
from vpt_ray.report import tracker
from vpt_ray.report.evidence import console_row
from vpt_ray.report.html.page import write_html_report
from vpt_ray.report.run_report import concentration_line, json_safe, num, pct, write_report
from vpt_ray.validation.decision import apply_concentration, decide
from vpt_ray.validation.honesty import overfitting_section
from vpt_ray.validation.oracle import oracle_section
from vpt_ray.validation.uncertainty import accuracy_se, effective_samples, mean_accuracy_se

log = logging.getLogger("vpt_ray.stages")


def data_section(cfg: Config, data: Data, store: dict, **extra: object) -> dict:
    """metrics.json `data`: the tickers, bars, dates and sources a run used (`extra` after
    `skipped`); shared by the phase and the standalone backtest."""
    sources = {o["source"] for td in data.tickers.values() for o in td.origins}
    return {
        "synthetic": data.synthetic,
        "synthetic_tickers": sorted(t for t, td in data.tickers.items() if td.synthetic),
        "tickers": list(data.tickers),
        "skipped": data.skipped,
        **extra,
        "bars": int(sum(s["bars"] for s in store.values())),
        "start": str(cfg.data.start),
        "end": str(cfg.backtest.end),
        "bar": cfg.data.bar,
        "sources_used": sorted(sources),
        "signal_strength": cfg.synthetic.signal_strength if data.synthetic else None,
    }


def backtest_section(bt: dict) -> dict:
    """metrics.json's `backtest`: the portfolio's statistics, each ticker's contribution, the
    concentration of the PnL and the costs."""
    return {
        **bt["stats"],
        "per_ticker": bt["per_ticker"],
        "concentration": bt["concentration"],
        "costs": bt["costs"],
        "cost_stress": bt.get("cost_stress") or {},  # the same plans at 2x and 3x the costs
    }


def backtest_on(cfg: Config) -> str:
    """What the backtest trades: the training tickers, or phase 5's price-band universe."""
    if cfg.universe.active:
        return f"the ${cfg.universe.min_price:g}-{cfg.universe.max_price:g} universe"
    return "training tickers"


def assemble_metrics(
    cfg: Config,
    ctx: RunContext,
    data: Data,
    store: dict,
    m: Matrix,
    folds: Folds,
    result: SearchResult,
    bt: dict,
    sampler: MemorySampler,
    ray_info: dict,
) -> dict:
    """metrics.json: the keys other tools read (see the README) plus provenance."""
    best = result.best
    folds_detail = best["folds"]  # evidence_sections adds the naive predictor to each fold
    previous = tracker.previous_phase_row(ctx.tracker_path, cfg.phase)
    se = standard_errors(cfg, best, bt["oos"])
    overfit = overfitting_section(
        result, bt["equity"], capital=cfg.backtest.capital, cv_overlap=se["cv_overlap"]
    )
    se["sharpe_se"] = overfit["sharpe_se"]
    se["train_val_gap_se"] = overfit["train_val_gap_se"]
    naive = evidence_sections(cfg, m.y, bt, folds_detail)  # the naive predictor, buy-and-hold
    limit = ray_info.get("memory_limit") or memory_limit(cfg.hardware, None)
    decision = decide(
        cfg.decision,
        cfg.hardware.model_copy(update={"memory_limit_gb": limit["limit_gb"]}),  # effective
        oos_accuracy=bt["oos"]["accuracy"],
        sharpe=bt["stats"]["sharpe"],
        train_val_gap=best["train_val_gap"],
        peak_memory_gb=round(sampler.peak_node_gb, 3),  # hardware.memory_limit_gb is per node
        dsr=overfit["dsr"],
        previous=previous,
        oos_accuracy_se=se["oos_accuracy_se"],
        sharpe_se=se["sharpe_se"],
        train_val_gap_se=se["train_val_gap_se"],
        cv_accuracy=best["val_accuracy"],
        cv_accuracy_se=se["cv_accuracy_se"],
        overfitting=overfit,
        **decision_evidence(naive, bt, bt["benchmark_stats"]),
        backtest_on=backtest_on(cfg),
        memory_limit_text=limit_text(limit),
    )
    decision = apply_concentration(decision, cfg.decision, bt["concentration"])
    with ctx.stage("oracle"):  # synthetic runs: the known-truth ruler, on the tickers backtested
        oracle = oracle_section(cfg, bt["data"], bt["store"], bt)
    return {
        "run_id": ctx.run_id,
        "phase": cfg.phase,
        "data": data_section(
            cfg,
            data,
            store,
            excluded=data.excluded,  # ticker -> the data quality rule it breaks
            no_training_samples=sorted(t for t, s in store.items() if s.get("train_samples") == 0),
        ),
        "windows": {
            "train": f"{cfg.data.start}..{cfg.data.end}",
            "backtest": f"{cfg.backtest.start}..{cfg.backtest.end}",
            "embargo_bars": cfg.embargo_bars,
            "label_horizon": cfg.labels.horizon,
            "holds_across_sessions": cfg.holds_across_sessions,
            "clock": clock_info(cfg.data.bar_minutes, cfg.data.calendar),
            "cv_method": cfg.cv.method,
            "validation": [  # first and last session of each fold's validation samples
                [str(d) for d in session_of([m.pos[va].min(), m.pos[va].max()], m.slots)]
                for _, va in folds
            ],
        },
        "features": {"count": len(m.feature_names), "names": m.feature_names},
        "cv": {
            **cv_section(cfg, m, folds, best, se["cv_accuracy_se"], se["train_val_gap_se"]),
            **naive["cv"],  # the naive predictor per fold: naive accuracy, skill, balanced
        },
        "search": search_section(result),
        "overfitting": overfit,
        "oos": {**bt["oos"], "accuracy_se": se["oos_accuracy_se"], **naive["oos"]},
        "backtest": {**backtest_section(bt), "sharpe_se": se["sharpe_se"]},
        "standard_errors": se,
        "benchmark": {**bt["benchmark_stats"], **naive["benchmark"]},
        "backtest_bars": bt["bars_paths"],  # the report's price panel reads its window from these
        "oracle": oracle,
        "resources": resources_section(ctx, sampler, ray_info),
        "decision": {**decision, "previous_phase_run": previous["run_id"] if previous else None},
        "backtest_on": backtest_on(cfg),
        "model_dir": str(ctx.model_dir),
        "mlflow": ctx.mlflow_info(),  # where the run is logged; None without MLflow
        "git_commit": git_commit(),
        "config_fingerprint": cfg.fingerprint(),
    }


def resources_section(ctx: RunContext, sampler: MemorySampler, ray_info: dict) -> dict:
    """metrics.json's `resources`: memory (in total, per node, per stage, over time), the wall
    and stage times so far (`record_wall` writes the final ones), what Ray was given."""
    return {
        **sampler.resources(),  # peak in total (all nodes) and per node, placement
        "stage_peak_gb": dict(sampler.stage_peaks),  # which stage the peak belongs to
        "wall_seconds": ctx.wall_seconds(),
        "stages": dict(ctx.stages),
        "ray": ray_info,
        "memory_samples": sampler.samples[:: max(1, len(sampler.samples) // 500)],
    }


def record_wall(ctx: RunContext, metrics: dict, summary: Callable[[dict], str] | None) -> None:
    """The run's wall and stage times as they stand now, after its report stage, written into
    metrics.json and summary.md again (`summary` draws it; both are small files): the
    console, the tracker's readers and MLflow get every stage. report.html keeps the figures it
    was drawn with, every stage but its own report stage."""
    res = metrics["resources"]
    res["wall_seconds"], res["stages"] = ctx.wall_seconds(), dict(ctx.stages)
    if summary is not None:
        write_text_atomic(ctx.report_dir / "summary.md", summary(metrics))
    write_json_atomic(ctx.report_dir / "metrics.json", json_safe(metrics))


def cv_section(
    cfg: Config, m: Matrix, folds: Folds, best: dict, accuracy_se: float, gap_se: float | None
) -> dict:
    """metrics.json's `cv`: the selected configuration's figures over the purged folds, with
    their SEs; shared by the phase and the training run."""
    return {
        "accuracy": best["val_accuracy"],
        "auc": best["val_auc"],
        "log_loss": best["val_log_loss"],
        "train_accuracy": best["train_accuracy"],
        "train_val_gap": best["train_val_gap"],
        "accuracy_se": accuracy_se,
        "train_val_gap_se": gap_se,
        "early_stopping": (
            f"rounds chosen on the last {cfg.cv.early_stopping_fraction:.0%} of each training "
            "fold's sessions (purged and embargoed from the rows fitted); validation folds "
            "scored untouched; train accuracy is on the rows fitted"
        ),
        "samples": len(m),
        "sample_days": cfg.cv.sample_days,  # null = every session of the training period
        "sessions": int(len(np.unique(m.pos // m.slots))),
        "folds_count": len(folds),
        "folds": best["folds"],
    }


def search_section(result: SearchResult) -> dict:
    """metrics.json's `search`: trials, how the search ended, the best parameters, the table."""
    return {
        "trials": len(result.trials),  # every configuration that reported a fold
        **result.info,  # scheduler, trials by outcome, time budget, search.sample_days
        "best_params": {k: _round(v) for k, v in result.best_params.items()},
        "table": result.trials.head(50).to_dict(orient="records"),
    }


def cv_accuracy_se(cfg: Config, best: dict) -> float:
    """The SE of the mean CV accuracy over the folds (binomial on effective samples), as
    `standard_errors` computes it: for a run without an out-of-sample part."""
    overlap = effective_samples(1, cfg.labels.stride, cfg.labels.horizon)
    folds = best["folds"]
    return mean_accuracy_se(
        [f["val_accuracy"] for f in folds], [f["val_samples"] * overlap for f in folds]
    )


def standard_errors(cfg: Config, best: dict, oos: dict) -> dict:
    """The SEs of CV and OOS accuracy (binomial on effective samples: labels overlap, see
    `vpt_ray.validation.uncertainty`); the Sharpe and gap SEs are added from the overfitting
    section."""
    cv_overlap = effective_samples(1, cfg.labels.stride, cfg.labels.horizon)
    oos_eff = effective_samples(int(oos["samples"]), 1, cfg.labels.horizon)
    folds = best["folds"]
    return {
        "method": (
            "accuracy: binomial on effective samples (one per labels.horizon bars of a ticker); "
            "Sharpe: Mertens (2002) on daily returns, annualized; gap: binomial SEs of its two "
            "accuracies per fold"
        ),
        "cv_overlap": cv_overlap,
        "oos_effective_samples": oos_eff,
        "oos_accuracy_se": accuracy_se(oos["accuracy"], oos_eff),
        "cv_accuracy_se": mean_accuracy_se(
            [f["val_accuracy"] for f in folds], [f["val_samples"] * cv_overlap for f in folds]
        ),
    }


def _round(v: object) -> object:
    return round(v, 6) if isinstance(v, float) else v


def write_outputs(cfg: Config, ctx: RunContext, metrics: dict, bt: dict) -> None:
    """The report stage: the wall and stage times so far (oracle and optimize included) into
    the metrics, then the files, report.html and the tracker row."""
    metrics["resources"].update(wall_seconds=ctx.wall_seconds(), stages=dict(ctx.stages))
    write_report(
        ctx.report_dir,
        metrics,
        bt["trades"],
        bt["equity"],
        predictions=predictions_frame(bt["results"]),
        bar_equity=bar_equity_frame(bt),
        benchmark=bt.get("benchmark"),
        ticker_pnl=bt.get("ticker_pnl"),
    )
    write_html_report(ctx.report_dir, ctx.staged_model_dir)
    tracker.update(ctx.tracker_path, tracker.row_from_metrics(metrics))  # last: only whole runs
    log.info("report: %s; tracker: %s", ctx.report_location, ctx.tracker_path)


def bar_equity_frame(bt: dict) -> pd.DataFrame:
    """equity_bars.parquet's rows: the portfolio at every bar of its clock (UTC bar start)."""
    return pd.DataFrame(
        {
            "timestamp": bt["bar_equity"].index,
            "equity": bt["bar_equity"].to_numpy(),
            "gross_exposure": bt["gross"].to_numpy(),
            **({"net_exposure": bt["net"].to_numpy()} if "net" in bt else {}),
        }
    )


def print_summary(m: dict) -> None:
    bt, oos, cv = m["backtest"], m["oos"], m["cv"]
    rows = [
        ("run", m["run_id"]),
        (
            "data",
            ("SYNTHETIC market" if m["data"]["synthetic"] else "real data")
            + f", {len(m['data']['tickers'])} tickers, {m['data']['bars']:,} bars",
        ),
        (
            "CV accuracy / AUC",
            f"{num(cv['accuracy'])} / {num(cv['auc'])} (train {num(cv['train_accuracy'])})",
        ),
        (
            "OOS accuracy / AUC",
            f"{num(oos['accuracy'])} / {num(oos['auc'])} on {oos['samples']:,} bars",
        ),
        *filter(None, [console_row(m)]),  # the naive predictor on the same labels
        (
            "backtest",
            f"{bt['trades']} trades, return {pct(bt['total_return'])}, Sharpe "
            f"{num(bt['sharpe'], 2)} (daily), max DD {pct(bt['max_drawdown'])} (intraday)",
        ),
        *(
            [("buy-and-hold", benchmark_row(m["benchmark"]))]
            if (m.get("benchmark") or {}).get("total_return") is not None
            else []
        ),
        ("peak memory / wall", memory_wall(m["resources"])),
        *(
            [("concentration", concentration_line(bt["concentration"]))]
            if bt.get("concentration")
            else []
        ),  # fmt: skip
        ("decision", m["decision"]["verdict"].upper()),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    for r in m["decision"]["reasons"]:
        print(f"  {'':<{width}}  - {r}")
    if m.get("optimized_from"):
        print(f"  {'optimized':<{width}}  {m['optimized_from']['summary']}")
    opt = m.get("optimize") or {}
    if opt.get("file"):
        print(f"  {'optimize':<{width}}  reduced config {opt['file']}: {opt['command']}")
    elif opt.get("error"):
        print(f"  {'optimize':<{width}}  no reduced config: {opt['error']}")
    if m.get("ensemble"):
        from vpt_ray.model.ensemble import print_comparison

        print_comparison(m["ensemble"])
    if m.get("mlflow"):
        print(f"  {'MLflow':<{width}}  {m['mlflow']['where']}")
    print(f"  {'report':<{width}}  {report_html(m)}")


def memory_wall(res: dict) -> str:
    """`2.08 GB (limit 23.5 GB: this machine's memory) / 278 s`: the peak against the run's
    effective limit (`resources.ray.memory_limit`), and the wall time of every stage."""
    lim = (res.get("ray") or {}).get("memory_limit")
    limit = ""
    if lim:
        why = "this machine's memory" if lim.get("source") == "machine" else lim.get("source")
        limit = f" (limit {lim['limit_gb']:g} GB: {why})"
    return f"{res['peak_memory_gb']:.2f} GB{limit} / {res['wall_seconds']:.0f} s"


def benchmark_row(b: dict) -> str:
    return (
        f"return {pct(b['total_return'])}, Sharpe {num(b.get('sharpe'), 2)}; strategy excess "
        f"{pct(b.get('excess_return'))}"
    )


def report_html(m: dict) -> str:
    """Where the run's report.html is: the report directory next to its model directory."""
    head, sep, tail = m["model_dir"].rpartition("/models/")
    return f"{head}/reports/{tail}/report.html" if sep else f"reports/{m['run_id']}/report.html"
