"""The fault matrix: each stage of a run x {SIGINT, SIGTERM, SIGKILL + rerun, a full disk}, with
real signals sent to real processes and a real full filesystem.

Signals (issue 30): a SIGINT or SIGTERM that arrived while the driver waited inside Ray's C calls
(the backtest's fan-out, the distributed final fit) ended the run FAILED with `SystemError:
<cyfunction CoreWorker.wait> returned a result with an exception set`, exit 1, and in the
distributed fit only after the fit had run to its end (78 s). Each row here runs the tiny phase in
this process on the session's Ray and sends the signal to this process (`os.kill`) at a set
point of its stage: on its log line (a signal that lands in Python code) or a moment after the
stage began (one that lands inside Ray's wait, Ray Data's iteration, Ray Train's fit or
XGBoost's C calls). Expected: `RunInterrupted` with the shell's exit code, status INTERRUPTED
naming the stage, nothing published, no scratch left, and the session's Ray whole (its CPUs
back). The search's rows are `tests/test_interrupt.py` (a subprocess each, through the CLI: exit
130 / 143 and the run's Ray processes gone). A signal during the commit (report, tracker row,
model, FINISHED) is held: that run is FINISHED, whole.

SIGKILL + rerun: a real subprocess run killed in its train stage (its staged model on disk):
while it lives a second run with its id is refused naming its pid; dead, it reads as ABANDONED,
the next run removes its scratch, and a rerun with the same id finishes (the kernel freed the
dead run's lock). The same rerun stands for the signal rows' ids: their lock is released on
the way out and their scratch is already gone.

A full disk: the artifacts on a 64 MB tmpfs filled up (all but 32 KB) when a stage starts. The
CLI's answer is one `error:` line naming the file being written, exit 1, the run FAILED with
nothing published. Skipped with the reason where tmpfs cannot be mounted (not root).

One workspace serves the module: the first run (the commit row) fills the resume cache, so a
row pays for the stages before its own (mostly data, train and backtest), not for a search.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, fresh_console, tiny_overrides
from vpt_ray.core import interrupt
from vpt_ray.core.config import ConfigError, load_config
from vpt_ray.core.run import mark_abandoned, read_status
from vpt_ray.pipeline.phase import run_cli, run_phase
from vpt_ray.report import tracker

pytestmark = pytest.mark.slow
SMALL = (  # one month of training on 2 tickers, two trials: each row costs seconds, not minutes
    "data.end=2024-01-31",
    "backtest.start=2024-02-05",
    "backtest.end=2024-02-16",
    "search.num_samples=2",
    "model.n_estimators=40",
    # every row fits its final model (no fit cache), so the train rows' signal and full disk land
    # in a real fit and its staged model, not in a copy from the cache made in an instant
    "search.trial_cache=false",
)


class SignalAt(logging.Handler):
    """Sends `sig` to this process when a `vpt_ray` log line matches `pattern`: at once (inside
    the logging call: the signal lands in Python code) or `delay` s later from a thread (it lands
    in whatever the stage is doing then)."""

    def __init__(self, pattern: str, sig: int, delay: float | None = None, then=None):
        super().__init__()
        self.pattern, self.sig, self.delay, self.then = re.compile(pattern), sig, delay, then
        self.fired = threading.Event()
        self.timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.fired.is_set() or not self.pattern.search(record.getMessage()):
            return
        self.fired.set()
        if self.then is not None:
            self.then()
        if self.sig is None:
            return
        if self.delay is None:
            os.kill(os.getpid(), self.sig)
        else:
            self.timer = threading.Timer(self.delay, os.kill, (os.getpid(), self.sig))
            self.timer.start()


@contextlib.contextmanager
def watching(handler: SignalAt) -> Iterator[SignalAt]:
    """`handler` on the `vpt_ray` logger; a signal that comes after the run ended (it cannot, but
    a late timer must not end pytest) is recorded by a handler of the test's own."""
    root = logging.getLogger("vpt_ray")
    late: list[int] = []
    previous = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    for s in interrupt.SIGNALS:
        signal.signal(s, lambda signum, frame: late.append(signum))
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        if handler.timer is not None:
            handler.timer.join()
        time.sleep(0.1)  # a signal sent just now is handled before the handlers change back
        for s, h in previous.items():
            signal.signal(s, h)
        assert not late, f"signal {late} arrived after the run had ended"


@pytest.fixture(scope="module")
def ws(ray_session, tmp_path_factory) -> Path:
    """The module's workspace; artifacts/ on a 64 MB tmpfs when this process may mount one."""
    root = tmp_path_factory.mktemp("faults")
    for d in ("data", "artifacts", "logs"):
        (root / d).mkdir()
    arts = root / "artifacts"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(arts)],
        capture_output=True,
        text=True,
    )
    root.joinpath("tmpfs").write_text(
        "" if mounted.returncode == 0 else (mounted.stderr.strip() or "mount failed")
    )
    yield root
    if mounted.returncode == 0:
        subprocess.run(["umount", "-l", str(arts)], check=False)


def _cfg(ws: Path, *extra: str):
    return load_config(1, overrides=tiny_overrides(ws, *SMALL, *extra))


def _nothing_published(ws: Path, run_id: str, status: str) -> dict:
    arts = ws / "artifacts"
    st = json.loads((arts / "reports" / run_id / "status.json").read_text())
    assert st["status"] == status, st
    assert not (arts / "models" / run_id).exists()
    assert not (arts / "reports" / run_id / "metrics.json").exists()
    assert not (arts / "reports" / run_id / "report.html").exists()
    summary = arts / "reports" / run_id / "summary.md"
    assert not summary.exists() or summary.read_text().splitlines()[0].endswith(status)
    tracker_file = arts / "SCALING_TRACKER.md"
    assert not tracker_file.exists() or f"| {run_id} |" not in tracker_file.read_text()
    assert not (arts / "runs" / run_id).exists()  # the run's scratch went with it
    return st


def _ray_whole(ray) -> None:
    """The session's Ray took nothing with the run: its CPUs come back (cancelled tasks, an
    aborted Ray Train run) and it still computes."""
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 2, ray.available_resources()
    assert ray.get(ray.put(41)) + 1 == 42


@pytest.fixture(scope="module")
def committed(ws, ray_session) -> dict:
    """The commit row, run first (it fills the resume cache for the others): SIGTERM the moment
    the report stage starts. The commit holds signals: the run is FINISHED, whole."""
    with watching(SignalAt(r"^stage report \.\.\.", signal.SIGTERM)) as h:
        m = run_phase(_cfg(ws), run_id="commit")
    assert h.fired.is_set()
    return m


def test_a_signal_during_the_commit_is_held_and_the_run_finishes(ws, committed):
    arts = ws / "artifacts"
    assert json.loads((arts / "reports" / "commit" / "status.json").read_text())["status"] == (
        "FINISHED"
    )
    assert (arts / "models" / "commit" / "model.ubj").exists()
    assert (arts / "reports" / "commit" / "report.html").exists()
    assert tracker.load_state(arts / "SCALING_TRACKER.md")["latest"]["1"]["run_id"] == "commit"
    log = (ws / "logs" / "run-commit.log").read_text()
    assert "SIGTERM arrived while the finished run's results were being written" in log


# (row id, stage, signal, log line that triggers it, delay after it in s, extra settings, force)
DISTRIBUTED = ("model.backend=distributed", "model.num_workers=2")
ENSEMBLE = ("model.ensemble.enabled=true", "model.ensemble.top_k=2", "model.ensemble.seeds=[0]")
UNIVERSE = (
    "universe.enabled=true",
    "universe.candidates=[AAA,BBB]",
    "universe.min_tickers=1",
    "universe.min_price=0.01",
    "universe.max_price=1000000",
)
SIGNAL_ROWS = [
    ("data", "data", signal.SIGTERM, r"^stage data \.\.\.", None, (), False),
    ("features", "features", signal.SIGINT, r"^features: 1/2 tickers done", None, (), True),
    ("cv", "cv", signal.SIGTERM, r"^stage cv \.\.\.", None, (), False),
    # at the train stage's start: this tiny fit (4 rounds, 3k samples) takes 0.1 s, so a delayed
    # signal would land in a later stage; the signal inside C calls is the train-dist row's
    ("train", "train", signal.SIGINT, r"^stage train \.\.\.", None, (), False),
    ("train-dist", "train", signal.SIGTERM, r"^distributed final fit: ", 3.0, DISTRIBUTED, False),
    # the fan-outs: when their first task is back, while the others may still run (the stop
    # cancels them); with Ray's workers warm a tiny backtest takes ~0.3 s, so a signal sent some
    # fixed time after a stage's start line landed in a later stage now and then
    ("ensemble", "ensemble", signal.SIGTERM, r"^ensemble: 1/\d+ member", None, ENSEMBLE, False),
    ("universe", "universe", signal.SIGINT, r"^stage universe \.\.\.", None, UNIVERSE, False),
    ("backtest", "backtest", signal.SIGTERM, r"^backtest: 1/2 ticker done", None, (), False),
]


@pytest.mark.parametrize(
    ("row", "stage", "sig", "pattern", "delay", "extra", "force"),
    SIGNAL_ROWS,
    ids=[f"{r[0]}-{r[2].name}" for r in SIGNAL_ROWS],
)
def test_a_signal_in_a_stage_ends_the_run_interrupted(
    ws, committed, ray_session, row, stage, sig, pattern, delay, extra, force
):
    run_id = f"sig-{row}"
    with watching(SignalAt(pattern, sig, delay)) as h, pytest.raises(KeyboardInterrupt) as err:
        run_phase(_cfg(ws, *extra), run_id=run_id, force=force)
    assert h.fired.is_set()
    stop = interrupt.as_interrupt(err.value)
    assert isinstance(err.value, interrupt.RunInterrupted) and stop is err.value
    assert stop.exit_code == 128 + sig  # 130 / 143 from the CLI
    st = _nothing_published(ws, run_id, "INTERRUPTED")
    assert st["error"] == f"{sig.name} in stage {stage}"
    assert "SystemError" not in (ws / "logs" / f"run-{run_id}.log").read_text()
    _ray_whole(ray_session)


# ---- SIGKILL + rerun ------------------------------------------------------------------------


def test_sigkill_in_train_then_the_id_is_refused_while_alive_and_reruns_after(
    ws, committed, ray_session, capsys
):
    sets = sum((["--set", s] for s in tiny_overrides(ws, *SMALL)), [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpt_ray.phase", "1", "--run-id", "killed", *sets],
        cwd=ws,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    arts = ws / "artifacts"
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            if "final model (" in line and "staged" in line:
                break
        else:
            pytest.fail(f"the run ended before its model was staged (exit {proc.wait()})")
        assert (arts / "runs" / "killed" / "model" / "model.ubj").exists()
        # alive: the same id is refused before anything starts, naming the live run
        with pytest.raises(
            ConfigError, match=rf"a run with this id is running \(pid {proc.pid} on"
        ):
            run_phase(_cfg(ws), run_id="killed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = arts / "reports" / "killed"
    assert read_status(report)["status"] == "ABANDONED"  # RUNNING on disk, its process gone
    assert not (arts / "models" / "killed").exists()  # the staged model was never published
    # the next run (any id) marks it for good and removes its scratch
    assert mark_abandoned(arts / "reports", skip="next") == ["killed"]
    assert not (arts / "runs" / "killed").exists()
    assert (report / "summary.md").read_text().startswith("# vpt-ray run killed: ABANDONED")
    # a rerun with the same id: the dead process's lock is gone with it
    m = run_phase(_cfg(ws), run_id="killed")
    assert read_status(report)["status"] == "FINISHED" and (arts / "models" / "killed").is_dir()
    history = tracker.load_state(arts / "SCALING_TRACKER.md")["history"]
    assert [r["run_id"] for r in history].count("killed") == 1 and m["run_id"] == "killed"


# ---- a full disk ------------------------------------------------------------------------------


def _fill(arts: Path, leave: int = 32 * 1024) -> None:
    """Take all but `leave` bytes of the filesystem holding `arts`."""
    st = os.statvfs(arts)
    free = st.f_bavail * st.f_frsize
    with open(arts / ".filler", "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(0, free - leave))


# (stage, log line at which the disk fills, force, where the error must point)
DISK_ROWS = [
    ("features", r"^stage features \.\.\.", True, "cache/features/"),
    ("train", r"^stage train \.\.\.", False, "runs/"),
    ("report", r"^stage report \.\.\.", False, "reports/disk-report/"),
]


@pytest.mark.parametrize(
    ("stage", "pattern", "force", "where"), DISK_ROWS, ids=[r[0] for r in DISK_ROWS]
)
def test_a_full_disk_in_a_stage_is_one_line_naming_the_file(
    ws, committed, ray_session, capsys, stage, pattern, force, where
):
    why = (ws / "tmpfs").read_text()
    if why:
        pytest.skip(f"no small filesystem for the artifacts: mount -t tmpfs failed ({why})")
    arts = ws / "artifacts"
    run_id = f"disk-{stage}"
    before = (arts / "SCALING_TRACKER.md").read_text()
    args = argparse.Namespace(
        phase=1, config=None, overrides=tiny_overrides(ws, *SMALL), run_id=run_id,
        sample_days=None, force=force,
    )  # fmt: skip
    try:
        with fresh_console(), watching(SignalAt(pattern, None, then=lambda: _fill(arts))) as h:
            code = run_cli(args)
    finally:
        (arts / ".filler").unlink(missing_ok=True)
    assert h.fired.is_set()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    line = errors[0]
    assert line.startswith("error: disk full: No space left on device writing "), line
    assert str(arts) in line and where in line and "(paths.artifacts)" in line, line
    assert "the run is FAILED: nothing was published" in line
    st = _nothing_published(ws, run_id, "FAILED")
    assert "No space left on device" in st["error"] and f"in stage {stage}" in st["error"]
    assert (arts / "SCALING_TRACKER.md").read_text() == before  # the tracker unchanged
    assert not list((arts / "reports").glob(f"{run_id}/.*.tmp"))  # no temp file left behind
