"""The baselines in words: the naive predictor next to the OOS and CV accuracy, and the
robustness figures (higher costs, buy-and-hold), as summary.md lines, the console's row and the
tracker's note. metrics.json's `oos` / `cv` naive figures (`vpt_ray.validation.baseline`) are the
source; runs written before them have none, and these return nothing.
"""

from __future__ import annotations


def _n(v: float | None, d: int = 4, sign: bool = False) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def _with_se(sec: dict, key: str, sign: bool = False) -> str:
    return f"{_n(sec.get(key), sign=sign)} (SE {_n(sec.get(f'{key}_se'))})"


def naive_text(sec: dict) -> str | None:
    """'naive (always up) 0.5012 (SE 0.0040), skill +0.0281 (SE 0.0057), balanced accuracy ...'
    for an `oos` or `cv` section with naive figures, else None."""
    if sec.get("skill") is None and sec.get("naive_accuracy") is None:
        return None
    direction = sec.get("naive_direction")
    if direction is None and sec.get("naive_directions"):
        calls = sorted(set(sec["naive_directions"]) - {None})
        direction = "/".join(calls) + " by fold" if calls else None
    who = f"always {direction}" if direction else "the training majority"
    return (
        f"naive predictor ({who}) {_with_se(sec, 'naive_accuracy')}, skill over it "
        f"{_with_se(sec, 'skill', sign=True)}, balanced accuracy "
        f"{_with_se(sec, 'balanced_accuracy')}"
    )


def baseline_lines(m: dict) -> list[str]:
    """summary.md: the naive predictor against the OOS and the CV accuracy, then the
    robustness of the backtest."""
    lines = []
    oos, cv = naive_text(m.get("oos") or {}), naive_text(m.get("cv") or {})
    if oos:
        o = m["oos"]
        lines.append(
            f"- Against the naive predictor (the training labels' majority; OOS labels up "
            f"{_n(o.get('base_rate'), 3)}, {_n(o.get('effective_samples'), 0)} effective "
            f"samples): OOS accuracy {_with_se(o, 'accuracy')}, {oos}"
            + (f"; CV: {cv}" if cv else "")
        )
    rob = robustness_text(m)
    if rob:
        lines.append(f"- Robustness (information, not rules): {rob}")
    return lines


def robustness_text(m: dict) -> str | None:
    """Sharpe at 2x / 3x costs and the excess over buy-and-hold with its SE, when measured."""
    parts = []
    stress = (m.get("backtest") or {}).get("cost_stress") or {}
    if stress:
        parts.append(
            "Sharpe "
            + ", ".join(f"{_n(v.get('sharpe'), 2)} at {k}x costs" for k, v in stress.items())
        )
    b = m.get("benchmark") or {}
    if b.get("excess_return") is not None and "excess_return_se" in b:
        se = b.get("excess_return_se")
        parts.append(
            f"excess return over buy-and-hold {b['excess_return']:+.2%} (SE "
            + ("n/a" if se is None or se != se else f"{se:.2%}")
            + ")"
        )
    return "; ".join(parts) or None


def console_row(m: dict) -> tuple[str, str] | None:
    """The console summary's row: OOS skill over the naive predictor."""
    o = m.get("oos") or {}
    if o.get("skill") is None:
        return None
    return (
        "vs naive predictor",
        f"always {o.get('naive_direction')}: accuracy {_n(o.get('naive_accuracy'))}; skill "
        f"{_with_se(o, 'skill', sign=True)}, balanced accuracy "
        f"{_n(o.get('balanced_accuracy'))}",
    )


def tracker_note(m: dict) -> str | None:
    """The tracker row's note: OOS skill over the naive predictor with its SE."""
    o = m.get("oos") or {}
    if o.get("skill") is None:
        return None
    return (
        f"OOS skill over naive (always {o.get('naive_direction')}) {_n(o['skill'], sign=True)} "
        f"(SE {_n(o.get('skill_se'))})"
    )
