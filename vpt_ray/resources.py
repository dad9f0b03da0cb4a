"""Ray start-up with the hardware caps, and a sampler of the run's memory.

The config's hardware section describes the reference workstation (8 cores, 32 GB); this module
clamps it to the machine it actually runs on, says so in the log, and caps Ray's object store.
The sampler adds up the proportional set size (PSS) of the driver and every process it started
(raylet, GCS, workers), so shared object-store pages are not counted once per worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import psutil
import ray

from vpt_ray.config import HardwareConfig

log = logging.getLogger(__name__)
GB = 1024**3


@dataclass(frozen=True)
class RayCaps:
    num_cpus: int
    memory_gb: float
    object_store_gb: float
    clamped: tuple[str, ...]


def machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def clamp(hw: HardwareConfig) -> RayCaps:
    """The config's caps, lowered to what this machine has."""
    cpus, mem_gb = machine_cpus(), psutil.virtual_memory().total / GB
    notes = []
    num_cpus = hw.num_cpus
    if num_cpus > cpus:
        notes.append(f"num_cpus {hw.num_cpus} -> {cpus} (machine has {cpus})")
        num_cpus = cpus
    memory_gb = hw.memory_gb
    if memory_gb > mem_gb:
        notes.append(f"memory_gb {hw.memory_gb:g} -> {mem_gb:.1f} (machine has {mem_gb:.1f})")
        memory_gb = mem_gb
    store_gb = min(hw.object_store_gb, 0.3 * memory_gb)
    if store_gb < hw.object_store_gb:
        notes.append(f"object_store_gb {hw.object_store_gb:g} -> {store_gb:.1f} (30% of memory)")
    return RayCaps(num_cpus, memory_gb, store_gb, tuple(notes))


def init_ray(hw: HardwareConfig) -> dict:
    """Start (or join) Ray once per process; returns what Ray was given, for the report."""
    address = hw.ray_address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        res = ray.cluster_resources()
        log.info("Ray already running in this process: %s CPUs", res.get("CPU"))
        return {"mode": "existing", "num_cpus": res.get("CPU", 0)}
    if address:
        ray.init(address=address, log_to_driver=True)
        res = ray.cluster_resources()
        log.info("joined Ray cluster at %s: %s CPUs", address, res.get("CPU"))
        return {"mode": "cluster", "address": address, "num_cpus": res.get("CPU", 0)}
    caps = clamp(hw)
    for note in caps.clamped:
        log.warning("hardware clamped to this machine: %s", note)
    ctx = ray.init(
        num_cpus=caps.num_cpus,
        object_store_memory=int(caps.object_store_gb * GB),
        include_dashboard=_dashboard_available(),
        dashboard_host="127.0.0.1",
        configure_logging=False,
        log_to_driver=True,
    )
    url = getattr(ctx, "dashboard_url", None)
    if url:
        log.info("Ray dashboard: http://%s", url)
    return {
        "mode": "local",
        "num_cpus": caps.num_cpus,
        "memory_gb": round(caps.memory_gb, 2),
        "object_store_gb": round(caps.object_store_gb, 2),
        "clamped": list(caps.clamped),
        "dashboard": f"http://{url}" if url else None,
    }


def _dashboard_available() -> bool:
    if os.environ.get("VPT_RAY_NO_DASHBOARD"):
        return False
    try:
        import ray.dashboard  # noqa: F401
    except ImportError:
        return False
    return True


def tree_memory_bytes(root: psutil.Process) -> int:
    """PSS (falls back to RSS) of `root` and all its descendants."""
    total = 0
    procs = [root]
    with contextlib.suppress(psutil.Error):
        procs += root.children(recursive=True)
    for p in procs:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.AccessDenied:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


@dataclass
class MemorySampler:
    """Background thread recording the memory of the driver and its Ray processes."""

    interval_s: float = 0.5
    warn_gb: float | None = None
    limit_gb: float | None = None
    peak_bytes: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)
    over_limit: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _warned: bool = False

    def _run(self) -> None:
        me = psutil.Process()
        t0 = time.monotonic()
        while not self._stop.is_set():
            used = tree_memory_bytes(me)
            self.peak_bytes = max(self.peak_bytes, used)
            self.samples.append((round(time.monotonic() - t0, 2), round(used / GB, 3)))
            if self.warn_gb and used > self.warn_gb * GB and not self._warned:
                self._warned = True
                log.warning("memory %.1f GB passed hardware.memory_warn_gb", used / GB)
            if self.limit_gb and used > self.limit_gb * GB:
                self.over_limit = True
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB
