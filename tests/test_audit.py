"""The leakage audit command on a tiny phase: every check runs and reports its figure."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.pipeline.audit import main, run_audit

pytestmark = pytest.mark.slow


def test_audit_checks_pass_on_an_honest_pipeline(ray_session, workspace, capsys):
    # The null-market rule needs many independent days out of sample: 2 tickers x 3 months.
    cfg = load_config(
        1,
        overrides=tiny_overrides(
            workspace,
            "data.start=2023-11-01",
            "data.end=2024-01-31",
            "backtest.start=2024-02-05",
            "backtest.end=2024-04-30",
        ),
    )
    checks = {c.name: c for c in run_audit(cfg)}
    assert set(checks) == {
        "feature causality",
        "split audit (purge, embargo, backtest)",
        "shuffled labels: CV accuracy",
        "null market: OOS accuracy",
        "null market: Sharpe after costs",
        "null market: verdict",
    }
    assert (
        checks["feature causality"].passed
        and "max change at <= t: 0 " in checks["feature causality"].figure
    )
    assert checks["split audit (purge, embargo, backtest)"].passed
    assert checks["shuffled labels: CV accuracy"].passed
    assert checks["null market: verdict"].passed
    assert checks["null market: OOS accuracy"].passed, checks["null market: OOS accuracy"].figure


def test_audit_rejects_bad_config_cleanly(capsys):
    assert main(["--phase", "1", "--set", "cv.n_splitz=3"]) == 2
    assert "unknown key 'cv.n_splitz'" in capsys.readouterr().err
