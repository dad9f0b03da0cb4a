"""A real run, a real signal: Ctrl-C or SIGTERM inside the Tune search ends the run INTERRUPTED.

`python -m vpt_ray.phase 1` runs in a subprocess on the tiny config with many trials, so the search
is still going when the test sees `search: 1/N trials done` on its stderr and signals it:
SIGINT to its whole process group (what Ctrl-C in a terminal does), SIGTERM to its pid only (what
`kill` or a scheduler does). Before this was handled, Tune swallowed the Ctrl-C and the run
finished on the trials done so far: exit 0, a published model, a tracker row and the partial
search in the resume cache. Each run takes ~20-40 s here (Python and Ray start-up, data,
features, one trial), so the two share one module-scoped workspace and run at the same time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, tiny_overrides

pytestmark = pytest.mark.slow
PROGRESS = re.compile(r"search: (\d+)/(\d+) trials done")
RUN_TIMEOUT_S = 600


def _start(ws: Path, run_id: str) -> subprocess.Popen:
    sets = tiny_overrides(
        ws,
        "data.end=2024-01-31",  # one month of training: the first trial comes sooner
        "backtest.start=2024-02-05",
        "backtest.end=2024-02-16",
        "search.num_samples=24",
        "search.time_budget_s=3600",
    )
    cmd = [sys.executable, "-m", "vpt_ray.phase", "1", "--run-id", run_id]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        cmd,
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def _interrupt_after_first_trial(proc: subprocess.Popen, sig: int, group: bool) -> dict:
    """Read stderr until the first trial is done, signal, wait; what the test checks."""
    lines: list[str] = []
    sent = threading.Event()
    ray_pids: list[psutil.Process] = []
    out: dict = {}

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if not sent.is_set() and PROGRESS.search(line):
                # the processes of this run's Ray (raylet, GCS, workers): all children of it
                ray_pids.extend(psutil.Process(proc.pid).children(recursive=True))
                out["progress"] = line.strip()
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    os.kill(proc.pid, sig)
                out["sent_at"] = time.monotonic()
                sent.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out["exited_after_s"] = time.monotonic() - out.get("sent_at", time.monotonic())
    reader.join(timeout=10)
    proc.stdout.read()  # type: ignore[union-attr]
    out["stderr"] = "".join(lines)
    out["code"] = proc.returncode
    deadline = time.monotonic() + 60  # generous: the check is that they go, not how fast
    while time.monotonic() < deadline and any(_alive(p) for p in ray_pids):
        time.sleep(0.2)
    out["ray_gone_after_s"] = time.monotonic() - out.get("sent_at", time.monotonic())
    out["left"] = [p.pid for p in ray_pids if _alive(p)]
    out["ray_processes"] = len(ray_pids)
    return out


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[Path, dict]:
    """SIGINT (to the group) and SIGTERM (to the pid) runs, started together, one workspace."""
    ws = tmp_path_factory.mktemp("interrupt")
    for d in ("data", "artifacts", "logs"):
        (ws / d).mkdir()
    runs = {"ctrl-c": (signal.SIGINT, True), "sigterm": (signal.SIGTERM, False)}
    procs = {name: _start(ws, name) for name in runs}
    results: dict = {}
    threads = [
        threading.Thread(
            target=lambda n=name: results.__setitem__(
                n, _interrupt_after_first_trial(procs[n], *runs[n])
            )
        )
        for name in runs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ws, results


@pytest.mark.parametrize(
    ("run_id", "code", "name"), [("ctrl-c", 130, "SIGINT"), ("sigterm", 143, "SIGTERM")]
)
def test_signal_in_the_search_ends_the_run_interrupted(interrupted, run_id, code, name):
    ws, results = interrupted
    r = results[run_id]
    assert "progress" in r, f"the run never reported a trial:\n{r['stderr'][-3000:]}"
    assert r["code"] == code, r["stderr"][-3000:]
    assert f"interrupted: {name} received; run {run_id} marked INTERRUPTED" in r["stderr"]
    arts = ws / "artifacts"
    status = json.loads((arts / "reports" / run_id / "status.json").read_text())
    assert status["status"] == "INTERRUPTED" and "stage search" in status["error"]
    assert not (arts / "models" / run_id).exists()  # nothing published
    assert not (arts / "reports" / run_id / "metrics.json").exists()
    tracker = arts / "SCALING_TRACKER.md"
    assert not tracker.exists() or run_id not in tracker.read_text()
    assert not list((arts / "cache").glob("search/*/best.json"))  # the partial search: not cached
    # every Ray process this run started (raylet, GCS, trial workers) is gone
    assert r["ray_processes"] > 0
    assert r["left"] == [], f"{r['left']} still alive {r['ray_gone_after_s']:.1f} s after {name}"
    print(
        f"{run_id}: {r['progress']!r}; exit {r['code']} {r['exited_after_s']:.1f} s after "
        f"{name}; {r['ray_processes']} Ray processes gone within {r['ray_gone_after_s']:.1f} s"
    )
