"""report.html's tables and the trade histogram on hand-made inputs (no phase run): the decision
rules as a reader takes them in (readable thresholds, a "vs previous phase" row that holds a
Sharpe), the trials table that fits the page, and a histogram that counts its tails."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from vpt_ray.core.config import DecisionConfig, HardwareConfig
from vpt_ray.report.html.common import readable
from vpt_ray.report.html.decision import decision_rules
from vpt_ray.report.html.learning import trials_table
from vpt_ray.report.html.trades import fig_trades, trade_bins
from vpt_ray.validation.decision import decide


def _metrics(previous: dict) -> tuple[dict, dict]:
    """metrics.json's pieces the rules table reads, with the decision's own checks against a
    previous phase whose Sharpe was 3.0 (SE 1.0) and accuracy 0.535 (SE 0.002)."""
    rules = DecisionConfig()
    dec = decide(rules, HardwareConfig(), oos_accuracy=0.531, sharpe=1.2, train_val_gap=0.02,
                 peak_memory_gb=2.0, dsr=0.97, previous=previous, oos_accuracy_se=0.004,
                 sharpe_se=0.9, train_val_gap_se=0.003, cv_accuracy=0.533,
                 cv_accuracy_se=0.003)  # fmt: skip
    metrics = {"oos": {"accuracy": 0.531, "accuracy_se": 0.004},
               "backtest": {"sharpe": 1.2, "sharpe_se": 0.9}, "decision": dec}  # fmt: skip
    config = {"decision": rules.model_dump()}
    return metrics, config


def test_a_vs_previous_phase_row_holds_this_runs_sharpe_and_the_bar_it_must_clear():
    prev = {"phase": 1, "accuracy": 0.535, "accuracy_se": 0.002, "sharpe": 3.0, "sharpe_se": 1.0}
    metrics, config = _metrics(prev)
    rows = decision_rules(metrics, config).set_index("rule")
    sharpe = rows.loc["Sharpe vs previous phase"]
    assert sharpe["value"] == 1.2 and sharpe["SE"] == 0.9  # a Sharpe, not the drop (1.8)
    diff_se = (0.9**2 + 1.0**2) ** 0.5  # the SE of the difference the decision used
    bar = 3.0 - config["decision"]["optimize_se"] * diff_se
    assert sharpe["needs"].startswith(f">= {readable(bar)} (previous phase 3 - ")
    assert sharpe["passed"] is False  # 1.2 < 3.0 - 1.345: the drop is beyond noise
    check = next(c for c in metrics["decision"]["checks"] if c["rule"].startswith("Sharpe vs"))
    assert check["fired"] and (sharpe["value"] >= bar) == (not check["fired"])
    acc = rows.loc["OOS accuracy vs previous phase"]
    assert acc["value"] == 0.531 and acc["SE"] == 0.004
    assert acc["passed"] is True  # 0.531 vs 0.535 - 1 x 0.0045: within noise


def test_thresholds_print_readably_with_the_margin_the_rule_adds():
    metrics, config = _metrics({"phase": 1, "accuracy": 0.53, "sharpe": 1.0})
    rows = decision_rules(metrics, config).set_index("rule")
    for needs in rows["needs"]:
        assert not re.search(r"\d\.\d{5,}", needs), needs
    gap = rows.loc["train - validation accuracy gap", "needs"]
    bar = config["decision"]["max_train_val_gap"] + config["decision"]["stop_se"] * 0.003
    assert gap == f"<= {readable(config['decision']['max_train_val_gap'])} + 2 SE = {readable(bar)}"
    # the rule tests the lower confidence bound (figure - z SE), not the point estimate
    want = f"lower bound > {readable(config['decision']['min_accuracy'])}"
    assert rows.loc["OOS accuracy", "needs"] == want
    assert readable(0.00977712) == "0.0098" and readable(32.0) == "32" and readable(1e-5) == "1e-05"


def _trials(n: int = 12, pruned: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "trial": np.arange(n), "trial_id": [f"abcde_{i:05d}" for i in range(n)],
        "val_log_loss": 0.69 + rng.uniform(0, 1e-3, n), "val_accuracy": rng.uniform(0.52, 0.54, n),
        "val_auc": rng.uniform(0.53, 0.55, n), "train_accuracy": rng.uniform(0.55, 0.58, n),
        "train_val_gap": rng.uniform(0.01, 0.05, n), "rounds": rng.integers(5, 90, n),
        "status": "completed", "folds_fitted": 4, "max_depth": rng.integers(3, 8, n),
        "learning_rate": rng.uniform(0.01, 0.2, n), "time_total_s": rng.uniform(5, 30, n),
    })  # fmt: skip
    df["partial_val_log_loss"] = df["val_log_loss"]
    if pruned:
        df.loc[3, ["status", "folds_fitted", "partial_val_log_loss"]] = ["pruned", 2, 0.7]
    return df


def test_trials_table_keeps_the_columns_that_say_something():
    page = trials_table(_trials())
    head = re.findall(r"<th>([^<]*)</th>", page)
    assert head[:3] == ["trial", "val log loss", "val accuracy"] and "time (s)" in head
    assert not {"status", "folds fitted", "partial val log loss", "trial id"} & set(head)
    assert not re.search(r">\d+\.\d{6,}<", page)  # 4 significant digits (5 decimals for losses)
    pruned = re.findall(r"<th>([^<]*)</th>", trials_table(_trials(pruned=True)))
    assert {"status", "folds fitted", "partial val log loss"} <= set(pruned)


def test_trade_histogram_counts_every_trade_once_and_names_its_tails():
    rng = np.random.default_rng(1)
    n = 2000
    ret = rng.standard_t(2, n) * 1e-3  # fat tails: some trades far outside the body
    side = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    trades = pd.DataFrame({"return": ret, "side": side, "exit_reason": "hold"})
    fig = fig_trades(trades, bins=40)
    on_hist = [t for t in fig.data if (t.xaxis or "x") == "x"]
    assert sum(int(np.sum(t.y)) for t in on_hist) == n
    edges = trade_bins(ret * 1e4, 40)
    for s, name in ((1, "long"), (-1, "short")):
        bps = ret[side == s] * 1e4
        below = next(t for t in on_hist if t.name == f"{name} < {edges[0]:,.1f} bps")
        above = next(t for t in on_hist if t.name == f"{name} > {edges[-1]:,.1f} bps")
        assert below.y[0] == np.sum(bps < edges[0]) > 0 and above.y[0] == np.sum(bps > edges[-1])
        assert below.marker.pattern.shape == "/"
        assert f"{below.y[0]} {name} < {edges[0]:,.1f} bps" in fig.layout.title.text
    colors = {t.name.split()[0]: t.marker.color or t.line.color for t in on_hist if "(" in t.name}
    assert colors == {"long": "#0969da", "short": "#8250df"}  # blue and purple: no red / green
    assert fig.layout.yaxis.title.text == "trades"


def test_the_readme_picture_is_the_layout_with_its_digits_masked():
    """docs/report.png is drawn by docs/report_png.py, which masks every digit and says so in the
    PNG: the README's picture cannot quote a figure that a fresh run contradicts; the sections
    it shows still exist, and the README says what the picture is."""
    from PIL import Image

    from tests.conftest import REPO
    from vpt_ray.report.html.page import NAV

    text = Image.open(REPO / "docs" / "report.png").text
    assert text.get("vpt-ray:digits") == "masked", "redraw it with python docs/report_png.py"
    shown = text["vpt-ray:sections"].split(",")
    assert shown and set(shown) <= set(NAV), shown
    readme = (REPO / "README.md").read_text()
    assert "![Top of a phase-1 report, its digits masked](docs/report.png)" in readme
