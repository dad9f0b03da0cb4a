"""The seed's decision rules: advance, stop, optimize or hold, with the rule and figures that fired.

Order matters: a stop rule (memory past the limit; overfitting measured as a train-validation
accuracy gap or a probability of backtest overfitting past their thresholds) wins over everything;
a phase whose metrics fell below the previous phase's goes to "optimize" (scaling made it worse);
otherwise it advances only when OOS accuracy and Sharpe clear their thresholds AND the Sharpe
survives deflation for the number of trials searched (deflated Sharpe >= `min_dsr`): selection
luck alone never advances a phase. Anything else holds.
"""

from __future__ import annotations

import math

from vpt_ray.config import DecisionConfig, HardwareConfig


def _bad(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def decide(
    rules: DecisionConfig,
    hardware: HardwareConfig,
    *,
    oos_accuracy: float,
    sharpe: float,
    train_val_gap: float,
    peak_memory_gb: float,
    pbo: float | None = None,
    dsr: float | None = None,
    previous: dict | None = None,
) -> dict:
    """Verdict and reasons; `previous` is the previous phase's tracker row (accuracy, sharpe)."""
    stop, degrade = [], []
    if peak_memory_gb > hardware.memory_limit_gb:
        stop.append(
            f"stop: peak memory {peak_memory_gb:.2f} GB > limit {hardware.memory_limit_gb:g} GB"
        )
    if train_val_gap > rules.max_train_val_gap:
        stop.append(
            f"stop: overfitting, train-validation accuracy gap {train_val_gap:.4f} > "
            f"{rules.max_train_val_gap:g}"
        )
    if not _bad(pbo) and pbo > rules.max_pbo:
        stop.append(
            f"stop: overfitting, probability of backtest overfitting {pbo:.3f} > {rules.max_pbo:g}"
        )
    if previous:
        for key, now in (("accuracy", oos_accuracy), ("sharpe", sharpe)):
            before = previous.get(key)
            if not _bad(before) and not _bad(now) and now < float(before):
                degrade.append(
                    f"optimize: OOS {key} {now:.4f} fell below phase {previous.get('phase')}'s "
                    f"{float(before):.4f}"
                )
    acc_ok = oos_accuracy > rules.min_accuracy
    sharpe_ok = not _bad(sharpe) and sharpe > rules.min_sharpe
    dsr_ok = not _bad(dsr) and dsr >= rules.min_dsr
    checks = [
        f"OOS accuracy {oos_accuracy:.4f} {'>' if acc_ok else '<='} {rules.min_accuracy:g}",
        "Sharpe "
        + (
            "n/a"
            if _bad(sharpe)
            else f"{sharpe:.3f} {'>' if sharpe_ok else '<='} {rules.min_sharpe:g}"
        ),
        "deflated Sharpe "
        + ("n/a" if _bad(dsr) else f"{dsr:.3f} {'>=' if dsr_ok else '<'} {rules.min_dsr:g}"),
    ]
    if stop:
        return {"verdict": "stop", "reasons": stop + checks}
    if degrade:
        return {"verdict": "optimize", "reasons": degrade + checks}
    if acc_ok and sharpe_ok and dsr_ok:
        return {"verdict": "advance", "reasons": ["advance: " + " and ".join(checks)]}
    return {"verdict": "hold", "reasons": ["hold: " + "; ".join(checks)]}


def apply_concentration(verdict: dict, rules: DecisionConfig, concentration: dict) -> dict:
    """The concentration rule, applied after the others: a result where one ticker makes more
    than `rules.max_top_ticker_share` of the net PnL is not evidence of a model that scales, so
    an "advance" becomes "hold"; any other verdict keeps its course and notes the figure.

    `concentration` is metrics.json's `backtest.concentration` (top ticker and its share of the
    net PnL, None when the portfolio made no net profit: nothing to attribute, no rule fires)."""
    share, top = concentration.get("top_ticker_share"), concentration.get("top_ticker")
    limit = rules.max_top_ticker_share
    if _bad(share):
        line = "concentration: no net profit to attribute (top ticker share n/a)"
        return {**verdict, "reasons": [*verdict["reasons"], line]}
    if share <= limit:
        line = f"concentration: top ticker {top} makes {share:.1%} of the net PnL <= {limit:.0%}"
        return {**verdict, "reasons": [*verdict["reasons"], line]}
    line = (
        f"concentration: top ticker {top} makes {share:.1%} of the net PnL > "
        f"decision.max_top_ticker_share {limit:.0%}: one ticker decides this result"
    )
    if verdict["verdict"] == "advance":
        passed = [r.replace("advance: ", "the other rules pass: ", 1) for r in verdict["reasons"]]
        return {"verdict": "hold", "reasons": [f"hold: {line}", *passed]}
    return {**verdict, "reasons": [*verdict["reasons"], line]}
