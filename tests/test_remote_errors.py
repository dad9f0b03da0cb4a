"""Errors raised inside Ray Data map functions and Ray tasks reach the user as themselves: the
ticker, the file and the rule in one line, exit code 2 (not "UserCodeException: UDF failed to
process a data block")."""

from __future__ import annotations

import datetime as dt
import pickle

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from conftest import cli_error_line, tiny_overrides

from vpt_ray.core import remote_error
from vpt_ray.core.config import load_config
from vpt_ray.data import local
from vpt_ray.data.bars import BarDataError
from vpt_ray.data.chain import TickerData
from vpt_ray.data.errors import SourceError
from vpt_ray.data.synthetic import SyntheticParams, generate_ticker
from vpt_ray.features.causal import feature_names
from vpt_ray.features.store import ticker_features
from vpt_ray.pipeline.cli import user_error_exit


def test_project_errors_survive_pickling_and_capture():
    day = dt.date(2024, 1, 2)
    for exc in (BarDataError("f.parquet", "rule", "row 1"),
                SourceError("polygon", "boom", "AAPL", day, day)):  # fmt: skip
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        with pytest.raises(type(exc), match="rule|boom"):
            remote_error.reraise(remote_error.capture(exc), "a test")

    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a}-{b}")

    with pytest.raises(RuntimeError, match="Odd: x-y"):  # unpicklable: type and message kept
        remote_error.reraise(remote_error.capture(Odd("x", "y")), "a test")


def test_bad_bars_in_the_feature_map_exit_2_with_the_original_one_line_error(
    ray_session, workspace, capsys
):
    p = SyntheticParams(7, 1.0, 0.0)
    bars = generate_ticker(p, "AAA", dt.date(2024, 1, 2), dt.date(2024, 3, 28))
    saturday = bars.iloc[[-1]].assign(timestamp=pd.Timestamp("2024-02-10 15:00", tz="UTC"))
    bars = pd.concat([bars, saturday]).sort_values("timestamp", ignore_index=True)
    local.write_bars(bars, workspace / "data" / "AAA.parquet")  # a Saturday bar
    line = cli_error_line(
        workspace,
        capsys,
        "udf",
        "data.tickers=[AAA]",
        "data.sources=[local]",
        "data.regular_session_only=false",
        "data.max_missing_sessions=0",
    )
    assert line.startswith("error: AAA (") and "AAA.parquet): 1 bar(s) on dates not a XNYS " in line
    assert "(first: 2024-02-10)" in line and "UserCodeException" not in line


def test_bad_bars_in_a_backtest_task_reach_the_cli_as_bar_data_errors(ray_session, tmp_path):
    from vpt_ray.backtest.run import run_backtests

    cfg = load_config(1, overrides=tiny_overrides(tmp_path, "data.tickers=[AAA]"))
    (tmp_path / "data").mkdir()
    good = tmp_path / "data" / "AAA.parquet"
    local.write_bars(generate_ticker(SyntheticParams(7, 1.0, 0.0), "AAA", cfg.data.start,
                                     cfg.backtest.end), good)  # fmt: skip
    feats = tmp_path / "AAA.features.parquet"
    ticker_features(cfg, TickerData("AAA", good, False), feats)
    corrupt = tmp_path / "BAD.parquet"
    corrupt.write_bytes(b"PAR1 not parquet")
    names = feature_names(cfg.features.windows)
    rng = np.random.default_rng(0)
    booster = xgb.train({"objective": "binary:logistic"},
                        xgb.DMatrix(rng.normal(size=(64, len(names))), label=rng.random(64) > 0.5,
                                    feature_names=names), 2)  # fmt: skip
    with pytest.raises(BarDataError) as err:
        run_backtests(cfg, booster, {"AAA": str(corrupt)}, {"AAA": str(feats)}, names)
    assert "BAD.parquet: unreadable parquet file" in str(err.value.cause)
    assert user_error_exit(err.value) == 2
