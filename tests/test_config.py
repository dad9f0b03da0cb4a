"""Config loading: layering, overrides, and errors that name key, origin and allowed values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vpt_ray.core.config import ConfigError, load_config


def test_every_phase_loads_and_follows_the_plan():
    sizes = {p: len(load_config(p).data.tickers) for p in range(1, 6)}
    assert sizes[1] == sizes[2] == 5
    assert 20 <= sizes[3] <= 50
    assert 100 <= sizes[4] <= 150
    years = {
        p: (c.backtest.end - c.data.start).days / 365 for p in range(1, 6) if (c := load_config(p))
    }
    assert 1.8 <= years[1] <= 2.2
    assert 3.0 <= years[2] <= 4.0
    assert 3.5 <= years[4] <= 4.5


def test_overrides_apply_last_and_parse_yaml():
    cfg = load_config(1, overrides=["data.tickers=[XYZ,ABC]", "labels.horizon=5", "data.bar=5min"])
    assert cfg.data.tickers == ["XYZ", "ABC"]
    assert cfg.labels.horizon == 5 and cfg.embargo_bars == 5
    assert cfg.data.bar_minutes == 5


def test_unknown_key_names_key_origin_and_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(1, overrides=["data.tickrs=[A]"])
    msg = str(err.value)
    assert "data.tickrs" in msg and "--set" in msg and "did you mean 'tickers'" in msg


def test_bad_value_names_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(1, overrides=["data.bar=2min"])
    assert "data.bar" in str(err.value) and "'1min'" in str(err.value) and "1day" in str(err.value)


def test_bad_value_in_file_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels:\n  horizon: -3\n")
    with pytest.raises(ConfigError) as err:
        load_config(config_path=bad)
    assert str(bad) in str(err.value) and "labels.horizon" in str(err.value)


def test_backtest_may_not_overlap_training():
    with pytest.raises(ConfigError) as err:
        load_config(1, overrides=["backtest.start=2024-06-03"])
    assert "out-of-sample window may never overlap training" in str(err.value)


def test_unreadable_yaml_and_missing_phase(tmp_path: Path):
    broken = tmp_path / "x.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_path=broken)
    with pytest.raises(ConfigError, match="no config for phase"):
        load_config(7)
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(1, overrides=["nonsense"])


def test_fingerprint_changes_with_config():
    assert (
        load_config(1).fingerprint() != load_config(1, overrides=["synthetic.seed=8"]).fingerprint()
    )


def test_distributed_backend_is_accepted_and_unknown_backends_are_not():
    cfg = load_config(1, overrides=["model.backend=distributed", "model.num_workers=3"])
    assert (cfg.model.backend, cfg.model.num_workers) == ("distributed", 3)
    with pytest.raises(ConfigError, match="model.backend"):
        load_config(1, overrides=["model.backend=dask"])


def test_features_include_is_checked_against_the_features_built():
    cfg = load_config(1, overrides=["features.include=[vol_z_5,ret_1]"])
    assert cfg.features.model_features() == ["ret_1", "vol_z_5"]  # the store's order
    assert len(load_config(1).features.model_features()) == 36
    with pytest.raises(ConfigError, match=r"features.include .*'vol_z_7' \(did you mean 'vol_z_5'"):
        load_config(1, overrides=["features.include=[vol_z_7]"])
    with pytest.raises(ConfigError, match="features.include .*empty"):
        load_config(1, overrides=["features.include=[]"])
    # a feature of another window set is unknown with these windows
    with pytest.raises(ConfigError, match="'ret_30'"):
        load_config(1, overrides=["features.include=[ret_30]"])
    ok = load_config(1, overrides=["features.windows=[10,30]", "features.include=[ret_30]"])
    assert ok.features.model_features() == ["ret_30"]


def test_tickers_are_upper_cased_and_validated():
    cfg = load_config(1, overrides=["data.tickers=[aapl, brk.b, bf-b]",
                                    "universe.candidates=[xyz]"])  # fmt: skip
    assert cfg.data.tickers == ["AAPL", "BRK.B", "BF-B"] and cfg.universe.candidates == ["XYZ"]
    cases = [("[AAPL,aapl]", "duplicates ['AAPL']"), ("[1ABC]", "invalid symbols"),
             ("[ABCDEFGHIJK]", "invalid symbols"), ("['A B']", "invalid symbols")]  # fmt: skip
    for bad, why in cases:
        with pytest.raises(ConfigError, match=re.escape(why)):
            load_config(1, overrides=[f"data.tickers={bad}"])


def test_dates_outside_the_calendar_clock_are_config_errors_naming_the_bound():
    with pytest.raises(ConfigError, match=r"data.start \(1989-12-29\) is before 1990-01-02, the "
                       r"first XNYS session"):  # fmt: skip
        load_config(1, overrides=["data.start=1989-12-29"])
    assert load_config(1, overrides=["data.start=1990-01-02"]).data.start.year == 1990
    with pytest.raises(ConfigError, match=r"backtest.end \(2199-01-02\) is after"):
        load_config(1, overrides=["backtest.end=2199-01-02"])
    with pytest.raises(ConfigError, match="calendar 'NOPE' is not an exchange_calendars name"):
        load_config(1, overrides=["data.calendar=NOPE"])


def test_settings_that_can_never_label_or_trade_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"labels.horizon \(15\) must be below the 7 bars of a "
                       r"60min session"):  # fmt: skip
        load_config(1, overrides=["data.bar=60min"])
    assert (
        load_config(1, overrides=["data.bar=60min", "labels.horizon=6"]).data.bars_per_session == 7
    )
    # daily labels span sessions: any horizon; daily positions are held across sessions
    cfg = load_config(1, overrides=["data.bar=1day"])
    assert cfg.labels.horizon == 15 and cfg.backtest.flat_at_close and cfg.holds_across_sessions
    assert not load_config(1).holds_across_sessions
    with pytest.raises(ConfigError, match="holds 1 XNYS session.*can never trade"):
        load_config(1, overrides=["data.bar=1day", "backtest.start=2024-07-06",
                                  "backtest.end=2024-07-08"])  # fmt: skip
