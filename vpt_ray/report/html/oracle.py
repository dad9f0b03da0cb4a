"""The "Known truth" section of a synthetic run: the model next to the oracle (the generator's
true probabilities, traded by the same backtest) and the share of the attainable edge the model
captured; metrics.json's `oracle` section (`vpt_ray.validation.oracle`, docs/oracle.md), which
summary.md gives in one line.
"""

from __future__ import annotations

import html

import pandas as pd

from vpt_ray.report.html.common import html_table, show

_ROWS = (
    ("accuracy", "accuracy", 4, "(model - 0.5) / (oracle - 0.5)"),
    ("auc", "AUC", 4, "(model - 0.5) / (oracle - 0.5)"),
    ("log_loss", "log loss", 4, "(log 2 - model) / (log 2 - oracle): the information captured"),
    ("sharpe", "Sharpe (after costs)", 2, "model / oracle, both traded by the same portfolio"),
)


def has_oracle(metrics: dict) -> bool:
    return bool(metrics.get("oracle"))


def oracle_section(metrics: dict) -> str:
    """The model against the oracle on the synthetic tickers' out-of-sample bars."""
    o = metrics.get("oracle") or {}
    if not o:
        return ""
    if "skipped" in o:
        return f"<p>Known truth: skipped, {html.escape(str(o['skipped']))}.</p>"
    model, oracle, captured = o["model"], o["oracle"], o["edge_captured"]
    rows = [
        {"figure": label, "model": show(model.get(k), digits=d),
         "oracle": show(oracle.get(k), digits=d),
         "edge captured": show(captured.get(k), digits=2), "captured =": how}
        for k, label, d, how in _ROWS
    ]  # fmt: skip
    edge = (
        f"The oracle is due an accuracy of {show(oracle.get('expected_accuracy'))} on these bars "
        f"(SE of a realized accuracy {show(o.get('oracle_accuracy_se'))})"
    )
    if not o.get("oracle_has_edge"):
        edge += (
            f": no edge to capture at signal strength {html.escape(str(o['signal_strength']))}, "
            "so the captured shares are n/a"
        )
    return (
        f'<p id="oracle-text">On the {len(o["tickers"])} synthetic tickers\' '
        f"{show(o.get('samples'))} out-of-sample bars the generator's true probability of each "
        "label is known: the oracle trades it with the same labels, thresholds, costs and "
        f"portfolio as the model. {edge}.</p>"
        + '<div id="oracle-table">'
        + html_table(pd.DataFrame(rows), {"captured =": str, "figure": str})
        + "</div><p class=note>Not the best possible strategy: the same one, with the truth. "
        "How the probability is computed and checked: docs/oracle.md.</p>"
    )
