"""How a run ended, as readers see it, and what a run that did not finish leaves behind.

`status.json` names the run's process (pid, its start time, host) and carries a heartbeat:
`read_status` shows a RUNNING run whose process is gone as ABANDONED, and `mark_abandoned` (the
next run's start, `vpt clean`) rewrites it so. A run that ends without finishing (FAILED,
INTERRUPTED, ABANDONED) must not leave a report that looks finished: `retract_outputs` removes
what a cut-short commit may have written (metrics.json, report.html, the parquet tables,
optimized.yaml) and writes a summary.md whose first line states the status. Its scratch,
`runs/{run_id}` (a copy of the feature store, Tune's results: ~4.5 MB for a tiny run), goes too
(`remove_scratch`): by the run itself when it ends FAILED, INTERRUPTED or STOPPED, by the next
run when it finds it ABANDONED. The resume cache (`paths.cache`) keeps what a rerun reuses; the
traceback of a failure is in the run log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import socket
from pathlib import Path

import psutil

from vpt_ray.core.storage import write_json_atomic, write_text_atomic

log = logging.getLogger("vpt_ray")
STALE_AFTER_S = 600.0  # a RUNNING run on another host silent this long is ABANDONED
# what only a whole run's commit writes: gone from a run that did not finish
COMMIT_FILES = ("metrics.json", "report.html", "optimized.yaml")


def remove_owned(path: Path, parent: Path) -> None:
    """Delete the directory `path` only if it resolves to a direct child of `parent`: a run
    removes its own directories and nothing else (a symlink or `..` pointing elsewhere raises)."""
    target, home = path.resolve(), parent.resolve()
    if target.parent != home:
        raise ValueError(
            f"refusing to delete {path}: it resolves to {target}, not to a directory directly "
            f"under {home}"
        )
    if target.is_dir():
        shutil.rmtree(target)


def process_identity() -> dict:
    """This process as status.json records it: pid, its start time (pids are reused) and host."""
    me = psutil.Process()
    return {"pid": me.pid, "pid_started": round(me.create_time(), 2), "host": socket.gethostname()}


def abandoned_reason(status: dict, now: dt.datetime | None = None) -> str | None:
    """Why a status.json that says RUNNING belongs to a run that is no longer running, or None.

    On this host: its process is gone (or the pid now belongs to another process). On another
    host: no heartbeat for STALE_AFTER_S. A status without a pid (written before runs recorded
    one) is judged by its time stamps alone."""
    if status.get("status") != "RUNNING":
        return None
    pid, host = status.get("pid"), status.get("host")
    if pid is not None and host == socket.gethostname():
        try:
            started = psutil.Process(int(pid)).create_time()
        except (psutil.NoSuchProcess, ValueError):
            return f"its process {pid} on {host} is gone"
        except psutil.Error:
            return None
        if abs(started - float(status.get("pid_started") or started)) > 1.0:
            return f"its process {pid} on {host} is gone (the pid now belongs to another process)"
        return None
    beat = status.get("heartbeat") or status.get("at")
    try:
        last = dt.datetime.fromisoformat(str(beat))
    except ValueError:
        return None
    if last.tzinfo is None:
        last = last.astimezone()  # "at" is local time
    age = ((now or dt.datetime.now(dt.timezone.utc)) - last).total_seconds()
    if age > STALE_AFTER_S:
        where = f" on {host}" if host else ""
        return f"no heartbeat from its process{where} for {age / 60:.0f} min"
    return None


def read_status(report_dir: Path) -> dict | None:
    """A run's status.json as readers should see it: a RUNNING run whose process is gone says
    ABANDONED, with `abandoned` saying why; None when there is no (readable) status.json."""
    try:
        status = json.loads((report_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict):
        return None
    why = abandoned_reason(status)
    return {**status, "status": "ABANDONED", "abandoned": why} if why else status


def mark_abandoned(reports: Path, skip: str | None = None) -> list[str]:
    """Rewrite the status.json of every run under `reports` that says RUNNING but whose process
    is gone as ABANDONED (with why), so listings, `vpt compare` and `vpt report` stop taking it for
    a live run; one warning each. Returns their run ids."""
    found = []
    for path in sorted(reports.glob("*/status.json")) if reports.is_dir() else []:
        if path.parent.name == skip:
            continue
        status = read_status(path.parent)
        if status is None or status["status"] != "ABANDONED":
            continue
        try:
            write_json_atomic(path, status)
        except OSError:
            continue
        run_id = path.parent.name
        found.append(run_id)
        retract_outputs(path.parent, run_id, "ABANDONED", status["abandoned"])
        scratch = remove_scratch(reports.parent / "runs" / run_id)
        log.warning(
            "run %s is ABANDONED: status.json said RUNNING but %s; it never finished (nothing "
            "of it was published)%s",
            run_id,
            status["abandoned"],
            f"; its scratch runs/{run_id} was removed" if scratch else "",
        )
    return found


def retract_outputs(report_dir: Path, run_id: str, status: str, error: str | None) -> None:
    """Remove what makes `report_dir` look like a finished run's (a commit cut short, or an
    earlier run of this id) and write a summary.md that says `status` on its first line.
    Best effort: on a full disk the removals still happen, the summary may not."""
    if not report_dir.is_dir():
        return
    for f in [*(report_dir / n for n in COMMIT_FILES), *report_dir.glob("*.parquet")]:
        with contextlib.suppress(OSError):
            f.unlink(missing_ok=True)
    text = (
        f"# vpt-ray run {run_id}: {status}\n\n"
        f"- {status}{f': {error}' if error else ''}\n"
        "- Nothing of this run was published: no model, no report, no tracker row.\n"
    )
    try:
        write_text_atomic(report_dir / "summary.md", text)
    except OSError:
        with contextlib.suppress(OSError):
            (report_dir / "summary.md").unlink(missing_ok=True)


def remove_scratch(work_dir: Path) -> bool:
    """Delete a run's scratch `runs/{run_id}` (only that: `remove_owned`); True if removed."""
    if not work_dir.is_dir():
        return False
    try:
        remove_owned(work_dir, work_dir.parent)
    except (OSError, ValueError):
        return False
    return True
