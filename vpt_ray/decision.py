"""The seed's decision rules: advance, stop, optimize or hold, each rule with its figure, the
figure's standard error and the threshold it is held to.

Every rule is a small function of (rules config, hardware config, `Evidence`) returning `Check`s;
`RULES` lists them in order and `decide` turns the checks into a verdict. A new rule is one more
function in `RULES` (and, if it needs a figure, one more `Evidence` field).

The verdict, in order (docs/decision.md has the reasoning and worked examples):

1. **stop** when peak memory passed `hardware.memory_limit_gb`, or when the run overfits:
   a sign of overfitting that is confirmed out of sample.
   - Signs: (A) the train-validation accuracy gap exceeds `max_train_val_gap` by more than
     `stop_se` standard errors; (B) the probability of backtest overfitting exceeds `max_pbo`
     AND is decisive: at least `min_trials_for_pbo` trials fitted every fold and their Sharpe
     ratios differ by more than the noise of one Sharpe estimate (near-identical trials make
     PBO a coin flip: it then says the choice among them is uninformative, not that the chosen
     model has no edge).
   - Confirmation: (C1) with a decisive PBO, the search's selected configuration ranks below the
     median trial in the CSCV out-of-sample halves AND the in-sample winners lose out of sample
     in more than `max_prob_oos_loss` of the splits; or (C2) the final model's out-of-sample
     accuracy falls below its CV accuracy by more than `stop_se` standard errors of the
     difference (performance degradation).
   A sign without confirmation, or a confirmation without a sign, is reported, not acted on.
2. **optimize** when OOS accuracy or Sharpe fell below the previous phase's by more than
   `optimize_se` standard errors of the difference (binomial SE of accuracy on the effective
   OOS samples; Mertens/Lo SE of the Sharpe ratio): scaling made it worse beyond noise.
3. **advance** when OOS accuracy > `min_accuracy`, Sharpe > `min_sharpe` and the deflated Sharpe
   (which prices in the number of trials and the track record's noise) >= `min_dsr`.
4. **hold** otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from vpt_ray.config import DecisionConfig, HardwareConfig
from vpt_ray.uncertainty import difference_se

Effect = Literal["stop", "optimize", "advance", "info"]


@dataclass(frozen=True)
class Evidence:
    """The figures the rules read (None = not measured). SEs are standard errors of the figure
    next to them; `overfitting` is metrics.json's overfitting section (`honesty`)."""

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


@dataclass(frozen=True)
class Check:
    """One rule's outcome. `fired`: for stop and optimize rules, the rule calls for that verdict;
    for advance rules, the gate is passed. `line`: the figure, its SE and the threshold."""

    rule: str
    effect: Effect
    fired: bool
    line: str
    figure: float | None = None
    se: float | None = None
    threshold: float | None = None
    decisive: bool = True


Rule = Callable[[DecisionConfig, HardwareConfig, Evidence], list[Check]]


def _bad(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _f(x: float | None, d: int = 4) -> str:
    return "n/a" if _bad(x) else f"{x:.{d}f}"


def _se(x: float | None, d: int = 4) -> str:
    return f"SE {_f(x, d)}"


def memory_rule(rules: DecisionConfig, hw: HardwareConfig, ev: Evidence) -> list[Check]:
    over = ev.peak_memory_gb > hw.memory_limit_gb
    return [
        Check(
            "peak memory (GB)",
            "stop",
            over,
            f"peak memory {ev.peak_memory_gb:.2f} GB {'>' if over else '<='} limit "
            f"{hw.memory_limit_gb:g} GB (a measurement: no sampling error)",
            ev.peak_memory_gb,
            None,
            hw.memory_limit_gb,
        )
    ]


def overfitting_rule(rules: DecisionConfig, hw: HardwareConfig, ev: Evidence) -> list[Check]:
    """Signs (gap, decisive PBO) and their out-of-sample confirmation (selection costs, CV ->
    OOS degradation); one stop check that fires when a sign is confirmed."""
    z, o = rules.stop_se, ev.overfitting
    checks: list[Check] = []

    # (A) the gap, noise-aware
    gap, gap_se = ev.train_val_gap, ev.train_val_gap_se
    bar = rules.max_train_val_gap + z * (0.0 if _bad(gap_se) else gap_se)
    sign_gap = not _bad(gap) and gap > bar
    checks.append(
        Check(
            "train - validation accuracy gap",
            "info",
            sign_gap,
            f"train-validation accuracy gap {_f(gap)} ({_se(gap_se)}) "
            f"{'>' if sign_gap else '<='} {rules.max_train_val_gap:g} + {z:g} SE = {_f(bar)}: "
            + ("a sign of overfitting" if sign_gap else "no sign of overfitting"),
            gap,
            gap_se,
            rules.max_train_val_gap,
        )
    )

    # (B) PBO, counted only when decisive
    pbo = o.get("pbo")
    n_done = int(o.get("n_trials_completed") or 0)
    distinct = o.get("trials_distinct")
    why_not = []
    if n_done < rules.min_trials_for_pbo:
        why_not.append(
            f"{n_done} trials fitted every fold < decision.min_trials_for_pbo "
            f"{rules.min_trials_for_pbo}"
        )
    if distinct is False:
        why_not.append(
            f"the trials' Sharpe ratios spread {_f(o.get('trial_sharpe_spread'))} < the SE of "
            f"one Sharpe {_f(o.get('trial_sharpe_se'))} (near-identical: ranking them is a "
            "coin flip)"
        )
    decisive = not _bad(pbo) and not why_not and distinct is not None
    sign_pbo = decisive and pbo > rules.max_pbo
    if _bad(pbo):
        pbo_line = f"probability of backtest overfitting n/a ({o.get('pbo_note', 'not computed')})"
    else:
        pbo_line = (
            f"probability of backtest overfitting {pbo:.3f} "
            f"{'>' if pbo > rules.max_pbo else '<='} {rules.max_pbo:g} (from {n_done} trials "
            "fitted every fold; no SE: a share of CSCV splits)"
        )
        pbo_line += (
            (": a sign of overfitting" if sign_pbo else ": decisive, no sign of overfitting")
            if decisive
            else ": not decisive, " + "; ".join(why_not or ["trials' spread not measured"])
        )
    checks.append(
        Check(
            "probability of backtest overfitting",
            "info",
            sign_pbo,
            pbo_line,
            pbo,
            None,
            rules.max_pbo,
            decisive,
        )
    )

    # (C1) does the selection cost out of sample? (meaningful only with a decisive PBO)
    rank, loss = o.get("selected_oos_rank"), o.get("prob_oos_loss")
    costs = decisive and not _bad(rank) and not _bad(loss)
    costs = costs and rank < 0.5 and loss > rules.max_prob_oos_loss
    if not _bad(rank) and not _bad(loss):
        checks.append(
            Check(
                "selection out of sample",
                "info",
                costs,
                f"selected configuration's mean CSCV out-of-sample rank {rank:.2f} "
                f"({'<' if rank < 0.5 else '>='} 0.5 = the median trial); in-sample winners "
                f"lose out of sample in {loss:.0%} of splits "
                f"({'>' if loss > rules.max_prob_oos_loss else '<='} "
                f"{rules.max_prob_oos_loss:.0%})"
                + ("" if decisive else ": not decisive (PBO not decisive)"),
                rank,
                None,
                0.5,
                decisive,
            )
        )

    # (C2) performance degradation of the final model, CV -> out of sample
    drop = se_drop = None
    degraded = False
    if not _bad(ev.cv_accuracy):
        drop = ev.cv_accuracy - ev.oos_accuracy
        se_drop = difference_se(ev.cv_accuracy_se, ev.oos_accuracy_se)
        degraded = not _bad(se_drop) and drop > z * se_drop
        checks.append(
            Check(
                "CV -> OOS accuracy degradation",
                "info",
                degraded,
                f"CV accuracy {_f(ev.cv_accuracy)} ({_se(ev.cv_accuracy_se)}) -> OOS accuracy "
                f"{_f(ev.oos_accuracy)} ({_se(ev.oos_accuracy_se)}): drop {_f(drop)} "
                f"{'>' if degraded else '<='} {z:g} SE of the difference "
                f"({_f(None if _bad(se_drop) else z * se_drop)})",
                drop,
                se_drop,
                None if _bad(se_drop) else z * se_drop,
            )
        )

    signs = [c for c, on in ((checks[0], sign_gap), (checks[1], sign_pbo)) if on]
    confirm = [c for c in checks[2:] if c.fired]
    stop = bool(signs and confirm)
    if stop:
        line = (
            "stop: overfitting: "
            + "; ".join(c.line for c in signs)
            + "; confirmed out of sample: "
            + "; ".join(c.line for c in confirm)
        )
    elif signs:
        line = (
            f"overfitting: a sign ({', '.join(c.rule for c in signs)}) not confirmed out of "
            "sample: no stop"
        )
    else:
        line = "overfitting: no decisive sign"
    return [Check("overfitting", "stop", stop, line), *checks]


def degradation_rule(rules: DecisionConfig, hw: HardwareConfig, ev: Evidence) -> list[Check]:
    """Optimize when a metric fell below the previous phase's by more than `optimize_se` SEs of
    the difference (the previous row's own SE; the current one when an old row has none)."""
    prev = ev.previous
    if not prev:
        return []
    out = []
    for key, label, now, se_now, d in (
        ("accuracy", "OOS accuracy", ev.oos_accuracy, ev.oos_accuracy_se, 4),
        ("sharpe", "Sharpe", ev.sharpe, ev.sharpe_se, 2),
    ):
        before = prev.get(key)
        if _bad(before) or _bad(now):
            continue
        se_before = prev.get(f"{key}_se")
        assumed = _bad(se_before)
        se = difference_se(se_now, se_now if assumed else se_before)
        drop = float(before) - now
        bar = rules.optimize_se * (0.0 if _bad(se) else se)
        fired = drop > bar
        note = " (the previous run's SE taken equal to this run's)" if assumed else ""
        out.append(
            Check(
                f"{label} vs previous phase",
                "optimize",
                fired,
                f"{label} {now:.{d}f} ({_se(se_now, d)}) vs phase {prev.get('phase')}'s "
                f"{float(before):.{d}f}: drop {drop:.{d}f} {'>' if fired else '<='} "
                f"{rules.optimize_se:g} SE of the difference ({bar:.{d}f}){note}"
                + (": degraded beyond noise" if fired else ": within noise"),
                drop,
                se,
                bar,
            )
        )
    return out


def advance_rule(rules: DecisionConfig, hw: HardwareConfig, ev: Evidence) -> list[Check]:
    acc_ok = ev.oos_accuracy > rules.min_accuracy
    sharpe_ok = not _bad(ev.sharpe) and ev.sharpe > rules.min_sharpe
    dsr_ok = not _bad(ev.dsr) and ev.dsr >= rules.min_dsr
    sharpe = (
        "Sharpe n/a"
        if _bad(ev.sharpe)
        else f"Sharpe {ev.sharpe:.3f} ({_se(ev.sharpe_se, 3)}) "
        f"{'>' if sharpe_ok else '<='} {rules.min_sharpe:g}"
    )
    dsr = (
        "deflated Sharpe n/a"
        if _bad(ev.dsr)
        else f"deflated Sharpe {ev.dsr:.3f} {'>=' if dsr_ok else '<'} {rules.min_dsr:g} "
        "(a probability: the noise is priced in)"
    )
    return [
        Check(
            "OOS accuracy",
            "advance",
            acc_ok,
            f"OOS accuracy {ev.oos_accuracy:.4f} ({_se(ev.oos_accuracy_se)}) "
            f"{'>' if acc_ok else '<='} {rules.min_accuracy:g}",
            ev.oos_accuracy,
            ev.oos_accuracy_se,
            rules.min_accuracy,
        ),
        Check(
            "Sharpe (daily, annualized)",
            "advance",
            sharpe_ok,
            sharpe,
            ev.sharpe,
            ev.sharpe_se,
            rules.min_sharpe,
        ),
        Check("deflated Sharpe (probability)", "advance", dsr_ok, dsr, ev.dsr, None, rules.min_dsr),
    ]


RULES: tuple[Rule, ...] = (memory_rule, overfitting_rule, degradation_rule, advance_rule)


def verdict(checks: list[Check]) -> dict:
    """The verdict from the checks: the reasons start with the lines that decided it, then every
    other check's line; `checks` keeps them all (JSON-ready)."""
    stop = [c for c in checks if c.effect == "stop" and c.fired]
    degrade = [c for c in checks if c.effect == "optimize" and c.fired]
    gates = [c for c in checks if c.effect == "advance"]
    if stop:
        v, lead = "stop", [c.line if c.line.startswith("stop") else f"stop: {c.line}" for c in stop]
    elif degrade:
        v, lead = "optimize", [f"optimize: {c.line}" for c in degrade]
    elif gates and all(c.fired for c in gates):
        v, lead = "advance", ["advance: " + " and ".join(c.line for c in gates)]
    else:
        v, lead = "hold", ["hold: " + "; ".join(c.line for c in gates)]
    said = " ".join(lead)
    rest = [c.line for c in checks if c.line not in said]  # each line once
    return {
        "verdict": v,
        "reasons": lead + rest,
        "checks": [dataclasses.asdict(c) for c in checks],
    }


def decide(
    rules: DecisionConfig,
    hardware: HardwareConfig,
    *,
    oos_accuracy: float,
    sharpe: float | None,
    train_val_gap: float,
    peak_memory_gb: float,
    dsr: float | None = None,
    previous: dict | None = None,
    oos_accuracy_se: float | None = None,
    sharpe_se: float | None = None,
    train_val_gap_se: float | None = None,
    cv_accuracy: float | None = None,
    cv_accuracy_se: float | None = None,
    overfitting: dict | None = None,
) -> dict:
    """Verdict, reasons (each with figure, SE and threshold) and every check; `previous` is the
    previous phase's tracker row (accuracy, sharpe and, when recorded, their SEs)."""
    ev = Evidence(
        oos_accuracy=oos_accuracy,
        sharpe=sharpe,
        train_val_gap=train_val_gap,
        peak_memory_gb=peak_memory_gb,
        dsr=dsr,
        previous=previous,
        oos_accuracy_se=oos_accuracy_se,
        sharpe_se=sharpe_se,
        train_val_gap_se=train_val_gap_se,
        cv_accuracy=cv_accuracy,
        cv_accuracy_se=cv_accuracy_se,
        overfitting=overfitting or {},
    )
    return verdict([c for rule in RULES for c in rule(rules, hardware, ev)])
