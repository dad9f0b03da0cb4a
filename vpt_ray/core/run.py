"""A run's identity and bookkeeping: run id, directories, log file, stage timings, provenance.

Every run writes `logs/run-{run_id}.log`, marks its report directory RUNNING -> FINISHED or
FAILED (`status.json`), and records the resolved config, data fingerprint, package versions and
git commit, so any figure can be traced to what produced it. With `paths.artifacts` (or
`paths.logs`, `paths.tracker`) on gs://, the same files end up in the bucket (`RunContext`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil
import yaml

from vpt_ray.core import storage
from vpt_ray.core.config import Config, ConfigError

# re-exported: how a run ended, as readers see it (`vpt_ray.core.run_status`)
from vpt_ray.core.run_status import STALE_AFTER_S as STALE_AFTER_S
from vpt_ray.core.run_status import abandoned_reason as abandoned_reason
from vpt_ray.core.run_status import mark_abandoned as mark_abandoned
from vpt_ray.core.run_status import process_identity as process_identity
from vpt_ray.core.run_status import read_status as read_status
from vpt_ray.core.run_status import remove_owned as remove_owned
from vpt_ray.core.run_status import remove_scratch, retract_outputs
from vpt_ray.core.storage import Location
from vpt_ray.core.storage import atomic_dir as atomic_dir  # re-exported: the atomic writers' home
from vpt_ray.core.storage import write_bytes_atomic as write_bytes_atomic
from vpt_ray.core.storage import write_json_atomic as write_json_atomic
from vpt_ray.core.storage import write_text_atomic as write_text_atomic

log = logging.getLogger("vpt_ray")
MODEL_MARKER = "meta.json"  # uploaded last: a model directory without it is incomplete
PACKAGES = ("ray", "xgboost", "pandas", "numpy", "pyarrow", "scikit-learn", "numba", "vpt-ray")
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HEARTBEAT_S = 30.0  # a RUNNING run rewrites status.json this often


def new_run_id(cfg: Config) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-p{cfg.phase}-{cfg.fingerprint()[:6]}"


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a name (it becomes a directory under models/, reports/ and runs/, which
    a rerun replaces); ConfigError otherwise: `.`, `..`, slashes or spaces would point those
    deletes at other runs or at artifacts/ itself."""
    if run_id in (".", "..") or not RUN_ID_RE.fullmatch(run_id):
        raise ConfigError(
            f"--run-id {run_id!r}: a run id is a name, not a path: 1-128 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit (e.g. phase1-try2)"
        )
    return run_id


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


FRESH_PROCESS_S = 60.0  # a process this young when its command starts was started for it
_COMMAND: dict = {"started": None, "seen": False}  # `command_started`: its monotonic start


def command_started() -> None:
    """Mark a command's start (its `main`): the first run it makes counts its start-up, the
    time from here (from the process's own start for a fresh process: the interpreter and the
    imports before `main`) to the run's start, as the stage "start-up" and in its wall time."""
    age = time.time() - psutil.Process().create_time()
    first = not _COMMAND["seen"] and age < FRESH_PROCESS_S
    _COMMAND["seen"] = True
    _COMMAND["started"] = time.monotonic() - (age if first else 0.0)


def _take_startup() -> float | None:
    """Seconds from the command's start to now, once per command (None if none started)."""
    started, _COMMAND["started"] = _COMMAND["started"], None
    return None if started is None else round(time.monotonic() - started, 2)


@dataclass
class RunContext:
    """Paths and timings of one run.

    Where things go: `artifacts` (`paths.artifacts`) holds `reports/{run_id}`, `models/{run_id}`
    and `runs/{run_id}`. When it is a gs:// prefix, the run writes into a local mirror of that
    layout (`scratch`: `paths.scratch`, else a temp dir) and `mark` / `publish_model` upload it,
    so the report readers and writers stay plain local code; the feature store and Tune write to
    gs:// directly (`work_location`), since their tasks run on other nodes.
    """

    cfg: Config
    run_id: str
    root: Path = field(default_factory=Path.cwd)
    stages: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)
    config_chain: list[str] = field(default_factory=list)  # base -> phase -> file -> --set
    _scratch: Path | None = field(default=None, repr=False)
    kind: str = "phase"  # "phase" or "backtest" (a saved model re-tested): MLflow's vpt.kind tag
    _mlflow: object | None = field(default=None, repr=False)  # tracking.MlflowRun when enabled
    _temp_scratch: bool = field(default=False, repr=False)  # made by mkdtemp: the run removes it
    _synced: bool = field(default=False, repr=False)  # the last mark uploaded everything
    _status: dict = field(default_factory=dict, repr=False)
    _beat: threading.Event | None = field(default=None, repr=False)
    _status_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        startup = _take_startup()
        if startup is not None:  # started by a command: its start-up is part of the run
            self.stages["start-up"] = startup
            self.t0 -= startup

    def location(self, value: str) -> Location:
        """A `paths.*` value as a local path (under `root`) or a GcsPath."""
        return storage.parse(value, self.root, self.cfg.gcs)

    @property
    def artifacts(self) -> Location:
        return self.location(self.cfg.paths.artifacts)

    @property
    def remote(self) -> bool:
        """The artifacts live on gs:// (the run writes a local mirror and uploads it)."""
        return storage.is_remote(self.artifacts)

    @property
    def scratch(self) -> Path:
        """Local working dir of a run with gs:// outputs: `paths.scratch`, else a temp dir."""
        if self._scratch is None:
            if self.cfg.paths.scratch:
                self._scratch = self.root / self.cfg.paths.scratch
            else:
                self._scratch = Path(tempfile.mkdtemp(prefix=f"vpt-ray-{self.run_id}-"))
                self._temp_scratch = True
        return self._scratch

    def remove_temp_scratch(self) -> None:
        """Delete the temp dir `scratch` made (never `paths.scratch`), once the last mark
        uploaded its files: the bucket holds them; a failed upload keeps the local copy."""
        if self._temp_scratch and self._synced and self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            log.info(
                "removed the run's local scratch %s (its files are in the bucket)", self._scratch
            )

    @property
    def local_artifacts(self) -> Path:
        """Where this run writes its files: `artifacts` itself, or its mirror in `scratch`."""
        arts = self.artifacts
        return arts if isinstance(arts, Path) else self.scratch

    @property
    def report_dir(self) -> Path:
        return self.local_artifacts / "reports" / self.run_id

    @property
    def report_location(self) -> Location:
        """Where the report ends up (`report_dir` itself for a local run)."""
        return self.artifacts / "reports" / self.run_id

    @property
    def model_dir(self) -> Location:
        return self.artifacts / "models" / self.run_id

    @property
    def staged_model_dir(self) -> Path:
        """Where the model is written during the run; `publish_model` moves it to `model_dir`."""
        return self.work_dir / "model"

    def publish_model(self) -> None:
        """Move the staged model into `artifacts/models/` once the run has succeeded, so a run
        that fails later never leaves a model that looks like a finished run's. On gs:// the
        files are uploaded with meta.json last: a model prefix without it is incomplete."""
        if not self.staged_model_dir.exists():
            return
        final = self.model_dir
        if isinstance(final, storage.GcsPath):
            storage.remove(final)
            storage.upload_dir(self.staged_model_dir, final, last=(MODEL_MARKER,))
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_owned(final, self.artifacts / "models")  # type: ignore[operator]
        os.replace(self.staged_model_dir, final)

    @property
    def work_dir(self) -> Path:
        """Scratch of this run (feature store, Tune results): kept for inspection and resume."""
        return self.local_artifacts / "runs" / self.run_id

    @property
    def work_location(self) -> Location:
        """`runs/{run_id}` where every node can reach it: Tune's storage, feature stores built
        by tasks (`work_dir` itself for a local run)."""
        return self.artifacts / "runs" / self.run_id

    @property
    def log_path(self) -> Path:
        """The run log on this machine (in `scratch` when `paths.logs` is on gs://)."""
        name = f"run-{self.run_id}.log"
        logs = self.location(self.cfg.paths.logs)
        return logs / name if isinstance(logs, Path) else self.scratch / "logs" / name

    @property
    def log_location(self) -> Location | None:
        """Where the run log is uploaded at every mark: `paths.logs` on gs://, else the gs://
        report; None for a local run."""
        name = f"run-{self.run_id}.log"
        logs = self.location(self.cfg.paths.logs)
        if storage.is_remote(logs):
            return logs / name
        return self.report_location / name if self.remote else None

    @property
    def tracker_path(self) -> Location:
        return self.location(self.cfg.paths.tracker)

    def remote_locations(self) -> list[storage.GcsPath]:
        """The gs:// locations this run writes to (artifacts, logs, tracker, cache)."""
        values = [self.cfg.paths.artifacts, self.cfg.paths.logs, self.cfg.paths.tracker]
        values += [self.cfg.paths.cache] if self.cfg.paths.cache else []
        return [loc for v in values if isinstance(loc := self.location(v), storage.GcsPath)]

    def check_storage(self, check: Callable[[storage.GcsPath], None]) -> None:
        """Fail in seconds, with one line, when a gs:// location cannot be reached: `check`
        (`vpt_ray.data.gcs.check_location`) raises StorageError for a bucket that does not
        answer."""
        if self.remote and not storage.is_remote(self.tracker_path):
            log.warning(
                "paths.artifacts is on gs:// but paths.tracker (%s) is local: on a cluster it is "
                "lost with the node; set paths.tracker=gs://.../SCALING_TRACKER.md",
                self.tracker_path,
            )
        seen = set()
        for loc in self.remote_locations():
            key = (loc.bucket, storage.endpoint(loc.gcs), loc.gcs.token)
            if key not in seen:
                seen.add(key)
                check(loc.parent)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.monotonic()
        log.info("stage %s ...", name)
        try:
            yield
        finally:
            self.stages[name] = round(time.monotonic() - t, 2)
            log.info("stage %s done in %.1fs", name, self.stages[name])

    def wall_seconds(self) -> float:
        """Seconds since the run started; a run a command started counts from the command's
        start (the stage "start-up": the interpreter, imports, config)."""
        return round(time.monotonic() - self.t0, 2)

    def mark(self, status: str, error: str | None = None) -> None:
        """Write status.json; on gs:// upload the run's files, status.json last, so a reader
        who sees a final status sees the whole report. An upload failing while marking a
        failed run is logged, not raised, so it never hides the run's own error.
        With `tracking.mlflow`, RUNNING starts the run's MLflow run and a final status ends it
        (`vpt_ray.core.tracking`).

        status.json names the process (pid, its start time, host) and carries a heartbeat,
        rewritten every HEARTBEAT_S while RUNNING, so a reader can tell a live run from one
        that was killed (`read_status`: ABANDONED).

        FAILED and INTERRUPTED first take back what looks finished (`run_status.retract_outputs`),
        then record the status as best they can: on a full disk the run's own error is what the
        user must see. A run that did not finish (those two, STOPPED) drops its scratch
        `runs/{run_id}`: the resume cache holds what a rerun reuses."""
        if status == "RUNNING":
            self._start_tracking()
        cut_short = status in ("FAILED", "INTERRUPTED")
        if cut_short:
            retract_outputs(self.report_dir, self.run_id, status, error)
        if status in ("FAILED", "INTERRUPTED", "STOPPED") and not self.remote:
            remove_scratch(self.work_dir)  # resume uses the cache, the report nothing of it
        with self._status_lock:
            self._status = {
                "run_id": self.run_id,
                "status": status,
                "error": error,
                "at": dt.datetime.now(),
                **process_identity(),
                "heartbeat": _utc_now(),
                "config_chain": self.config_chain,
            }
            try:
                write_json_atomic(self.report_dir / "status.json", self._status)
            except OSError as exc:
                if not cut_short:
                    raise
                log.error("run %s: status %s not written: %s", self.run_id, status, exc)
        if status == "RUNNING":
            self._start_heartbeat()
        elif self._beat is not None:
            self._beat.set()
        self._synced = False
        try:
            self.upload()
            self._synced = True
        except Exception:
            if status in ("RUNNING", "FINISHED"):
                raise
            log.exception(
                "run %s marked %s, but its files were not all uploaded", self.run_id, status
            )
        if status != "RUNNING":
            self._finish_tracking(status, error)

    def mlflow_info(self) -> dict | None:
        """Where this run is logged in MLflow (metrics.json `mlflow`, the summary's line), or
        None when tracking is off."""
        run = self._mlflow
        if run is None:
            return None
        info = {k: getattr(run, k) for k in ("uri", "experiment", "run_id", "trials")}
        return {**info, "where": run.where()}  # type: ignore[attr-defined]

    def _start_tracking(self) -> None:
        from vpt_ray.core import tracking

        tags = {"vpt.phase": self.cfg.phase, "vpt.kind": self.kind, "vpt.git_commit": git_commit()}
        self._mlflow = tracking.start_run(self.cfg, self.run_id, self.root, tags)

    def _finish_tracking(self, status: str, error: str | None) -> None:
        from vpt_ray.core import tracking

        local = [p if isinstance(p, Path) else None for p in (self.model_dir, self.tracker_path)]
        model, tracker = local
        tracker_chart = tracker.with_suffix(".png") if tracker is not None else None
        tracking.finish_run(
            self._mlflow, status, error,  # type: ignore[arg-type]
            report=self.report_dir, model=model if self.kind == "phase" else None,
            tracker=tracker, tracker_chart=tracker_chart,
        )  # fmt: skip
        self._mlflow = None

    def _start_heartbeat(self) -> None:
        if self._beat is not None and not self._beat.is_set():
            return
        stop = self._beat = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with self._status_lock:
                    if stop.is_set() or self._status.get("status") != "RUNNING":
                        return
                    self._status["heartbeat"] = _utc_now()
                    path = self.report_dir / "status.json"
                    try:
                        write_json_atomic(path, self._status)
                        if self.remote:
                            storage.upload_file(path, self.report_location / path.name)
                    except Exception:  # noqa: BLE001 - a missed beat must not end the run
                        log.debug("heartbeat of run %s not written", self.run_id, exc_info=True)

        threading.Thread(target=beat, name=f"heartbeat-{self.run_id}", daemon=True).start()

    def upload(self) -> None:
        """Mirror the run log, the run's own work files and the report to gs:// (no-op for a
        local run); the model is uploaded by `publish_model` only."""
        if self.log_location is not None and self.log_path.exists():
            storage.upload_file(self.log_path, self.log_location)
        if not self.remote:
            return
        if self.work_dir.is_dir():
            for f in sorted(p for p in self.work_dir.iterdir() if p.is_file()):
                storage.upload_file(f, self.work_location / f.name)
        storage.upload_dir(self.report_dir, self.report_location, last=("status.json",))

    def snapshot_config(self, header: str | None = None) -> None:
        """config.yaml: the resolved config, after `header` as YAML comment lines."""
        path = self.report_dir / "config.yaml"
        comment = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
        chain = "".join(f"# {i}. {origin}\n" for i, origin in enumerate(self.config_chain, 1))
        if chain:
            chain = "# resolved config; layers, each over the one before:\n" + chain
        text = comment + chain + yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        write_text_atomic(path, text)
        if self.remote:
            storage.upload_file(path, self.report_location / path.name)


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class StderrHandler(logging.StreamHandler):
    """A console handler that writes to whatever `sys.stderr` is when a record comes: a redirect
    (or a test's capture) made after the first run of the process is followed, never a stream
    that has since been closed."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class RunLogFile(logging.FileHandler):
    """The run log. A write that fails (a full disk) is said once on the console, not with a
    traceback for every line as logging's default `handleError` does."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self.failed:
            self.failed = True
            why = sys.exc_info()[1]
            sys.stderr.write(f"warning: run log {self.baseFilename} not written: {why}\n")


CONSOLE_TIME = "%H:%M:%S"  # the console: the run is happening now
LOG_FILE_TIME = "%Y-%m-%d %H:%M:%S"  # the run log is read later, next to other days' logs


def setup_logging(log_path: Path | None, level: int = logging.INFO) -> None:
    """Console + run log file for the `vpt_ray` logger tree (idempotent per process); Ray's
    libraries stop drawing on the console (`vpt_ray.core.console`). The run log's time stamps
    carry the date; the console's show the time of day only."""
    from vpt_ray.core.console import ConsoleFilter, quiet_libraries

    quiet_libraries()
    root = logging.getLogger("vpt_ray")
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_vpt_file", False):
            root.removeHandler(h)
            h.close()
    line = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if not any(getattr(h, "_vpt_console", False) for h in root.handlers):
        console = StderrHandler()
        console.setFormatter(logging.Formatter(line, CONSOLE_TIME))
        console.addFilter(ConsoleFilter())
        console._vpt_console = True  # type: ignore[attr-defined]
        root.addHandler(console)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = RunLogFile(log_path)
        fh.setFormatter(logging.Formatter(line, LOG_FILE_TIME))
        fh._vpt_file = True  # type: ignore[attr-defined]
        root.addHandler(fh)
    root.propagate = False
