"""The advance rule: the seed's thresholds as one-sided tests, against the naive predictor, with a
minimum of evidence; plus the lines that inform the verdict without changing it.

Why it exists: the seed says "OOS accuracy > 52%, Sharpe > 1.0", and the figures are noisy. Read
on point estimates, real GOOG's 2012 daily bars advanced with accuracy 0.6347 +- 0.1133 (19
trades) while always predicting "up" scored 0.686. Here a threshold is a test:

- **gates** (all must pass to advance): the lower confidence bound figure - z SE (`decision.z`,
  default 1.645: a one-sided 5% test) above `decision.min_accuracy` for OOS accuracy, above 0
  for the skill over the naive predictor (accuracy - the training majority's accuracy on the same
  labels), above `decision.min_sharpe` for the Sharpe ratio; the deflated Sharpe >=
  `decision.min_dsr`; at least `decision.min_trades` trades and `decision.min_effective_samples`
  effective OOS samples (below those the SEs themselves are rough). A gate that fails says
  "not enough evidence", names the bound, and estimates how many OOS sessions would clear it at
  the observed effect (power: an SE shrinks with the square root of the sessions, so
  sessions_needed = sessions x (z SE / (figure - threshold))^2; none when the figure itself is
  not above the threshold).
- **notes** (never change the verdict): the seed's literal rule on the point estimates, so a
  reader sees both; the Sharpe at 2x and 3x the configured costs; the excess return over
  buy-and-hold with its SE.
"""

from __future__ import annotations

import math

from vpt_ray.core.config import DecisionConfig, HardwareConfig
from vpt_ray.validation.checks import Check, Evidence, bad, fmt, se_text


def lower_bound(figure: float | None, se: float | None, z: float) -> float | None:
    """figure - z SE (None when either is missing)."""
    return None if bad(figure) or bad(se) else float(figure) - z * float(se)


def sessions_to_clear(
    figure: float | None, se: float | None, threshold: float, z: float, sessions: float
) -> float | None:
    """OOS sessions at which figure - z SE would clear `threshold` if the figure stayed as
    observed and its SE shrank as 1/sqrt(sessions); None when no amount of data would (the
    figure is not above the threshold) or the inputs are missing."""
    if bad(figure) or bad(se) or not sessions or figure <= threshold:
        return None
    return sessions * (z * float(se) / (float(figure) - threshold)) ** 2


def _power(figure, se, threshold: float, z: float, ev: Evidence, what: str) -> str:
    """The power estimate of a failed test, as a clause."""
    if bad(figure) or figure <= threshold:
        return (
            f"; the {what} itself is not above {threshold:g}: more data at this {what} cannot "
            "clear it"
        )
    need = sessions_to_clear(figure, se, threshold, z, ev.oos_sessions or 0)
    if need is None:
        return ""
    return (
        f"; at this {what}, about {math.ceil(need):,} OOS sessions (now {ev.oos_sessions:,}) "
        "would clear it"
    )


def _test(
    name: str, figure, se, threshold: float, z: float, ev: Evidence, what: str, d: int = 4
) -> Check:
    """One figure's one-sided test: passes when figure - z SE > threshold."""
    lb = lower_bound(figure, se, z)
    ok = lb is not None and lb > threshold
    if bad(figure):
        line = f"{what} n/a: not enough evidence"
    elif lb is None:
        line = f"{what} {figure:.{d}f} ({se_text(se, d)}): no lower bound: not enough evidence"
    else:
        line = (
            f"{what} {figure:.{d}f} ({se_text(se, d)}): lower bound {figure:.{d}f} - {z:g} x "
            f"{float(se):.{d}f} = {lb:.{d}f} {'>' if ok else '<='} {threshold:g}"
            + ("" if ok else _power(figure, se, threshold, z, ev, what))
        )
    return Check(name, "advance", ok, line, figure, se, threshold, bound=lb)


def accuracy_test(rules: DecisionConfig, ev: Evidence) -> Check:
    return _test(
        "OOS accuracy", ev.oos_accuracy, ev.oos_accuracy_se, rules.min_accuracy, rules.z, ev,
        "OOS accuracy",
    )  # fmt: skip


def skill_test(rules: DecisionConfig, ev: Evidence) -> Check:
    """The model's accuracy over the naive predictor's (always the training majority) on the
    same labels: on trending data the naive predictor beats 0.52 by itself."""
    c = _test("skill over the naive predictor", ev.skill, ev.skill_se, 0.0, rules.z, ev, "skill")
    naive = (
        f"skill over the naive predictor (always {ev.naive_direction}, the training majority: "
        f"accuracy {fmt(ev.naive_accuracy)})"
    )
    line = c.line.replace("skill", naive, 1)
    if not bad(ev.skill) and ev.skill <= 0:  # say why first, then that data cannot help
        line = line.replace(
            "; the skill itself is not above 0:",
            ": the model does not beat the naive predictor;",
            1,
        )
    return Check(c.rule, c.effect, c.fired, line, c.figure, c.se, c.threshold, bound=c.bound)


def sharpe_test(rules: DecisionConfig, ev: Evidence) -> Check:
    c = _test(
        "Sharpe (daily, annualized)", ev.sharpe, ev.sharpe_se, rules.min_sharpe, rules.z, ev,
        "Sharpe", d=3,
    )  # fmt: skip
    if bad(ev.sharpe):
        return Check(c.rule, c.effect, False, "Sharpe n/a (fewer than two sessions)", None,
                     None, rules.min_sharpe)  # fmt: skip
    return c


def dsr_gate(rules: DecisionConfig, ev: Evidence) -> Check:
    ok = not bad(ev.dsr) and ev.dsr >= rules.min_dsr
    line = (
        "deflated Sharpe n/a"
        if bad(ev.dsr)
        else f"deflated Sharpe {ev.dsr:.3f} {'>=' if ok else '<'} {rules.min_dsr:g} "
        "(a probability: the noise is priced in)"
    )
    return Check("deflated Sharpe (probability)", "advance", ok, line, ev.dsr, None, rules.min_dsr)


def _more_sessions(have: float, need: float, ev: Evidence) -> str:
    if not ev.oos_sessions or not have > 0:
        return ""
    n = math.ceil(ev.oos_sessions * need / have)
    return f"; at this rate about {n:,} OOS sessions (now {ev.oos_sessions:,}) would give it"


def evidence_gates(rules: DecisionConfig, ev: Evidence) -> list[Check]:
    """The minimum of evidence: trades for a Sharpe, effective samples for an accuracy."""
    trades = ev.trades
    ok = trades is not None and trades >= rules.min_trades
    t_line = (
        "trades n/a"
        if trades is None
        else f"{trades:,} trades {'>=' if ok else '<'} decision.min_trades {rules.min_trades}"
        + ("" if ok else ": too few to judge a Sharpe"
           + _more_sessions(trades, rules.min_trades, ev))
    )  # fmt: skip
    n = ev.oos_effective_samples
    n_ok = not bad(n) and n >= rules.min_effective_samples
    n_line = (
        "effective OOS samples n/a"
        if bad(n)
        else f"{n:,.0f} effective OOS samples (one per labels.horizon bars of a ticker) "
        f"{'>=' if n_ok else '<'} decision.min_effective_samples {rules.min_effective_samples:g}"
        + ("" if n_ok else ": too few to judge an accuracy"
           + _more_sessions(n, rules.min_effective_samples, ev))
    )  # fmt: skip
    return [
        Check("minimum evidence: trades", "advance", ok, t_line, trades, None, rules.min_trades),
        Check("minimum evidence: effective OOS samples", "advance", n_ok, n_line, n, None,
              rules.min_effective_samples),
    ]  # fmt: skip


def seed_rule_notes(rules: DecisionConfig, ev: Evidence) -> list[Check]:
    """The seed's rules read literally, on the point estimates (shown, not applied)."""
    out = []
    for name, figure, threshold, d in (
        ("OOS accuracy", ev.oos_accuracy, rules.min_accuracy, 4),
        ("Sharpe", ev.sharpe, rules.min_sharpe, 3),
    ):
        ok = not bad(figure) and figure > threshold
        line = (
            f"seed rule on the point estimate (shown, not applied): {name} {fmt(figure, d)} "
            f"{'>' if ok else '<='} {threshold:g}: {'pass' if ok else 'fail'}"
        )
        out.append(Check(f"seed rule: {name} > {threshold:g} (point estimate)", "note", ok,
                         line, figure, None, threshold))  # fmt: skip
    return out


def robustness_notes(rules: DecisionConfig, ev: Evidence) -> list[Check]:
    """Information, not rules: does the result survive higher costs, and does it beat holding
    the same tickers beyond noise?"""
    r, out = ev.robustness or {}, []
    for k, sharpe in (r.get("sharpe_at_cost") or {}).items():
        ok = not bad(sharpe) and sharpe > rules.min_sharpe
        out.append(Check(
            f"Sharpe at {k}x costs", "note", ok,
            f"robustness (information): Sharpe at {k}x the configured costs {fmt(sharpe, 3)} "
            f"{'>' if ok else '<='} {rules.min_sharpe:g}",
            sharpe, None, rules.min_sharpe,
        ))  # fmt: skip
    ex, ex_se = r.get("excess_return"), r.get("excess_return_se")
    if not bad(ex):
        lb = lower_bound(ex, ex_se, rules.z)
        ok = lb is not None and lb > 0
        out.append(Check(
            "excess return over buy-and-hold", "note", ok,
            f"robustness (information): excess return over equal-weight buy-and-hold "
            f"{ex:+.2%} (SE {_pct(ex_se)} from the daily differences; buy-and-hold "
            f"{_pct(r.get('benchmark_return'))}): lower bound "
            + ("n/a" if lb is None else f"{lb:+.2%} {'>' if ok else '<='} 0"),
            ex, ex_se, 0.0, bound=lb,
        ))  # fmt: skip
    return out


def _pct(x: float | None) -> str:
    return "n/a" if bad(x) else f"{x:.2%}"


def advance_rule(rules: DecisionConfig, hw: HardwareConfig, ev: Evidence) -> list[Check]:
    """The gates (effect "advance"), then the notes."""
    gates = [accuracy_test(rules, ev), skill_test(rules, ev), sharpe_test(rules, ev),
             dsr_gate(rules, ev), *evidence_gates(rules, ev)]  # fmt: skip
    return [*gates, *seed_rule_notes(rules, ev), *robustness_notes(rules, ev)]
