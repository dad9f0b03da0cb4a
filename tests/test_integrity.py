"""Run integrity: hostile run ids, concurrent tracker writers, the config chain, dead runs, damaged
artifacts. Each test reproduces one way a careful or adversarial user lost data or got a wrong
result before (issue 16), with real files and real processes; none needs Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
import yaml

from tests.conftest import REPO, tiny_overrides
from vpt_ray.core.config import ConfigError, load_config
from vpt_ray.core.run import RunContext
from vpt_ray.report import tracker

# What this issue added is imported inside the tests, so this file also runs against the code
# before it and shows each test failing there for the reason it guards against.


@pytest.fixture(autouse=True)
def _drop_new_log_handlers():
    """The CLIs called in-process add a console handler bound to this test's captured stderr;
    remove it afterwards so later tests do not log into a closed capture."""
    import logging

    root = logging.getLogger("vpt_ray")
    before = list(root.handlers)
    yield
    for h in [h for h in root.handlers if h not in before]:
        root.removeHandler(h)


# ---- run ids are names, not paths ------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [".", "..", "../x", "a/b", "/tmp", "", " x", "-x", "x y", "a" * 129, "ü", "x\n"]
)
def test_run_id_must_be_a_name(bad):
    from vpt_ray.core.run import check_run_id

    with pytest.raises(ConfigError, match="a run id is a name, not a path"):
        check_run_id(bad)


@pytest.mark.parametrize("good", ["t", "phase1-try2", "20261126-064900-p1-abc123", "A.b_c-9"])
def test_run_id_names_pass(good):
    from vpt_ray.core.run import check_run_id

    assert check_run_id(good) == good


@pytest.mark.parametrize("bad", [".", ".."])
def test_dot_run_ids_delete_nothing(workspace, bad):
    """`--run-id .` used to replace artifacts/models/ itself (every saved model) and `..` all of
    artifacts/ (cache, reports, models) when the run published its model."""
    arts = workspace / "artifacts"
    kept = [arts / "models" / "older" / "model.ubj", arts / "cache" / "search" / "k" / "best.json"]
    for f in kept:
        f.parent.mkdir(parents=True)
        f.write_text("precious")
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    with pytest.raises(ConfigError, match="not a path"):
        RunContext(cfg, bad, root=workspace)
    from vpt_ray.phase import main

    assert (
        main(["1", "--run-id", bad, *sum((["--set", s] for s in tiny_overrides(workspace)), [])])
        == 2
    )
    assert all(f.read_text() == "precious" for f in kept)


def test_publish_refuses_a_model_dir_that_points_elsewhere(workspace):
    """Deletes stay inside the run's own directories even through a symlink."""
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    ctx = RunContext(cfg, "victim", root=workspace)
    outside = workspace / "outside"
    (outside / "keep").mkdir(parents=True)
    (workspace / "artifacts" / "models").mkdir(parents=True)
    (workspace / "artifacts" / "models" / "victim").symlink_to(outside)
    ctx.staged_model_dir.mkdir(parents=True)
    (ctx.staged_model_dir / "model.ubj").write_text("m")
    with pytest.raises(ValueError, match="refusing to delete"):
        ctx.publish_model()
    assert (outside / "keep").is_dir()


# ---- the resume cache takes complete searches only ----------------------------------------------


def _search_result(ended_by: str | None, trials: int):
    import pandas as pd

    from vpt_ray.model.search_result import SearchResult

    info = {"trials_requested": trials} | ({"ended_by": ended_by} if ended_by else {})
    return SearchResult(
        best_params={"max_depth": 3},
        best={"val_log_loss": 0.69, "val_accuracy": 0.5},
        trials=pd.DataFrame({"val_log_loss": [0.69] * trials}),
        fold_scores=np.zeros((2, trials)),
        daily_perf=pd.DataFrame({0: [0.0]}),
        info=info,
    )


def test_partial_search_is_never_cached_and_an_old_entry_is_redone(tmp_path):
    """A Ctrl-C'd search (1 of 8 trials) replaced the full one in the cache and later runs reused
    it. Entries now record the trial count and how the search ended."""
    from vpt_ray.pipeline import resume

    cfg = load_config(1, overrides=["search.num_samples=8"])
    cache = tmp_path / "cache"
    path = cache / "search" / resume.search_key(cfg, {})
    resume.save_search(path, _search_result(None, 1))  # cached before ended_by existed
    runs = []

    def fake_search(cfg, m, folds, work_dir, num_cpus, tune_storage=None, **_):
        runs.append(1)
        return next_result

    next_result = _search_result("interrupted", 8)
    result, from_cache = resume.search(fake_search, cfg, {}, None, [], tmp_path / "w", 1, cache)
    assert runs == [1] and not from_cache  # the old 1-trial entry was not reused
    assert resume.load_search(path).info.get("ended_by") is None  # and nothing replaced it
    next_result = _search_result("asha", 8)
    resume.search(fake_search, cfg, {}, None, [], tmp_path / "w", 1, cache)
    assert resume.load_search(path).info == {"trials_requested": 8, "ended_by": "asha"}
    _, from_cache = resume.search(fake_search, cfg, {}, None, [], tmp_path / "w", 1, cache)
    assert from_cache and runs == [1, 1]
    other = load_config(1, overrides=["search.num_samples=9"])
    assert "it ran 8 trials" in resume.incomplete_reason(resume.load_search(path), other)


# ---- the tracker under concurrent writers ------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from vpt_ray.report import tracker
from vpt_ray.core import storage
from vpt_ray.core.config import GcsConfig
i, gate, where = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
if where.startswith("gs://"):
    path = storage.parse(where, Path.cwd(), GcsConfig(endpoint_url=sys.argv[4], token="anon"))
else:
    path = Path(where)
row = {"phase": i % 3 + 1, "run_id": f"w{i}", "synthetic": True, "samples": i, "features": 36,
       "cv_accuracy": 0.5, "cv_auc": 0.5, "cv_log_loss": 0.69, "accuracy": 0.5 + i / 1000,
       "trades": i, "total_return": 0.0, "sharpe": 0.1 * i, "max_drawdown": 0.0,
       "win_rate": 0.5, "notes": "verdict: hold"}
(gate / f"ready{i}").touch()
while not (gate / "go").exists():  # every writer starts at the same moment
    time.sleep(0.01)
tracker.update(path, row)
"""


def _writers(n: int, where: str, gate: Path, *extra: str) -> None:
    """`n` processes, each importing vpt_ray, then all updating the tracker at once."""
    gate.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(i), str(gate), where, *extra],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    deadline = time.monotonic() + 300
    while len(list(gate.glob("ready*"))) < n and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    (gate / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]


def _check_rows(state: dict, n: int) -> None:
    assert sorted(r["run_id"] for r in state["history"]) == sorted(f"w{i}" for i in range(n))
    for phase in (1, 2, 3):  # latest per phase = the last of its writers to get the lock
        newest = next(r for r in state["history"] if r["phase"] == phase)
        assert state["latest"][str(phase)]["run_id"] == newest["run_id"]


def test_concurrent_runs_each_leave_their_tracker_row(tmp_path):
    """Two runs at once used to lose a row (read, modify, write with no lock: the last writer
    wins). Four real processes write at the same moment; four rows must remain."""
    path = tmp_path / "SCALING_TRACKER.md"
    _writers(4, str(path), tmp_path / "gate")
    _check_rows(tracker.load_state(path), 4)
    assert (tmp_path / "SCALING_TRACKER.png").exists()


def test_concurrent_runs_on_gcs_each_leave_their_tracker_row(tmp_path):
    """The same on a bucket: a generation-match precondition, retried when another came first."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from remote_fixtures import fake_gcs

    from vpt_ray.core import storage
    from vpt_ray.core.config import GcsConfig

    with fake_gcs() as url:
        gcs = GcsConfig(endpoint_url=url, token="anon")
        storage.gcs_filesystem(gcs).mkdir("bkt")
        _writers(3, "gs://bkt/vpt/SCALING_TRACKER.md", tmp_path / "gate", url)
        path = storage.parse("gs://bkt/vpt/SCALING_TRACKER.md", Path.cwd(), gcs)
        _check_rows(tracker.load_state(path), 3)


# ---- --config overlays the phase file ----------------------------------------------------------


def test_config_file_overlays_the_phase_file(tmp_path, monkeypatch):
    """`phase 2 --config my.yaml` used to drop phase2.yaml: a phase-2 row on phase 1's dates."""
    mine = tmp_path / "my_overrides.yaml"
    mine.write_text("search:\n  num_samples: 3\n")
    seen = {}

    def fake_run_phase(cfg, **kw):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr("vpt_ray.pipeline.phase.run_phase", fake_run_phase)
    from vpt_ray.phase import main

    assert main(["2", "--config", str(mine), "--set", "search.seed=5"]) == 0
    cfg = seen["cfg"]
    phase2 = yaml.safe_load((REPO / "config" / "phase2.yaml").read_text())
    assert cfg.phase == 2 and str(cfg.data.start) == phase2["data"]["start"]
    assert cfg.search.num_samples == 3 and cfg.search.seed == 5
    assert [Path(p).name for p in cfg.layers[:3]] == ["base.yaml", "phase2.yaml", mine.name]
    assert cfg.layers[3] == "--set search.seed=5"
    mine.write_text("phase: 3\n")
    with pytest.raises(ConfigError, match="sets phase: 3 but this is a phase 2 run"):
        load_config(2, config_path=mine)


def test_run_records_its_config_chain(workspace):
    cfg = load_config(1, config_path=None, overrides=tiny_overrides(workspace))
    ctx = RunContext(cfg, "chain", root=workspace, config_chain=cfg.layers)
    ctx.snapshot_config()
    ctx.mark("FAILED", "test")
    text = (ctx.report_dir / "config.yaml").read_text()
    assert text.startswith("# resolved config; layers") and "phase1.yaml" in text
    assert load_config(config_path=ctx.report_dir / "config.yaml").data.tickers == ["AAA", "BBB"]
    status = json.loads((ctx.report_dir / "status.json").read_text())
    assert status["config_chain"] == cfg.layers


def test_help_states_the_config_chain(capsys):
    from vpt_ray.phase import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "then config/phaseN.yaml for a phase, then this file, then --set" in " ".join(
        capsys.readouterr().out.split()
    )


# ---- dead runs are ABANDONED -------------------------------------------------------------------

VICTIM = """
import sys, time
from pathlib import Path
from vpt_ray.core.config import load_config
from vpt_ray.core.run import RunContext
ws = Path(sys.argv[1])
cfg = load_config(1, overrides=[f"paths.artifacts={ws / 'artifacts'}", f"paths.logs={ws / 'logs'}"])
RunContext(cfg, "victim", root=ws).mark("RUNNING")
print("running", flush=True)
time.sleep(600)
"""


def test_a_run_killed_with_sigkill_shows_as_abandoned(workspace, capsys, caplog):
    """A run killed with -9 used to stay RUNNING in status.json forever."""
    from vpt_ray.core.run import mark_abandoned, read_status

    proc = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(workspace)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "running"  # type: ignore[union-attr]
        report = workspace / "artifacts" / "reports" / "victim"
        assert read_status(report)["status"] == "RUNNING"  # alive: not abandoned
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    status = read_status(report)
    assert status["status"] == "ABANDONED"
    assert f"its process {proc.pid} on" in status["abandoned"] and "is gone" in status["abandoned"]
    from vpt_ray.compare import main as compare_main
    from vpt_ray.html_report import main as report_main

    arts = str(workspace / "artifacts")
    assert compare_main(["victim", "victim", "--artifacts", arts]) == 2
    assert "run 'victim' is ABANDONED (its process" in capsys.readouterr().err
    assert report_main(["victim", "--artifacts", arts]) == 2
    assert "run status: ABANDONED: its process" in capsys.readouterr().err
    # the next run marks it for good (and says so once)
    assert mark_abandoned(report.parent, skip="next") == ["victim"]
    assert json.loads((report / "status.json").read_text())["status"] == "ABANDONED"
    assert "run victim is ABANDONED" in caplog.text


def test_remote_runs_are_judged_by_their_heartbeat():
    import datetime as dt

    from vpt_ray.core.run import abandoned_reason

    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    base = {"status": "RUNNING", "pid": 1, "host": "another-node"}
    fresh = {**base, "heartbeat": "2026-01-01T11:58:00+00:00"}
    stale = {**base, "heartbeat": "2026-01-01T11:00:00+00:00"}
    assert abandoned_reason(fresh, now) is None
    assert "no heartbeat from its process on another-node for 60 min" in abandoned_reason(
        stale, now
    )
    assert abandoned_reason({**stale, "status": "FINISHED"}, now) is None


# ---- damaged artifacts: one line, exit 2, before any compute ------------------------------------


def _model_dir(root: Path) -> Path:
    d = root / "artifacts" / "models" / "m1"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    booster = xgb.train(
        {"nthread": 1}, xgb.DMatrix(rng.normal(size=(50, 3)), rng.integers(0, 2, 50)), 2
    )
    booster.save_model(d / "model.ubj")
    meta = {
        "run_id": "m1",
        "feature_names": ["a", "b", "c"],
        "train_window": ["2024-01-02", "2024-02-29"],
    }
    (d / "meta.json").write_text(json.dumps(meta))
    cfg = load_config(1, overrides=TINY_DATES)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    return d


TINY_DATES = ["data.start=2024-01-02", "data.end=2024-02-29", "backtest.start=2024-03-05"]


@pytest.mark.parametrize(
    ("damage", "file", "says"),
    [
        (
            lambda d: (d / "model.ubj").write_bytes(b"\x00garbage" * 50),
            "model.ubj",
            "not a readable XGBoost model",
        ),
        (
            lambda d: (d / "meta.json").write_text('{"run_id": "m1", '),
            "meta.json",
            "not readable JSON",
        ),
        (lambda d: (d / "meta.json").write_text("{}"), "meta.json", "lacks run_id, feature_names"),
        (
            lambda d: (d / "config.yaml").write_text("data: [unclosed"),
            "config.yaml",
            "damaged config snapshot",
        ),
    ],
)
def test_damaged_model_gives_one_line_and_exit_2(tmp_path, monkeypatch, capsys, damage, file, says):
    """A corrupt model.ubj or meta.json used to end `vpt backtest` in a Python + C++ traceback."""
    monkeypatch.chdir(tmp_path)
    d = _model_dir(tmp_path)
    damage(d)
    from vpt_ray.backtest.__main__ import main

    code = main(["--model-dir", str(d), "--start-date", "2024-04-01", "--end-date", "2024-04-12"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {d / file}: {says}")
    assert "write it again" in err
    assert not (tmp_path / "artifacts" / "reports").exists()  # nothing started


def test_damaged_tracker_stops_the_run_before_compute(workspace, capsys):
    """A malformed tracker state used to fail only after all the compute, without the file."""
    path = workspace / "artifacts" / "SCALING_TRACKER.md"
    path.write_text('# tracker\n<!-- vpt-ray-tracker {"latest": {"1": } -->\n')
    from vpt_ray.phase import main

    sets = sum((["--set", s] for s in tiny_overrides(workspace)), [])
    assert main(["1", "--run-id", "after-damage", *sets]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err  # one line, no traceback
    err = errors[0]
    assert err.startswith(f"error: {path}: damaged tracker state (Expecting value")
    assert err.endswith("move it away (a new tracker is started) or point paths.tracker elsewhere")
    assert not (workspace / "artifacts" / "reports" / "after-damage").exists()  # nothing ran
    from vpt_ray.core.storage import ArtifactError

    with pytest.raises(ArtifactError, match="not a vpt-ray tracker"):
        tracker.parse_state("# someone else's notes\n", path)


# ---- signal handling, in this process ----------------------------------------------------------


def test_signals_raise_except_inside_tune_and_the_commit():
    """The rules tests/test_interrupt.py exercises end to end, on real signals to this process:
    SIGTERM raises at once (143); inside `graceful` (Tune's fit) the first signal only asks the
    block to end and raises when it returns, a second raises at once; `held` (the commit) never
    raises, and the signal is reported afterwards."""
    import os

    from vpt_ray.core import interrupt

    before = signal.getsignal(signal.SIGINT), os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    with interrupt.handle_signals():
        with pytest.raises(interrupt.RunInterrupted) as err:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert err.value.exit_code == 143 and err.value.signal_name == "SIGTERM"
    with interrupt.handle_signals():
        with pytest.raises(interrupt.RunInterrupted) as err, interrupt.graceful():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert interrupt.requested() == signal.SIGINT  # still running: the stopper's cue
            assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
        assert err.value.exit_code == 130
        assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") == before[1]
        with pytest.raises(interrupt.RunInterrupted), interrupt.graceful():
            os.kill(os.getpid(), signal.SIGINT)  # the second signal of this run: at once
            time.sleep(1)
            pytest.fail("a second signal must raise at once")
    with interrupt.handle_signals(), interrupt.held() as held:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
    assert held == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is before[0]  # the caller's handler is back
