"""What the decision's rules read and return: `Evidence` (the run's figures with their standard
errors) and `Check` (one rule's outcome with its figure, SE, threshold and the line a reader
sees), shared by the stop / optimize rules (`decision`) and the advance tests (`advance`), and
the number formatting their lines use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

# stop / optimize / advance: the rule can call for that verdict; info: a part of the overfitting
# stop (a sign or a confirmation); note: information that never changes the verdict (the seed's
# literal point-estimate rule, the robustness lines, a rule not applied)
Effect = Literal["stop", "optimize", "advance", "info", "note"]


@dataclass(frozen=True)
class Evidence:
    """The figures the rules read (None = not measured). SEs are standard errors of the figure
    next to them; `overfitting` is metrics.json's overfitting section (`honesty`).

    skill: OOS accuracy minus the naive predictor's (always the training majority
    `naive_direction`, accuracy `naive_accuracy`) on the same labels; `oos_effective_samples`:
    the OOS labels counted as independent samples; `oos_sessions`: sessions of the backtest (the
    unit of the power estimate); `robustness`: `advance.robustness_evidence`'s figures."""

    oos_accuracy: float
    sharpe: float | None
    train_val_gap: float
    peak_memory_gb: float
    dsr: float | None = None
    previous: dict | None = None  # the previous phase's tracker row
    oos_accuracy_se: float | None = None
    sharpe_se: float | None = None
    train_val_gap_se: float | None = None
    cv_accuracy: float | None = None
    cv_accuracy_se: float | None = None
    overfitting: dict = field(default_factory=dict)
    skill: float | None = None
    skill_se: float | None = None
    naive_accuracy: float | None = None
    naive_direction: str | None = None
    oos_effective_samples: float | None = None
    trades: int | None = None
    oos_sessions: int | None = None
    robustness: dict = field(default_factory=dict)
    backtest_on: str = "training tickers"  # or the phase 5 universe: what the Sharpe is measured on
    memory_limit_text: str | None = None  # the limit and its source (`resources.limit_text`)


@dataclass(frozen=True)
class Check:
    """One rule's outcome. `fired`: for stop and optimize rules, the rule calls for that verdict;
    for advance rules, the gate is passed; for notes, the line's condition holds. `line`: the
    figure, its SE and the threshold. `bound`: the figure's one-sided lower confidence bound
    (figure - z SE) when the rule tests it."""

    rule: str
    effect: Effect
    fired: bool
    line: str
    figure: float | None = None
    se: float | None = None
    threshold: float | None = None
    decisive: bool = True
    bound: float | None = None


def bad(x: float | None) -> bool:
    """Not a number the rules can use: None or NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x: float | None, d: int = 4) -> str:
    return "n/a" if bad(x) else f"{x:.{d}f}"


def se_text(x: float | None, d: int = 4) -> str:
    return f"SE {fmt(x, d)}"
