"""The decision section's baselines: the naive predictor (always the training majority) against
the OOS and CV accuracy, and the robustness lines, as one paragraph (`report.evidence`'s text).
"""

from __future__ import annotations

import html

from vpt_ray.report.evidence import naive_text, robustness_text


def baseline_html(m: dict) -> str:
    """<h3>Against the naive predictor</h3> and its figures; empty for runs without them."""
    oos, cv = naive_text(m.get("oos") or {}), naive_text(m.get("cv") or {})
    if not oos:
        return ""
    o = m["oos"]
    parts = [
        f"Out of sample ({o.get('samples', 0):,} labels, up {o.get('base_rate', 0):.1%} of the "
        f"time, {o.get('effective_samples', 0):,.0f} effective samples): accuracy "
        f"{o.get('accuracy', float('nan')):.4f}; {oos}."
    ]
    if cv:
        parts.append(f"Cross-validation (each fold's own training majority): {cv}.")
    rob = robustness_text(m)
    if rob:
        parts.append(f"Robustness (information, not rules): {rob}.")
    return (
        "<h3>Against the naive predictor</h3><p>Always predicting the training set's majority "
        "direction is the accuracy a model must beat: on trending data it is well above 0.5. "
        + html.escape(" ".join(parts))
        + "</p>"
    )
