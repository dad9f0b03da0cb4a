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
3. **advance** when every gate of `vpt_ray.validation.advance` passes: the lower confidence
   bounds (figure - `z` SE) of OOS accuracy above `min_accuracy`, of the skill over the naive
   predictor (always the training majority) above 0 and of the Sharpe above `min_sharpe`; the
   deflated Sharpe (which prices in the number of trials and the track record's noise) >=
   `min_dsr`; at least `min_trades` trades and `min_effective_samples` effective OOS samples.
4. **hold** otherwise: "not enough evidence", naming each bound that failed and how many OOS
   sessions would clear it at the observed effect.

The seed's literal rule on the point estimates and the robustness lines (higher costs, the excess
over buy-and-hold) are shown as notes that never change the verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from vpt_ray.core.config import DecisionConfig, HardwareConfig
from vpt_ray.validation.advance import advance_rule
from vpt_ray.validation.checks import Check, Effect, Evidence
from vpt_ray.validation.checks import bad as _bad
from vpt_ray.validation.checks import fmt as _f
from vpt_ray.validation.checks import se_text as _se
from vpt_ray.validation.uncertainty import difference_se

__all__ = ["RULES", "Check", "Effect", "Evidence", "apply_concentration", "decide", "verdict"]


Rule = Callable[[DecisionConfig, HardwareConfig, Evidence], list[Check]]


def memory_rule(rules: DecisionConfig, hw: HardwareConfig, ev: Evidence) -> list[Check]:
    over = ev.peak_memory_gb > hw.memory_limit_gb
    return [
        Check(
            "peak memory (GB)",
            "stop",
            over,
            f"peak memory {ev.peak_memory_gb:.2f} GB {'>' if over else '<='} limit "
            f"{ev.memory_limit_text or f'{hw.memory_limit_gb:g} GB'} (a measurement: no "
            "sampling error)",
            ev.peak_memory_gb,
            None,
            hw.memory_limit_gb,
        )
    ]


def gap_sign(rules: DecisionConfig, ev: Evidence) -> Check:
    """Sign A: the train-validation gap beyond its threshold by more than `stop_se` SEs."""
    z, gap, se = rules.stop_se, ev.train_val_gap, ev.train_val_gap_se
    bar = rules.max_train_val_gap + z * (0.0 if _bad(se) else se)
    sign = not _bad(gap) and gap > bar
    return Check(
        "train - validation accuracy gap",
        "info",
        sign,
        f"train-validation accuracy gap {_f(gap)} ({_se(se)}) {'>' if sign else '<='} "
        f"{rules.max_train_val_gap:g} + {z:g} SE = {_f(bar)}: "
        + ("a sign of overfitting" if sign else "no sign of overfitting"),
        gap,
        se,
        rules.max_train_val_gap,
    )


def pbo_sign(rules: DecisionConfig, o: dict) -> Check:
    """Sign B: PBO above its threshold, counted only when decisive (enough trials that differ by
    more than one Sharpe's noise); `decisive` says whether it was."""
    pbo, n_done = o.get("pbo"), int(o.get("n_trials_completed") or 0)
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
    sign = decisive and pbo > rules.max_pbo
    if _bad(pbo):
        line = (
            f"probability of backtest overfitting n/a ({o.get('pbo_note', 'not computed')}): "
            "not decisive"
        )
    else:
        line = (
            f"probability of backtest overfitting {pbo:.3f} "
            f"{'>' if pbo > rules.max_pbo else '<='} {rules.max_pbo:g} (from {n_done} trials "
            "fitted every fold; no SE: a share of CSCV splits)"
        ) + (
            (": a sign of overfitting" if sign else ": decisive, no sign of overfitting")
            if decisive
            else ": not decisive, " + "; ".join(why_not or ["trials' spread not measured"])
        )
    return Check(
        "probability of backtest overfitting", "info", sign, line, pbo, None, rules.max_pbo,
        decisive,
    )  # fmt: skip


def selection_cost(rules: DecisionConfig, o: dict, decisive: bool) -> Check | None:
    """Confirmation C1: with a decisive PBO, the selected configuration ranks below the median
    trial out of sample and the in-sample winners lose money there more often than not."""
    rank, loss = o.get("selected_oos_rank"), o.get("prob_oos_loss")
    if _bad(rank) or _bad(loss):
        return None
    costs = decisive and rank < 0.5 and loss > rules.max_prob_oos_loss
    return Check(
        "selection out of sample",
        "info",
        costs,
        f"selected configuration's mean CSCV out-of-sample rank {rank:.2f} "
        f"({'<' if rank < 0.5 else '>='} 0.5 = the median trial); in-sample winners lose out "
        f"of sample in {loss:.0%} of splits ({'>' if loss > rules.max_prob_oos_loss else '<='} "
        f"{rules.max_prob_oos_loss:.0%})"
        + ("" if decisive else ": not decisive (PBO not decisive)"),
        rank,
        None,
        0.5,
        decisive,
    )


def degradation(rules: DecisionConfig, ev: Evidence) -> Check | None:
    """Confirmation C2: the final model's OOS accuracy below its CV accuracy by more than
    `stop_se` SEs of the difference."""
    if _bad(ev.cv_accuracy):
        return None
    z = rules.stop_se
    drop = ev.cv_accuracy - ev.oos_accuracy
    se = difference_se(ev.cv_accuracy_se, ev.oos_accuracy_se)
    bar = None if _bad(se) else z * se
    fired = bar is not None and drop > bar
    return Check(
        "CV -> OOS accuracy degradation",
        "info",
        fired,
        f"CV accuracy {_f(ev.cv_accuracy)} ({_se(ev.cv_accuracy_se)}) -> OOS accuracy "
        f"{_f(ev.oos_accuracy)} ({_se(ev.oos_accuracy_se)}): drop {_f(drop)} "
        f"{'>' if fired else '<='} {z:g} SE of the difference ({_f(bar)})",
        drop,
        se,
        bar,
    )


def overfitting_rule(rules: DecisionConfig, hw: HardwareConfig, ev: Evidence) -> list[Check]:
    """Stop when a sign of overfitting (A: gap, B: decisive PBO) is confirmed out of sample
    (C1: the selection costs, C2: CV -> OOS degradation): one stop check, then its parts."""
    signs = [gap_sign(rules, ev), pbo_sign(rules, ev.overfitting)]
    confirms = [
        c
        for c in (selection_cost(rules, ev.overfitting, signs[1].decisive), degradation(rules, ev))
        if c is not None
    ]
    fired_signs = [c for c in signs if c.fired]
    fired_confirms = [c for c in confirms if c.fired]
    stop = bool(fired_signs and fired_confirms)
    if stop:
        line = (
            "stop: overfitting: "
            + "; ".join(c.line for c in fired_signs)
            + "; confirmed out of sample: "
            + "; ".join(c.line for c in fired_confirms)
        )
    elif fired_signs:
        line = (
            f"overfitting: a sign ({', '.join(c.rule for c in fired_signs)}) not confirmed out "
            "of sample: no stop"
        )
    else:
        line = "overfitting: no decisive sign"
    return [Check("overfitting", "stop", stop, line), *signs, *confirms]


def degradation_rule(rules: DecisionConfig, hw: HardwareConfig, ev: Evidence) -> list[Check]:
    """Optimize when a metric fell below the previous phase's by more than `optimize_se` SEs of
    the difference (each run's own SE; when one side has none, the other's stands in)."""
    prev = ev.previous
    if not prev:
        return []
    before_on = prev.get("backtest_on") or "training tickers"  # rows before the field: phases 1-4
    if before_on != ev.backtest_on:  # other stocks, other costs: a drop would not be a regression
        return [
            Check(
                "vs previous phase",
                "note",
                False,
                f"vs phase {prev.get('phase')}: not compared (this run is backtested on "
                f"{ev.backtest_on}, phase {prev.get('phase')} on {before_on}: other stocks, "
                "other costs); the degradation rule is not applied",
            )
        ]
    out = []
    for key, label, now, se_now, d in (
        ("accuracy", "OOS accuracy", ev.oos_accuracy, ev.oos_accuracy_se, 4),
        ("sharpe", "Sharpe", ev.sharpe, ev.sharpe_se, 2),
    ):
        before = prev.get(key)
        if _bad(before) or _bad(now):
            continue
        se_before = prev.get(f"{key}_se")
        note = ""
        if _bad(se_before) and not _bad(se_now):  # an older tracker row
            se_before, note = se_now, " (the previous run's SE taken equal to this run's)"
        elif _bad(se_now) and not _bad(se_before):  # e.g. no trade: no Sharpe dispersion
            se_now, note = se_before, " (this run's SE taken equal to the previous run's)"
        se = difference_se(se_now, se_before)
        drop = float(before) - now
        bar = rules.optimize_se * (0.0 if _bad(se) else se)
        fired = drop > bar
        if _bad(se):
            note = " (no SE on either side: any drop counts)"
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
        failed = [c for c in gates if not c.fired] or gates
        v, lead = "hold", ["hold: not enough evidence: " + "; ".join(c.line for c in failed)]
    said = " ".join(lead)
    rest = [c.line for c in checks if c.line not in said]  # each line once
    if v == "hold":  # one line for the tracker: which gates failed
        summary = "hold: not enough evidence (" + ", ".join(c.rule for c in failed) + ")"
    elif v == "advance":
        summary = f"advance: every gate's lower bound cleared ({len(gates)} gates)"
    else:
        summary = lead[0]
    return {
        "verdict": v,
        "summary": summary,
        "reasons": lead + rest,
        "checks": [dataclasses.asdict(c) for c in checks],
    }


def decide(rules: DecisionConfig, hardware: HardwareConfig, **figures: object) -> dict:
    """Verdict, reasons (each with figure, SE and threshold) and every check. `figures` are
    `Evidence`'s fields, by name (an unknown one is a TypeError): `previous` is the previous
    phase's tracker row (accuracy, sharpe and, when recorded, their SEs); an advance needs the
    skill, the trades and the effective samples too; `hardware.memory_limit_gb` is the run's
    effective limit, `memory_limit_text` says which."""
    for empty in ("overfitting", "robustness"):  # None = not measured: no section
        figures[empty] = figures.get(empty) or {}
    ev = Evidence(**figures)  # type: ignore[arg-type]
    return verdict([c for rule in RULES for c in rule(rules, hardware, ev)])


def apply_concentration(verdict: dict, rules: DecisionConfig, concentration: dict) -> dict:
    """The concentration rule, applied after the others: a result where one ticker makes more
    than `rules.max_top_ticker_share` of the net PnL is not evidence of a model that scales, so
    an "advance" becomes "hold"; any other verdict keeps its course and notes the figure.

    `concentration` is metrics.json's `backtest.concentration` (top ticker and its share of the
    net PnL, None when the portfolio made no net profit: nothing to attribute, no rule fires).
    A limit of 1.0 or more is "not applied": the share is shown as information (phases 1-2: with
    5 tickers one may make most of the PnL), never as a pass."""
    share, top = concentration.get("top_ticker_share"), concentration.get("top_ticker")
    limit = rules.max_top_ticker_share
    if _bad(share):
        line = "concentration: no net profit to attribute (top ticker share n/a)"
        return {**verdict, "reasons": [*verdict["reasons"], line]}
    if limit >= 1.0:
        line = (
            f"concentration: not applied (decision.max_top_ticker_share {limit:.0%}); top ticker "
            f"{top} makes {share:.1%} of the net PnL (information)"
        )
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
        return {**verdict, "verdict": "hold", "summary": f"hold: {line}",
                "reasons": [f"hold: {line}", *passed]}  # fmt: skip
    return {**verdict, "reasons": [*verdict["reasons"], line]}
