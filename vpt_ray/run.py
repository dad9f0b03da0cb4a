"""A run's identity and bookkeeping: run id, directories, log file, stage timings, provenance.

Every run writes `logs/run-{run_id}.log`, marks its report directory RUNNING -> FINISHED or
FAILED (`status.json`), and records the resolved config, data fingerprint, package versions and
git commit, so any figure can be traced to what produced it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

from vpt_ray.config import Config

log = logging.getLogger("vpt_ray")
PACKAGES = ("ray", "xgboost", "pandas", "numpy", "pyarrow", "scikit-learn", "numba", "vpt-ray")


def new_run_id(cfg: Config) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-p{cfg.phase}-{cfg.fingerprint()[:6]}"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temp file + rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a directory under a temp name next to `final`; on success swap it into place, on
    failure remove it, so `final` is either the old complete directory or the new one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: Path, obj: object) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")


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


@dataclass
class RunContext:
    """Paths and timings of one run; use `RunContext.start(cfg)` as a context manager."""

    cfg: Config
    run_id: str
    root: Path = field(default_factory=Path.cwd)
    stages: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    @property
    def artifacts(self) -> Path:
        return self.root / self.cfg.paths.artifacts

    @property
    def report_dir(self) -> Path:
        return self.artifacts / "reports" / self.run_id

    @property
    def model_dir(self) -> Path:
        return self.artifacts / "models" / self.run_id

    @property
    def staged_model_dir(self) -> Path:
        """Where the model is written during the run; `publish_model` moves it to `model_dir`."""
        return self.work_dir / "model"

    def publish_model(self) -> None:
        """Move the staged model into `artifacts/models/` once the run has succeeded, so a run
        that fails later never leaves a model that looks like a finished run's."""
        if not self.staged_model_dir.exists():
            return
        self.model_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.model_dir.exists():
            shutil.rmtree(self.model_dir)
        os.replace(self.staged_model_dir, self.model_dir)

    @property
    def work_dir(self) -> Path:
        """Scratch of this run (feature store, Tune results): kept for inspection and resume."""
        return self.artifacts / "runs" / self.run_id

    @property
    def log_path(self) -> Path:
        return self.root / self.cfg.paths.logs / f"run-{self.run_id}.log"

    @property
    def tracker_path(self) -> Path:
        return self.root / self.cfg.paths.tracker

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
        return round(time.monotonic() - self.t0, 2)

    def mark(self, status: str, error: str | None = None) -> None:
        write_json_atomic(
            self.report_dir / "status.json",
            {"run_id": self.run_id, "status": status, "error": error, "at": dt.datetime.now()},
        )

    def snapshot_config(self) -> None:
        write_text_atomic(
            self.report_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        )


def setup_logging(log_path: Path | None, level: int = logging.INFO) -> None:
    """Console + run log file for the `vpt_ray` logger tree (idempotent per process)."""
    root = logging.getLogger("vpt_ray")
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_vpt_file", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(getattr(h, "_vpt_console", False) for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        console._vpt_console = True  # type: ignore[attr-defined]
        root.addHandler(console)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path)
        fh.setFormatter(fmt)
        fh._vpt_file = True  # type: ignore[attr-defined]
        root.addHandler(fh)
    root.propagate = False
