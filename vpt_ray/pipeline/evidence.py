"""The report stage's evidence against the baselines: the naive predictor's figures next to the
OOS and CV accuracy, the excess over buy-and-hold with its SE, the Sharpe at higher costs, and
the keyword arguments the decision reads from them (`vpt_ray.validation.advance`).

`outputs.assemble_metrics` merges these sections into metrics.json (`oos`, `cv`, `benchmark`,
`backtest.cost_stress`) and passes `decision_evidence` to `decide`.
"""

from __future__ import annotations

import numpy as np

from vpt_ray.backtest.run import pooled_predictions
from vpt_ray.core.config import Config
from vpt_ray.model.metrics import majority_direction
from vpt_ray.validation.baseline import cv_naive_figures, excess_over_benchmark, naive_figures
from vpt_ray.validation.uncertainty import effective_samples

OOS_KEYS = (
    "naive_direction", "naive_accuracy", "naive_accuracy_se", "skill", "skill_se",
    "balanced_accuracy", "balanced_accuracy_se", "effective_samples",
)  # fmt: skip


def evidence_sections(cfg: Config, y_train: np.ndarray, bt: dict, folds: list[dict]) -> dict:
    """{"oos": naive figures of the OOS predictions, "cv": of the CV folds, "benchmark": the
    excess over buy-and-hold and its SE, "cost_stress": the Sharpe at 2x / 3x costs}.

    The naive predictor's call is the training samples' majority (`y_train`: the CV matrix's
    labels, every `labels.stride`-th bar of the training period); OOS predictions are every
    bar, so one in `labels.horizon` is independent."""
    majority = majority_direction(y_train)
    y, p = pooled_predictions(bt["results"])
    oos = naive_figures(y, p, majority, effective_samples(1, 1, cfg.labels.horizon))
    cv = cv_naive_figures(folds, effective_samples(1, cfg.labels.stride, cfg.labels.horizon))
    bench = bt.get("benchmark")
    excess = (
        excess_over_benchmark(bt["equity"], bench, cfg.backtest.capital)
        if bench is not None and len(bench)
        else {"excess_return": None, "excess_return_se": None}
    )
    return {
        "oos": {k: oos[k] for k in OOS_KEYS},
        "cv": cv,
        "benchmark": {"excess_return_se": excess["excess_return_se"]},
        "cost_stress": bt.get("cost_stress") or {},
        "train_up_rate": float(np.mean(np.asarray(y_train) > 0.5)),
    }


def decision_evidence(sections: dict, bt: dict, benchmark: dict) -> dict:
    """`decide`'s keyword arguments for the advance tests, from `evidence_sections` and the
    backtest's statistics."""
    oos, stats = sections["oos"], bt["stats"]
    return {
        "skill": oos["skill"],
        "skill_se": oos["skill_se"],
        "naive_accuracy": oos["naive_accuracy"],
        "naive_direction": oos["naive_direction"],
        "oos_effective_samples": oos["effective_samples"],
        "trades": stats.get("trades"),
        "oos_sessions": stats.get("days"),
        "robustness": {
            "sharpe_at_cost": {k: v.get("sharpe") for k, v in sections["cost_stress"].items()},
            "excess_return": benchmark.get("excess_return"),
            "excess_return_se": sections["benchmark"]["excess_return_se"],
            "benchmark_return": benchmark.get("total_return"),
        },
    }
