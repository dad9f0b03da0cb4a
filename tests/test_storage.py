"""Outputs on gs://: the storage helpers, the tracker and a whole tiny phase against a real GCS
emulator (fake-gcs-server on 127.0.0.1, through real gcsfs and pyarrow).

The phase test checks what a cluster user relies on: every output is an object in the bucket
(model, report, run log, tracker, feature store, Tune's results), the tasks read the bars from
the bucket (the driver's bar files are hidden once staged), nothing lands in the local artifacts
directory, a failed run publishes no model, and a rerun resumes from the gs:// cache without
uploading the bars again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import secrets
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from remote_fixtures import fake_gcs, minute_bars

from tests.conftest import tiny_overrides
from vpt_ray.core import storage
from vpt_ray.core.config import ConfigError, GcsConfig, load_config
from vpt_ray.core.run import RunContext
from vpt_ray.core.storage import GcsPath, StorageError
from vpt_ray.data import gcs
from vpt_ray.data.bars import BarDataError
from vpt_ray.data.chain import TickerData
from vpt_ray.data.local import read_bars, write_bars
from vpt_ray.pipeline import resume, stages
from vpt_ray.pipeline.phase import run_phase
from vpt_ray.report import tracker

BUCKET = "vpt-results"


@pytest.fixture(scope="module")
def emulator() -> GcsConfig:
    """The emulator's settings, as a user puts them in the `gcs` config section."""
    with fake_gcs() as url:
        gcs = GcsConfig(endpoint_url=url, token="anon")
        storage.gcs_filesystem(gcs).mkdir(BUCKET)
        yield gcs


def _prefix(gcs: GcsConfig) -> GcsPath:
    """A fresh prefix per test, so tests share the bucket without seeing each other's objects."""
    return GcsPath(f"{BUCKET}/{secrets.token_hex(4)}", gcs)


def test_locations_parse_join_and_never_show_credentials(tmp_path):
    gcs = GcsConfig(token="/secret/sa-key.json")
    loc = storage.parse("gs://bkt/a/b/", tmp_path, gcs)
    assert loc == GcsPath("bkt/a/b") and str(loc) == "gs://bkt/a/b"
    assert str(loc / "reports" / "r1") == "gs://bkt/a/b/reports/r1"
    track = loc / "SCALING_TRACKER.md"
    assert (track.name, str(track.parent), str(track.with_suffix(".png"))) == (
        "SCALING_TRACKER.md",
        "gs://bkt/a/b",
        "gs://bkt/a/b/SCALING_TRACKER.png",
    )
    assert (loc / "x").gcs is gcs  # the settings travel with the location ...
    assert "sa-key" not in repr(loc / "x") + str(loc / "x")  # ... but are never printed
    assert pickle.loads(pickle.dumps(loc)).gcs.token == gcs.token  # and reach Ray tasks
    assert storage.parse("rel/dir", tmp_path, gcs) == tmp_path / "rel" / "dir"
    assert storage.portable(tmp_path) == str(tmp_path) and storage.portable(loc) is loc
    with pytest.raises(ConfigError, match="only local paths and gs://"):
        storage.parse("s3://bkt/x", tmp_path, gcs)
    with pytest.raises(ConfigError, match="paths.artifacts .*gs://BUCKET/PREFIX"):
        load_config(1, overrides=["paths.artifacts=s3://bkt/x"])
    with pytest.raises(ConfigError, match="paths.scratch .*must be a local directory"):
        load_config(1, overrides=["paths.scratch=gs://bkt/x"])


def test_round_trips_on_the_emulator(emulator, tmp_path):
    root = _prefix(emulator)
    assert not storage.exists(root / "a.json") and storage.list_files(root) == []
    storage.write_json(root / "a.json", {"x": 1.5, "when": dt.date(2024, 1, 2)})
    assert json.loads(storage.read_text(root / "a.json")) == {"x": 1.5, "when": "2024-01-02"}
    storage.write_bytes(root / "a.json", b"replaced")  # an overwrite is one whole object
    assert storage.read_bytes(root / "a.json") == b"replaced"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(root / "missing.bin")

    days = pa.array([dt.date(2024, 1, d) for d in (2, 3, 4, 5)], pa.date32())
    table = pa.table({"session": pa.array(days).cast(pa.timestamp("ns")), "v": [1, 2, 3, 4]})
    storage.write_parquet(table, root / "f.parquet")
    got = storage.read_parquet(
        root / "f.parquet",
        columns=["v"],
        filters=[("session", ">=", pa.scalar(dt.datetime(2024, 1, 3), pa.timestamp("ns")))],
    )
    assert got.column("v").to_pylist() == [2, 3, 4]

    src = tmp_path / "model"
    (src / "ensemble").mkdir(parents=True)
    for name, data in {"meta.json": b"{}", "model.ubj": b"m", "ensemble/e.json": b"e"}.items():
        (src / name).write_bytes(data)
    order = storage.upload_dir(src, root / "model", last=("meta.json",))
    assert order[-1] == "meta.json" and sorted(order) == [
        "ensemble/e.json",
        "meta.json",
        "model.ubj",
    ]
    assert storage.list_files(root / "model") == sorted(order)
    back = storage.download_dir(root / "model", tmp_path / "back")
    assert sorted(back) == sorted(order)
    assert (tmp_path / "back" / "ensemble" / "e.json").read_bytes() == b"e"
    storage.remove(root / "model")
    assert storage.list_files(root / "model") == [] and storage.exists(root / "a.json")


def test_check_names_what_is_wrong_in_one_line(emulator):
    gcs.check_location(_prefix(emulator))  # an empty prefix of an existing bucket is fine
    with pytest.raises(StorageError, match="bucket gs://no-such-bucket does not exist"):
        gcs.check_location(GcsPath("no-such-bucket/x", emulator))
    dead = GcsConfig(endpoint_url="http://127.0.0.1:9", token="anon")
    with pytest.raises(StorageError, match="not reachable"):
        gcs.check_location(GcsPath(f"{BUCKET}/x", dead))


def test_tracker_is_read_modified_and_written_as_objects(emulator):
    path = _prefix(emulator) / "SCALING_TRACKER.md"
    row = {
        "phase": 1, "run_id": "r1", "synthetic": True, "samples": 100, "features": 3,
        "cv_accuracy": 0.51, "cv_auc": 0.52, "cv_log_loss": 0.69, "accuracy": 0.5, "trades": 4,
        "total_return": 0.01, "sharpe": 0.3, "max_drawdown": -0.02, "win_rate": 0.5,
        "notes": "verdict: hold",
    }  # fmt: skip
    tracker.update(path, row)
    tracker.update(path, {**row, "phase": 2, "run_id": "r2"})
    state = tracker.load_state(path)
    assert set(state["latest"]) == {"1", "2"} and [h["run_id"] for h in state["history"]] == [
        "r2",
        "r1",
    ]
    assert tracker.previous_phase_row(path, 2)["run_id"] == "r1"
    text = storage.read_text(path)
    assert "| 2 | r2 |" in text and "![Key metrics across phases](SCALING_TRACKER.png)" in text
    assert storage.read_bytes(tracker.chart_path(path))[:4] == b"\x89PNG"


def test_bar_files_are_staged_once_in_the_bucket_and_read_there(emulator, tmp_path, monkeypatch):
    """What the feature, backtest and oracle tasks of a cluster get: a TickerData whose path is a
    content-addressed object, read and validated like the local file, with the local file's
    digest (so every resume key holds), uploaded once."""
    cfg = load_config(1, overrides=[f"data.dir={tmp_path / 'data'}"])
    bars = minute_bars(dt.date(2024, 1, 2), dt.date(2024, 1, 31), extended=False)
    local = tmp_path / "data" / "AAA.parquet"
    write_bars(bars, local)
    tickers = {"AAA": TickerData("AAA", local, synthetic=False, origins=[{"source": "local"}])}
    cache = _prefix(emulator) / "cache"
    sha = hashlib.sha256(local.read_bytes()).hexdigest()

    staged = resume.stage_bars(tickers, cache)["AAA"]
    obj = staged.path
    assert isinstance(obj, GcsPath) and str(obj) == f"{cache}/bars/{sha}.parquet"
    assert (staged.ticker, staged.origins) == ("AAA", tickers["AAA"].origins)
    assert storage.read_bytes(obj) == local.read_bytes()
    window = (dt.date(2024, 1, 8), dt.date(2024, 1, 12))
    pd.testing.assert_frame_equal(read_bars(obj, *window), read_bars(local, *window))
    assert len(read_bars(obj, *window)) < len(bars)  # the window was read, not the whole file
    assert resume.features_key(cfg, "AAA", obj) == resume.features_key(cfg, "AAA", local)
    fingerprint = stages.data_fingerprint(stages.Data({"AAA": staged}, []))["AAA"]
    assert (fingerprint["sha256"], fingerprint["bytes"]) == (sha, local.stat().st_size)
    assert fingerprint["path"] == str(obj)
    monkeypatch.setattr(resume, "_STAGED", {})  # another process: the object's bytes are hashed
    assert resume.file_digest(obj) == {"bytes": local.stat().st_size, "sha256": sha}

    fs = storage.gcs_filesystem(emulator)
    generation = fs.info(obj.key)["generation"]
    again = resume.stage_bars(tickers, cache)["AAA"]  # a rerun uploads nothing
    assert again.path == obj and fs.info(obj.key)["generation"] == generation
    assert storage.list_files(cache / "bars") == [obj.name]
    assert resume.stage_bars(tickers, tmp_path / "cache") is tickers  # a local cache: no change

    # A bad object is refused like a bad local file, naming the gs:// URI.
    with pytest.raises(BarDataError, match=f"{cache}/bars/gone.parquet: file not found"):
        read_bars(cache / "bars" / "gone.parquet")
    storage.write_bytes(cache / "bars" / "junk.parquet", b"not parquet")
    with pytest.raises(BarDataError, match=f"{cache}/bars/junk.parquet: unreadable parquet"):
        read_bars(cache / "bars" / "junk.parquet")
    broken = bars.assign(high=bars["low"] - 1)
    write_bars(broken, tmp_path / "broken.parquet")
    storage.upload_file(tmp_path / "broken.parquet", cache / "bars" / "broken.parquet")
    with pytest.raises(BarDataError, match=f"{cache}/bars/broken.parquet: .*high"):
        read_bars(cache / "bars" / "broken.parquet")


@pytest.mark.slow
def test_tiny_phase_writes_everything_to_gcs_and_resumes_from_it(
    ray_session, workspace, emulator, monkeypatch, capsys
):
    key = "pk-" + secrets.token_hex(12)
    monkeypatch.setenv("POLYGON_API_KEY", key)  # present in the run's environment
    root = _prefix(emulator)
    overrides = tiny_overrides(
        workspace,
        f"paths.artifacts={root}",
        f"paths.tracker={root}/SCALING_TRACKER.md",
        f"paths.scratch={workspace / 'scratch'}",
        f"gcs.endpoint_url={emulator.endpoint_url}",
        "gcs.token=anon",
    )
    cfg = load_config(1, overrides=overrides)
    staged: list[stages.Data] = []
    stage_bars = stages.stage_bars

    def stage_then_hide_local_bars(data, cache):
        """As on a cluster's other nodes: once staged, the driver's bar files are not there."""
        staged.append(stage_bars(data, cache))
        (workspace / "data").rename(workspace / "data-hidden")
        return staged[-1]

    monkeypatch.setattr(stages, "stage_bars", stage_then_hide_local_bars)
    first = run_phase(cfg, run_id="gcs1")
    (workspace / "data-hidden").rename(workspace / "data")
    # The feature, backtest and oracle tasks read the bars from the bucket.
    bars_dir = root / "cache" / "bars"
    paths = [td.path for td in staged[0].tickers.values()]
    assert all(isinstance(p, GcsPath) and p.parent == bars_dir for p in paths), paths
    assert sorted(p.name for p in paths) == storage.list_files(bars_dir)
    assert first["oracle"]["tickers"] == ["AAA", "BBB"]  # the synthetic bars' oracle ran
    fs = storage.gcs_filesystem(emulator)
    generations = {p.key: fs.info(p.key)["generation"] for p in paths}

    report, model, runs = root / "reports" / "gcs1", root / "models" / "gcs1", root / "runs/gcs1"
    assert first["model_dir"] == str(model)
    assert json.loads(storage.read_text(report / "status.json"))["status"] == "FINISHED"
    assert json.loads(storage.read_text(report / "metrics.json"))["run_id"] == "gcs1"
    assert {"summary.md", "report.html", "trades.parquet", "equity.parquet", "config.yaml",
            "run-gcs1.log"} <= set(storage.list_files(report))  # fmt: skip
    assert set(storage.list_files(model)) >= {"model.ubj", "meta.json", "config.yaml"}
    assert tracker.load_state(root / "SCALING_TRACKER.md")["latest"]["1"]["run_id"] == "gcs1"
    features = storage.list_files(root / "cache" / "features")
    assert len([f for f in features if f.endswith(".parquet")]) == 2, features
    assert "trials.parquet" in storage.list_files(runs)
    tune = storage.list_files(runs / "search")
    assert any(f.startswith("experiment_state") for f in tune), tune
    assert sum(f.endswith("result.json") for f in tune) == 2  # one per trial
    # The saved-model backtest reads a gs:// model; one whose upload never finished is refused.
    from vpt_ray.backtest.__main__ import main as backtest_main
    from vpt_ray.model.train import load_model
    from vpt_ray.pipeline.backtest_cli import model_files

    gcs_flags = [f"gcs.endpoint_url={emulator.endpoint_url}", "gcs.token=anon"]
    with model_files(str(model), gcs_flags) as local_model:
        booster, meta = load_model(local_model)
    assert meta["run_id"] == "gcs1" and booster.num_features() == len(meta["feature_names"])
    partial = root / "models" / "partial"
    storage.write_bytes(partial / "model.ubj", storage.read_bytes(model / "model.ubj"))
    flags = [f for g in gcs_flags for f in ("--set", g)]
    dates = ["--start-date", "2024-04-01", "--end-date", "2024-04-12"]
    assert backtest_main(["--model-dir", str(partial), *dates, *flags]) == 2
    assert f"{partial}: no meta.json, so not a complete directory" in capsys.readouterr().err
    # Locally: only the scratch mirror; the artifacts dir the workspace made stays empty.
    assert list((workspace / "artifacts").iterdir()) == []
    assert (workspace / "scratch" / "reports" / "gcs1" / "metrics.json").is_file()
    # No object holds a secret of the run's environment.
    blobs = [storage.read_bytes(root / f) for f in storage.list_files(root)]
    assert len(blobs) > 20 and not any(key.encode() in b for b in blobs)

    # A second run crashes after training: the features and the search come from the gs://
    # cache, the run is FAILED in the bucket, and no model object appears.

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash in the backtest stage")

    monkeypatch.setattr(stages, "backtest", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_phase(cfg, run_id="gcs2")
    status = json.loads(storage.read_text(root / "reports" / "gcs2" / "status.json"))
    assert status["status"] == "FAILED" and "simulated crash" in status["error"]
    assert storage.list_files(root / "models" / "gcs2") == []
    assert not storage.exists(root / "reports" / "gcs2" / "metrics.json")
    log = storage.read_text(root / "reports" / "gcs2" / "run-gcs2.log")
    assert "features: 2 of 2 tickers from the resume cache" in log
    assert "search: reused from the resume cache" in log
    assert "bars: 2 tickers read from" in log and "(0 files uploaded, 2 already there)" in log
    assert {k: fs.info(k)["generation"] for k in generations} == generations  # not re-uploaded
    assert len(storage.list_files(bars_dir)) == 2
    assert tracker.load_state(root / "SCALING_TRACKER.md")["latest"]["1"]["run_id"] == "gcs1"


def test_run_context_maps_gcs_outputs_to_a_local_mirror(tmp_path):
    cfg = load_config(
        1,
        overrides=[
            "paths.artifacts=gs://bkt/arts",
            "paths.logs=gs://bkt/logs",
            f"paths.scratch={tmp_path / 's'}",
        ],
    )
    ctx = RunContext(cfg, "r", root=tmp_path)
    assert ctx.remote and str(ctx.model_dir) == "gs://bkt/arts/models/r"
    assert ctx.report_dir == tmp_path / "s" / "reports" / "r"
    assert str(ctx.report_location) == "gs://bkt/arts/reports/r"
    assert ctx.staged_model_dir == tmp_path / "s" / "runs" / "r" / "model"
    assert str(ctx.work_location) == "gs://bkt/arts/runs/r"
    assert ctx.log_path == tmp_path / "s" / "logs" / "run-r.log"
    assert str(ctx.log_location) == "gs://bkt/logs/run-r.log"
    local = RunContext(load_config(1), "r", root=tmp_path)
    assert not local.remote and local.log_location is None
    assert local.report_dir == local.report_location == tmp_path / "artifacts" / "reports" / "r"
    assert local.work_dir == local.work_location and isinstance(local.model_dir, Path)
