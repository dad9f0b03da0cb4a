"""Resume: the feature store and the search are reused across run ids when data and settings match,
recomputed with --force, and keyed on exactly what shapes them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.pipeline import resume
from vpt_ray.pipeline.phase import run_phase

SAME = ("cv", "features", "oos", "backtest", "overfitting")
TUNE_BOOKKEEPING = {"date", "pid", "hostname", "node_ip", "timestamp", "trial_id", "experiment_tag"}


def _same(a: dict, b: dict, *, bookkeeping: bool = True) -> None:
    """Same figures; with bookkeeping=False, Tune's own per-trial records (dates, pids, timings)
    may differ, as they do when the search really ran again."""
    for key in SAME:  # json text: NaN compares equal to NaN
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True), key
    sa, sb = a["search"], b["search"]
    assert sa["best_params"] == sb["best_params"] and sa["trials"] == sb["trials"]
    if bookkeeping:
        assert json.dumps(sa, sort_keys=True) == json.dumps(sb, sort_keys=True)
        return
    for ra, rb in zip(sa["table"], sb["table"], strict=True):
        skip = TUNE_BOOKKEEPING | {k for k in ra if "time" in k}
        assert {k: v for k, v in ra.items() if k not in skip} == {
            k: v for k, v in rb.items() if k not in skip
        }


@pytest.mark.slow
def test_rerun_skips_features_and_search_and_gives_identical_results(ray_session, workspace):
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    arts = workspace / "artifacts"
    first = run_phase(cfg, run_id="first")
    assert first["resume"]["features_from_cache"] == 0 and not first["resume"]["search_from_cache"]
    shutil.rmtree(arts / "models" / "first")
    shutil.rmtree(arts / "reports" / "first")

    second = run_phase(cfg, run_id="second")
    assert second["resume"]["features_from_cache"] == 2 and second["resume"]["search_from_cache"]
    log = (workspace / "logs" / "run-second.log").read_text()
    assert "features: 2 of 2 tickers from the resume cache" in log
    assert "search: reused from the resume cache" in log
    _same(first, second)
    # the run's own view of the store and the trials exist for the report's readers
    assert {p.name for p in (arts / "runs" / "second" / "features").iterdir()} == {
        "AAA.parquet",
        "BBB.parquet",
    }
    assert (arts / "runs" / "second" / "trials.parquet").exists()
    assert (arts / "models" / "second" / "model.ubj").exists()
    # the same configuration on the same rows: the final fit comes from the fit cache
    meta = json.loads((arts / "models" / "second" / "meta.json").read_text())
    assert meta["final_fit"].get("from_cache") is True
    assert "final fit: reused from the fit cache" in log

    forced = run_phase(cfg, run_id="forced", force=True)
    assert forced["resume"]["features_from_cache"] == 0
    assert not forced["resume"]["search_from_cache"]
    assert "2 to build (--force)" in (workspace / "logs" / "run-forced.log").read_text()
    _same(first, forced, bookkeeping=False)
    # --force fits again: no fold from the trial cache, no final fit from the fit cache
    assert forced["search"]["fold_fits_from_cache"] == 0
    meta = json.loads((arts / "models" / "forced" / "meta.json").read_text())
    assert not meta["final_fit"].get("from_cache")


def _bars(tmp_path: Path, name: str, payload: bytes) -> Path:
    p = tmp_path / f"{name}.parquet"
    p.write_bytes(payload)
    return p


def test_keys_follow_what_shapes_the_output(tmp_path, workspace):
    base = load_config(1, overrides=tiny_overrides(workspace))
    bars = _bars(tmp_path, "AAA", b"bars v1")
    key = resume.features_key(base, "AAA", bars)
    assert key == resume.features_key(base, "AAA", bars)  # stable
    assert key != resume.features_key(base, "BBB", bars)

    def with_(*extra: str):
        return load_config(1, overrides=tiny_overrides(workspace, *extra))

    # what shapes features changes the feature key ...
    for change in ("features.windows=[5,30]", "labels.horizon=10", "data.bar=5min"):
        assert resume.features_key(with_(change), "AAA", bars) != key, change
    # ... what only shapes the search does not
    # (the store builds every feature, whichever the model uses: features.include)
    for change in ("search.num_samples=5", "cv.n_splits=3", "model.max_bin=64",
                   "features.include=[ret_1]"):  # fmt: skip
        assert resume.features_key(with_(change), "AAA", bars) == key, change
    other = _bars(tmp_path, "AAA2", b"bars v2")
    assert resume.features_key(base, "AAA", other) != key  # other bytes, other key

    fkeys = {"AAA": key}
    skey = resume.search_key(base, fkeys)
    for change in ("search.num_samples=5", "cv.n_splits=3", "model.max_bin=64", "cv.sample_days=9",
                   "features.include=[ret_1]", "cv.early_stopping_fraction=0.3"):  # fmt: skip
        assert resume.search_key(with_(change), fkeys) != skey, change
    for change in ("model.ensemble.enabled=true", "hardware.num_cpus=1", "decision.min_sharpe=2"):
        assert resume.search_key(with_(change), fkeys) == skey, change
    assert resume.search_key(base, {"AAA": "another"}) != skey


def test_cache_dir_defaults_under_artifacts(workspace):
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    assert resume.cache_dir(cfg) == (workspace / "artifacts" / "cache").resolve()
    own = load_config(1, overrides=tiny_overrides(workspace, f"paths.cache={workspace / 'c'}"))
    assert resume.cache_dir(own) == (workspace / "c").resolve()
