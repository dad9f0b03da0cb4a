"""One live run per run id: an OS lock held for the run's whole life, freed when it dies.

Why: two runs started with the same `--run-id` both ran to the end, wrote one interleaved log, and
the second's model and report silently replaced the first's (332 trades became 274). Now the
second is refused before it touches anything (exit 2), naming the live run's pid and host.

How: `fcntl.flock` on `{paths.artifacts}/.locks/{run_id}.lock`, taken before the run opens its
log and held until it returns. The kernel releases the lock when the process exits, however it
exits (SIGKILL included), so a dead run never blocks a rerun; the file itself stays (a few bytes;
deleting a lock file others may hold races). The holder writes its pid, host and start time into
it for the refusal message. Ray's processes do not inherit the descriptor (Python opens it
non-inheritable), so a leftover raylet cannot hold a dead run's lock.

With `paths.artifacts` on gs:// runs on several machines share the bucket and no OS lock spans
them: the lock then guards this machine (under the temp dir), and a run whose status.json in the
bucket says RUNNING with a fresh heartbeat (`run.read_status`) is refused too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vpt_ray.core import storage
from vpt_ray.core.config import ConfigError

LOCK_DIR = ".locks"


class RunIdInUse(ConfigError):
    """Another live process holds this run id."""


def lock_path(ctx) -> Path:  # noqa: ANN001 - a RunContext (run.py imports this module)
    """Where the lock of `ctx`'s run id lives on this machine."""
    arts = ctx.artifacts
    if isinstance(arts, Path):
        return arts / LOCK_DIR / f"{ctx.run_id}.lock"
    where = hashlib.sha256(str(arts).encode()).hexdigest()[:12]  # one lock dir per bucket prefix
    return Path(tempfile.gettempdir()) / "vpt-ray-locks" / where / f"{ctx.run_id}.lock"


@contextlib.contextmanager
def exclusive(ctx) -> Iterator[None]:  # noqa: ANN001 - a RunContext
    """Hold `ctx.run_id` for the block; RunIdInUse (exit 2) when a live run holds it."""
    path = lock_path(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunIdInUse(_in_use(ctx.run_id, _holder(fd), path)) from None
        if storage.is_remote(ctx.artifacts):
            _refuse_live_remote(ctx)
        me = {
            "run_id": ctx.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> dict:
    """What the live holder wrote into the lock file (empty if it has not yet)."""
    try:
        got = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def _in_use(run_id: str, holder: dict, path: Path) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    since = f", started {holder['started']}" if holder.get("started") else ""
    return (
        f"--run-id {run_id}: a run with this id is running ({who}{since}; lock {path}); wait for "
        "it to end, stop it, or pick another --run-id"
    )


def _refuse_live_remote(ctx) -> None:  # noqa: ANN001 - a RunContext
    """Refuse a run id whose status.json in the bucket says RUNNING with a live heartbeat."""
    from vpt_ray.core.run_status import abandoned_reason

    try:
        status = json.loads(storage.read_text(ctx.report_location / "status.json"))
    except Exception:  # noqa: BLE001 - none there, or the bucket is down: check_storage says so
        return
    live = isinstance(status, dict) and status.get("status") == "RUNNING"
    if live and abandoned_reason(status) is None:
        raise RunIdInUse(_in_use(ctx.run_id, status, ctx.report_location / "status.json"))
