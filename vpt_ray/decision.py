"""The seed's decision rules: advance, stop, optimize or hold, with the rule and figures that fired.

Order matters: a stop rule (memory past the limit, overfitting) wins over everything; a phase whose
metrics fell below the previous phase's is sent to "optimize" even if it passes the thresholds
(scaling made it worse); otherwise it advances when OOS accuracy and Sharpe both clear their
thresholds, and holds when they do not.
"""

from __future__ import annotations

import math

from vpt_ray.config import DecisionConfig, HardwareConfig


def decide(
    rules: DecisionConfig,
    hardware: HardwareConfig,
    *,
    oos_accuracy: float,
    sharpe: float,
    train_val_gap: float,
    peak_memory_gb: float,
    previous: dict | None = None,
) -> dict:
    """Verdict and reasons; `previous` is the previous phase's tracker row (accuracy, sharpe)."""
    stop, degrade, checks = [], [], []
    if peak_memory_gb > hardware.memory_limit_gb:
        stop.append(
            f"stop: peak memory {peak_memory_gb:.2f} GB > limit {hardware.memory_limit_gb:g} GB"
        )
    if train_val_gap > rules.max_train_val_gap:
        stop.append(
            f"stop: overfitting, train-validation accuracy gap {train_val_gap:.4f} > "
            f"{rules.max_train_val_gap:g}"
        )
    if previous:
        for key, now in (("accuracy", oos_accuracy), ("sharpe", sharpe)):
            before = previous.get(key)
            if before is not None and not math.isnan(float(before)) and now < float(before):
                degrade.append(
                    f"optimize: OOS {key} {now:.4f} fell below phase {previous.get('phase')}'s "
                    f"{float(before):.4f}"
                )
    acc_ok = oos_accuracy > rules.min_accuracy
    sharpe_ok = not math.isnan(sharpe) and sharpe > rules.min_sharpe
    checks.append(
        f"OOS accuracy {oos_accuracy:.4f} {'>' if acc_ok else '<='} {rules.min_accuracy:g}"
    )
    checks.append(f"Sharpe {sharpe:.3f} {'>' if sharpe_ok else '<='} {rules.min_sharpe:g}")
    if stop:
        return {"verdict": "stop", "reasons": stop + checks}
    if degrade:
        return {"verdict": "optimize", "reasons": degrade + checks}
    if acc_ok and sharpe_ok:
        return {"verdict": "advance", "reasons": ["advance: " + " and ".join(checks)]}
    return {"verdict": "hold", "reasons": ["hold: " + "; ".join(checks)]}
