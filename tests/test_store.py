"""The feature store: built through Ray Data, one row group per month, window reads that skip
the months outside the window, and Ray Data's limits taken from the config."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.core.resources import ray_data_limits
from vpt_ray.features.store import build_store, read_ticker_window, ticker_features
from vpt_ray.pipeline import stages


@pytest.fixture(scope="module")
def built(ray_session, tmp_path_factory):
    ws = tmp_path_factory.mktemp("store")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    cfg = load_config(1, overrides=tiny_overrides(ws))
    data = stages.load_data(cfg)
    store = build_store(cfg, data.tickers, ws / "features")
    return cfg, data, store, ws


def test_ray_data_store_equals_the_plain_function(built):
    cfg, data, store, ws = built
    assert sorted(store) == sorted(cfg.data.tickers)
    for t, s in store.items():
        direct = ws / f"direct-{t}.parquet"
        summary = ticker_features(cfg, data.tickers[t], direct)
        assert {k: v for k, v in summary.items() if k != "path"} == {
            k: v for k, v in s.items() if k != "path"
        }
        pd.testing.assert_frame_equal(pd.read_parquet(s["path"]), pd.read_parquet(direct))


def test_one_row_group_per_month_and_window_reads_skip_other_months(built):
    cfg, _, store, _ = built
    path = store[cfg.data.tickers[0]]["path"]
    meta = pq.ParquetFile(path).metadata
    sessions = pd.read_parquet(path, columns=["session"])["session"]
    months = sessions.dt.to_period("M")
    assert meta.num_row_groups == months.nunique() >= 3
    col = meta.schema.to_arrow_schema().get_field_index("session")
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(col).statistics
        lo, hi = pd.Timestamp(stats.min), pd.Timestamp(stats.max)
        assert (lo.year, lo.month) == (hi.year, hi.month), f"row group {g} spans months"
    # a backtest-window read returns exactly the window's rows
    win = read_ticker_window(path, cfg.backtest.start, cfg.backtest.end, ["ret_1"])
    inside = sessions.dt.date.between(cfg.backtest.start, cfg.backtest.end)
    assert len(win) == int(inside.sum()) > 0


def test_data_limits_follow_the_config_clamped_to_the_cluster(ray_session, workspace):
    cfg = load_config(
        1, overrides=tiny_overrides(workspace, "hardware.num_cpus=1", "hardware.object_store_gb=8")
    )
    limits = ray_data_limits(cfg.hardware).resource_limits
    assert limits.cpu == 1
    store = ray_session.cluster_resources()["object_store_memory"]
    assert limits.object_store_memory == int(min(8 * 2**30, store) / 2)
