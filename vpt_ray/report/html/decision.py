"""The decision section ("Should I scale?"): the verdict, each rule with its figure, standard
error and threshold, what failing it means, and the overfitting statistics; plus the headline
figures at the top of the page.
"""

from __future__ import annotations

import html

import pandas as pd

from vpt_ray.report.html.common import finite, html_table, show
from vpt_ray.report.html.inputs import RunFiles

_IF_FAILS = {
    "stop": "stop",
    "optimize": "optimize",
    "advance": "advance",
    "info": "sign of overfitting (stops only if confirmed out of sample)",
    "note": "nothing: information, not a rule",
}


def _rules_from_checks(checks: list[dict]) -> pd.DataFrame:
    """The decision's own checks (`vpt_ray.validation.decision`): figure, SE, threshold, outcome."""
    out = []
    for c in checks:
        if c["rule"] == "overfitting":
            out.append({"rule": "overfitting (a sign confirmed out of sample)", "needs": "none",
                        "value": None, "SE": None, "passed": not c["fired"],
                        "if it fails": "stop (overfitting)"})  # fmt: skip
            continue
        passed = c["fired"] if c["effect"] == "advance" else not c["fired"]
        threshold = c.get("threshold")
        op = ">" if c["effect"] == "advance" else "<="
        op = ">=" if c["rule"].startswith("deflated") else op
        out.append(
            {"rule": c["rule"], "needs": "n/a" if threshold is None else f"{op} {threshold:g}",
             "value": c.get("figure"), "SE": c.get("se"),
             "passed": passed if c.get("decisive", True) else None,
             "if it fails": _IF_FAILS[c["effect"]]}
        )  # fmt: skip
    return pd.DataFrame(out)


def decision_rules(metrics: dict, config: dict) -> pd.DataFrame:
    """The decision rules with their threshold, this run's figure and whether it passed (from
    the decision's own checks when the run recorded them)."""
    checks = (metrics.get("decision") or {}).get("checks")
    if checks:
        return _rules_from_checks(checks)
    rules = config.get("decision", {})
    hw = config.get("hardware", {})
    oos, bt, cv = metrics.get("oos", {}), metrics.get("backtest", {}), metrics.get("cv", {})
    peak = metrics.get("resources", {}).get("peak_memory_gb")
    rows = [
        ("OOS accuracy", ">", rules.get("min_accuracy"), oos.get("accuracy"), "advance"),
        ("Sharpe (daily, annualized)", ">", rules.get("min_sharpe"), bt.get("sharpe"), "advance"),
        ("train - validation accuracy gap", "<=", rules.get("max_train_val_gap"),
         cv.get("train_val_gap"), "stop (overfitting)"),
        ("peak memory (GB)", "<=", hw.get("memory_limit_gb"), peak, "stop (memory)"),
    ]  # fmt: skip
    over = metrics.get("overfitting") or {}
    if "max_pbo" in rules or "pbo" in over:
        rows.append(("probability of backtest overfitting", "<=", rules.get("max_pbo"),
                     over.get("pbo"), "stop (overfitting)"))  # fmt: skip
    if "min_dsr" in rules or "dsr" in over:
        rows.append(("deflated Sharpe (probability)", ">=", rules.get("min_dsr"), over.get("dsr"),
                     "advance"))  # fmt: skip
    out = []
    for name, op, threshold, value, on_fail in rows:
        ok = None
        if finite(threshold) and finite(value):
            ok = {">": value > threshold, ">=": value >= threshold, "<=": value <= threshold}[op]
        out.append(
            {"rule": name, "needs": f"{op} {threshold}", "value": value, "passed": ok,
             "if it fails": on_fail}
        )  # fmt: skip
    return pd.DataFrame(out)


def kpi_html(m: dict) -> str:
    cv, oos, bt = m.get("cv", {}), m.get("oos", {}), m.get("backtest", {})
    res = m.get("resources", {})
    cards = [
        ("CV accuracy", show(cv.get("accuracy")), f"AUC {show(cv.get('auc'))}"),
        ("OOS accuracy", show(oos.get("accuracy")), f"AUC {show(oos.get('auc'))}"),
        ("total return", show(bt.get("total_return"), "pct"), f"{show(bt.get('trades'))} trades"),
        ("Sharpe", show(bt.get("sharpe"), digits=2),
         f"max DD {show(bt.get('max_drawdown'), 'pct')}"),
        ("peak memory", f"{show(res.get('peak_memory_gb'), digits=2)} GB",
         f"wall {show(res.get('wall_seconds'), digits=0)} s"),
        ("decision", str(m.get("decision", {}).get("verdict", "n/a")).upper(), "")
        if m.get("kind") != "backtest"
        else ("backtest of", str(m.get("model_run_id")), "no decision of its own"),
    ]  # fmt: skip
    return (
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi" data-kpi="{html.escape(k)}"><div class="k">{html.escape(k)}</div>'
            f'<div class="v">{html.escape(v)}</div><div class="s">{html.escape(s)}</div></div>'
            for k, v, s in cards
        )
        + "</div>"
    )


def decision_section(run: RunFiles) -> str:
    if run.is_backtest:
        m = run.metrics
        rules = decision_rules(m, run.config)
        rules = rules[rules["value"].notna()]
        mark = {True: "pass", False: "FAIL", None: "n/a"}
        return (
            f'<div class="verdict" id="verdict">BACKTEST</div><p>Backtest of model run '
            f"<code>{html.escape(str(m.get('model_run_id')))}</code> on "
            f"{html.escape(str(m.get('windows', {}).get('backtest')))}. No decision: the phase "
            "run that trained the model decides; the rules it applies, on this window's "
            "figures:</p>"
            + html_table(rules, {"passed": lambda v: mark[v], "needs": str, "rule": str})
        )
    dec = run.metrics.get("decision", {})
    verdict = str(dec.get("verdict", "n/a"))
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in dec.get("reasons", []))
    rules = decision_rules(run.metrics, run.config)
    mark = {True: "pass", False: "FAIL", None: "n/a"}
    table = html_table(rules, {"passed": lambda v: mark[v], "needs": str, "rule": str})
    prev = dec.get("previous_phase_run")
    prev_txt = (
        f"<p>Compared with the previous phase's latest run <code>{html.escape(prev)}</code> "
        "(a drop in OOS accuracy or Sharpe beyond one SE of the difference sends the verdict "
        "to optimize).</p>"
        if prev
        else "<p>No earlier phase in the tracker to compare with.</p>"
    )
    return (
        f'<div class="verdict v-{html.escape(verdict)}" id="verdict">{html.escape(verdict.upper())}'
        f"</div><ul>{reasons}</ul>{table}{_overfitting(run.metrics.get('overfitting'))}{prev_txt}"
    )


def _overfitting(over: dict | None) -> str:
    """What the search's selection did to the numbers (metrics.json's overfitting section)."""
    if not over:
        return ""
    stab = over.get("stability") or {}
    parts = [
        f"{show(over.get('n_trials'))} trials over {show(over.get('validation_days'))} "
        "validation days",
        f"probability of backtest overfitting (CSCV) {show(over.get('pbo'), digits=3)}",
        f"deflated Sharpe {show(over.get('dsr'), digits=3)} "
        f"(Sharpe {show(over.get('sharpe_annual'), digits=2)} vs "
        f"{show(over.get('dsr_benchmark_sr_annual'), digits=2)} expected from the best of "
        "the trials by luck)",
        f"probabilistic Sharpe {show(over.get('psr'), digits=3)}",
    ]
    if stab:
        parts.append(
            f"chosen configuration's rank per fold {stab.get('ranks')}, top in "
            f"{show(stab.get('top_hit_rate'), 'pct')} of folds"
        )
    notes = [over[k] for k in ("trials_note", "pbo_note", "dsr_note") if over.get(k)]
    return "<h3>Overfitting</h3><p>" + html.escape("; ".join(parts + notes)) + ".</p>"
