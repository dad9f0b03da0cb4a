"""The memory stop holds: a tiny `hardware.memory_limit_gb` stops a phase cleanly (verdict "stop",
reason recorded, no model, no OOM kill), fan-outs stop on the flag and cancel what is pending,
Ray's OutOfMemoryError becomes the same stop, and memory declarations stay schedulable.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

from tests.conftest import tiny_overrides
from vpt_ray.core.config import load_config
from vpt_ray.core.memory_sampler import (
    MemoryLimitExceeded,
    MemorySampler,
    _run_titles,
    check_memory,
    is_ray_oom,
    wait_for_exit,
)
from vpt_ray.core.node_memory import node_scratch
from vpt_ray.core.resources import (
    GB,
    XGB_TRAIN_BYTES_PER_ROW,
    clamp_task_memory,
    node_memory_bytes,
    quantized_bytes,
    trial_bytes,
    xgb_matrix_bytes,
)
from vpt_ray.pipeline.phase import run_phase
from vpt_ray.report import tracker


def test_tiny_memory_limit_stops_the_phase_cleanly(ray_session, workspace):
    cfg = load_config(
        1,
        overrides=tiny_overrides(
            workspace,
            "hardware.memory_limit_gb=0.05",
            "hardware.memory_warn_gb=0.04",
            "hardware.sample_interval_s=0.1",
        ),
    )
    m = run_phase(cfg, run_id="capped")
    assert m["status"] == "STOPPED" and m["decision"]["verdict"] == "stop"
    assert m["stopped"]["cause"] == "memory_limit"  # our stop, not Ray's OOM kill
    assert m["stopped"]["memory_gb"] > 0.05 and m["resources"]["peak_memory_gb"] > 0.05
    assert "hardware.memory_limit_gb = 0.05 GB" in m["decision"]["reasons"][0]
    arts = workspace / "artifacts"
    report = arts / "reports" / "capped"
    on_disk = json.loads((report / "metrics.json").read_text())
    assert on_disk["decision"] == m["decision"] and on_disk["stopped"]["stage"] == "data"
    status = json.loads((report / "status.json").read_text())
    assert status["status"] == "STOPPED" and "memory_limit_gb" in status["error"]
    summary = (report / "summary.md").read_text()
    assert "## Decision: STOP" in summary and "memory_limit_gb" in summary
    assert not (arts / "models" / "capped").exists()  # nothing that looks like a model
    state = tracker.load_state(arts / "SCALING_TRACKER.md")
    row = state["history"][0]  # a history row; a stopped run is never the phase's latest
    assert row["run_id"] == "capped" and "verdict: stop" in row["notes"]
    assert "STOPPED in data" in row["notes"] and row["status"] == "STOPPED"
    assert "1" not in state["latest"]
    assert row["synthetic"] is None  # stopped before any data was loaded: not "real data"
    assert row["peak_memory_gb"] >= m["stopped"]["memory_gb"]  # the stop's reading included
    assert ray_session.get(ray_session.put(41)) + 1 == 42  # Ray and this process are alive


def test_ray_oom_in_a_stage_becomes_the_same_clean_stop(ray_session, workspace, monkeypatch):
    from vpt_ray.pipeline import stages

    @ray_session.remote(num_cpus=1, max_retries=0)
    def killed():
        raise ray_session.exceptions.OutOfMemoryError(
            "Task was killed due to the node running low on memory."
        )

    def backtest_killed_by_ray(*args, **kwargs):
        return ray_session.get(killed.remote())

    monkeypatch.setattr(stages, "backtest", backtest_killed_by_ray)
    # What a task of the run left in the run's scratch on its node (a rebuilt sample file): the
    # end of a run that did not finish removes it too.
    leftover = node_scratch() / "vpt-samples-leftover" / "X.f32"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\0" * 4096)
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    m = run_phase(cfg, run_id="rayoom")
    assert not node_scratch().exists()
    parent = node_scratch().parent  # removed once empty; other Ray sessions' scratch may remain
    assert not parent.exists() or any(parent.iterdir())
    assert m["decision"]["verdict"] == "stop" and m["stopped"]["cause"] == "ray_oom"
    assert m["stopped"]["stage"] == "backtest"
    assert "OutOfMemoryError" in m["decision"]["reasons"][0]
    arts = workspace / "artifacts"
    assert json.loads((arts / "reports" / "rayoom" / "status.json").read_text())["status"] == (
        "STOPPED"
    )
    assert not (arts / "models" / "rayoom").exists()  # trained, but never published
    text = (arts / "SCALING_TRACKER.md").read_text()
    assert "| rayoom | 1 |" in text and "| 1 | rayoom |" not in text  # history, not latest


def test_fanout_stops_on_the_flag_and_cancels_pending_tasks(ray_session):
    from vpt_ray.core.progress import track

    ray = ray_session

    @ray.remote(num_cpus=1, max_retries=0)
    def slow(i: int) -> int:
        time.sleep(120)
        return i

    refs = {slow.remote(i): str(i) for i in range(3)}
    with (
        MemorySampler(interval_s=0.1, limit_gb=0.001),
        pytest.raises(MemoryLimitExceeded, match="the demo fan-out") as err,
    ):
        list(track(refs, "demo"))
    assert err.value.cause == "memory_limit"
    # the stop did not wait out the tasks' 120 s: every one was cancelled, none finished
    for ref in refs:
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(ref, timeout=60)


def test_sampler_warns_once_and_flags_only_past_the_limit(caplog):
    caplog.set_level(logging.WARNING, logger="vpt_ray.resources")
    with MemorySampler(interval_s=0.05, warn_gb=0.001, limit_gb=10_000) as s:
        time.sleep(0.3)
        check_memory("a safe point")  # under the limit: no stop
    assert not s.over_limit and s.peak_gb > 0.001 and len(s.samples) >= 2
    warnings = [r for r in caplog.records if "memory_warn_gb" in r.getMessage()]
    assert len(warnings) == 1
    check_memory("outside any run")  # no sampler running: a no-op


def test_ray_oom_is_recognised_through_wrappers_and_text():
    import ray

    direct = ray.exceptions.OutOfMemoryError("Task was killed: the node is running low on memory")
    assert is_ray_oom(direct)
    try:
        try:
            raise direct
        except ray.exceptions.OutOfMemoryError as inner:
            raise RuntimeError("stage failed") from inner
    except RuntimeError as outer:
        assert is_ray_oom(outer)
    tune_text = RuntimeError(
        "every search trial failed; first error: ray.exceptions.OutOfMemoryError: Task was killed"
    )
    assert is_ray_oom(tune_text)
    assert not is_ray_oom(ValueError("data.tickers has duplicates"))


def test_memory_declarations_stay_schedulable(ray_session):
    node = node_memory_bytes()
    assert node > 0
    assert clamp_task_memory(64 * 2**20, 2) == 64 * 2**20  # small estimates pass unchanged
    huge = clamp_task_memory(10_000 * GB, 2)
    assert huge <= 0.9 * node / 2 + 1  # a task nobody could admit would hang the run

    @ray_session.remote(num_cpus=1, max_retries=0)
    def one() -> int:
        return 1

    assert ray_session.get(one.options(memory=huge).remote(), timeout=120) == 1
    assert quantized_bytes(1000, 30, 128) == 30_000 and quantized_bytes(1000, 30, 512) == 60_000
    small, big = trial_bytes(1000, 30, 5000), trial_bytes(3000, 30, 5000)
    assert big - small == xgb_matrix_bytes(2000, 30) + XGB_TRAIN_BYTES_PER_ROW * 2000
    assert trial_bytes(1000, 30, 6000) - small == 12 * 1000


def test_wait_for_exit_waits_for_the_titled_children_only():
    """The search waits for its trial actors to end before the final fit: the wait lasts while a
    child with the title lives, and not at all for a title no child has."""
    # argv[0] is the title, as Ray's setproctitle makes it for its workers
    sleep = ["vpt-test-sleeper", "-c", "import time; time.sleep(1.0)"]
    child = subprocess.Popen(sleep, executable=sys.executable)
    try:
        # the child carries the title only once it has exec'd (a loaded machine takes a while)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10 and "vpt-test-sleeper" not in _run_titles():
            time.sleep(0.01)
        assert "vpt-test-sleeper" in _run_titles()
        assert wait_for_exit("no-such-title", timeout_s=5) < 0.5
        waited = wait_for_exit("vpt-test-sleeper", timeout_s=10)
        assert child.poll() is not None, "returned while the child still ran"
        assert 0.5 < waited < 10
    finally:
        child.kill()
        child.wait()


def test_a_dashboard_that_fails_to_start_leaves_the_run_without_it(monkeypatch, caplog):
    """Ray raises a bare Exception with the dashboard's log when its start-up times out (seen
    at load average 60): the run starts Ray again without the dashboard and says so. Nothing real
    can make the dashboard fail on demand, so ray.init is replaced here."""
    import ray

    from vpt_ray.core import resources

    calls = []

    def fake_init(**kw):
        calls.append(kw["include_dashboard"])
        if kw["include_dashboard"]:
            raise Exception("\nTimed out waiting for the dashboard to start\n")  # noqa: TRY002
        return "started"

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    caps = resources.RayCaps(2, 4.0, 1.0, ())
    with caplog.at_level("WARNING", logger="vpt_ray.resources"):
        assert resources._start_local(caps, dashboard=True) == "started"
    assert calls == [True, "shutdown", False]
    assert "dashboard did not start (Timed out waiting" in caplog.text
    monkeypatch.setattr(ray, "init", lambda **kw: (_ for _ in ()).throw(RuntimeError("no")))
    with pytest.raises(RuntimeError):  # without the dashboard, a failure is the run's
        resources._start_local(caps, dashboard=False)
