"""Ray start-up with the hardware caps, a sampler of the run's memory, and the stop rule.

The config's hardware section describes the reference workstation (8 cores, 32 GB); this module
clamps it to the machine it actually runs on, says so in the log, and caps Ray's object store.
The sampler adds up the proportional set size (PSS) of the driver and every process it started
(raylet, GCS, workers), so shared object-store pages are not counted once per worker.

The stop rule: crossing `hardware.memory_warn_gb` logs a warning; crossing
`hardware.memory_limit_gb` raises a flag that the run checks at its safe points (between stages,
in the fan-out progress loop, in Tune's stopper) through `check_memory`, which raises
`MemoryLimitExceeded`; the phase turns that, and Ray's own `OutOfMemoryError`, into a clean stop
with verdict "stop" instead of an OOM kill. Task and trial memory declarations (`memory=`) are
Ray's admission control: `clamp_task_memory` keeps them schedulable on the node Ray has.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
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
MB = 1024**2
WORKER_BASELINE_BYTES = 300 * MB  # a Ray worker with numpy, pandas and xgboost imported


class MemoryLimitExceeded(RuntimeError):
    """The run passed `hardware.memory_limit_gb` (or Ray killed a task for memory): stop cleanly.

    `cause` is "memory_limit" (our sampler) or "ray_oom" (Ray's memory monitor); `stage` is where
    the run noticed it.
    """

    def __init__(self, message: str, *, stage: str, cause: str, used_gb: float | None = None):
        super().__init__(message)
        self.stage, self.cause, self.used_gb = stage, cause, used_gb


_OOM_TEXT = ("OutOfMemoryError", "running low on memory", "memory pressure")


def is_ray_oom(exc: BaseException) -> bool:
    """Whether `exc` (or anything it wraps: causes, Ray task causes, Tune trial errors) is Ray's
    out-of-memory kill. Tune reports a dead trial's error as text, hence the text match."""
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ray.exceptions.OutOfMemoryError):
            return True
        if any(t in str(e) for t in _OOM_TEXT):
            return True
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return False


def ray_oom_stop(exc: BaseException, stage: str) -> MemoryLimitExceeded:
    """The clean stop a Ray OOM kill in `stage` turns into."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return MemoryLimitExceeded(
        f"Ray's memory monitor killed a task in stage {stage} (OutOfMemoryError: {first}); the "
        "run stopped instead of retrying. Lower the data per task (fewer tickers or years, "
        "--sample-days) or raise hardware.memory_limit_gb on a larger machine",
        stage=stage,
        cause="ray_oom",
    )


def release_freed_memory() -> None:
    """Hand memory that Python and XGBoost freed back to the OS (glibc's `malloc_trim`).

    glibc keeps freed heap pages for reuse, so a long-lived Ray worker that fitted folds or
    backtested tickers keeps its largest footprint and adds to it: a search worker grew
    367 -> 631 MB over four trials of 814k samples, and stays flat with a trim after each
    fold (/tmp experiment, recorded in issue 6's note). A no-op where there is no glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():  # noqa: ANN202 - a ctypes function or None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def quantized_bytes(rows: int, features: int, max_bin: int = 256) -> int:
    """Size of XGBoost's quantized matrix: one bin index per cell (1 byte up to 256 bins)."""
    return int(rows * features * (1 if max_bin <= 256 else 2))


# What XGBoost (3.2, `hist`, CPU) really holds, measured on a dense float32 matrix: its
# QuantileDMatrix keeps a row-major bin index and a column index, ~3.2 bytes a cell (6.2 with
# missing cells: the sparse layout), and training adds ~34 bytes a row (gradients, prediction
# caches, row partitions). bench/bench_scaling.py measures both again on every run.
XGB_BYTES_PER_CELL = 3.25
XGB_TRAIN_BYTES_PER_ROW = 36


def xgb_matrix_bytes(rows: int, features: int) -> int:
    """XGBoost's own footprint for a dense quantized matrix (`XGB_BYTES_PER_CELL`)."""
    return int(rows * features * XGB_BYTES_PER_CELL)


def trial_bytes(fold_rows: int, features: int, sample_rows: int) -> int:
    """Memory of one search worker (`search._trainable`): the largest fold's quantized matrices
    and training buffers, one chunk of float rows, the sample file's label, return and session
    columns (12 bytes a sample) and the worker process itself."""
    chunk = 2 * 65_536 * features * 4
    fold = xgb_matrix_bytes(fold_rows, features) + XGB_TRAIN_BYTES_PER_ROW * fold_rows
    return int(fold + chunk + 12 * sample_rows + WORKER_BASELINE_BYTES)


def node_memory_bytes() -> int:
    """Ray's `memory` resource on its largest live node (what one task can be admitted with)."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return int(max(n["Resources"].get("memory", 0) for n in nodes)) if nodes else 0
    except Exception:  # noqa: BLE001 - Ray not started: no cap to apply
        return 0


def clamp_task_memory(estimate: int, concurrent: int = 1, label: str = "task") -> int:
    """`estimate` bytes, lowered so `concurrent` such tasks fit the node's memory resource.

    A declaration above what any node has would leave the task unschedulable (the run would hang),
    so it is capped and the cap logged: admission control then only spreads the load.
    """
    node = node_memory_bytes()
    if node <= 0:
        return int(estimate)
    cap = int(0.9 * node / max(1, concurrent))
    if estimate > cap:
        log.warning(
            "%s memory estimate %.2f GB is above what %d concurrent %ss get on this node "
            "(%.2f GB): declaring %.2f GB",
            label,
            estimate / GB,
            concurrent,
            label,
            node / GB,
            cap / GB,
        )
        return cap
    return int(estimate)


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


def wait_for_exit(title: str, timeout_s: float = 10.0) -> float:
    """Wait until no process under this one has a title starting with `title` (Ray titles a
    worker after the actor it hosts: Tune's trials are `ray::ImplicitFunc`). Ray ends actors
    asynchronously; waiting keeps a finished stage's workers out of the next stage's memory.
    Returns the seconds waited; gives up after `timeout_s` (remote nodes are not seen)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s and any(
        _title(p).startswith(title) for p in psutil.Process().children(recursive=True)
    ):
        time.sleep(0.1)
    return time.monotonic() - t0


def _title(p: psutil.Process) -> str:
    """A process's title (argv[0], which Ray's workers set); "" once it has gone."""
    try:
        return (p.cmdline() or [""])[0]
    except psutil.Error:
        return ""


@dataclass(eq=False)  # identity semantics: samplers are registered and removed by identity
class MemorySampler:
    """Background thread recording the memory of the driver and its Ray processes."""

    interval_s: float = 0.5
    warn_gb: float | None = None
    limit_gb: float | None = None
    peak_bytes: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)
    over_limit: bool = False
    over_bytes: int = 0  # the first sample past the limit
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    stage: str = "start"  # the pipeline stage running now (set by the phase)
    stage_peaks: dict[str, float] = field(default_factory=dict)  # GB, per stage
    _warned: bool = False
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def sample(self) -> int:
        """Measure once, update the peak, warn once past the warning level, flag the limit."""
        used = tree_memory_bytes(psutil.Process())
        self.peak_bytes = max(self.peak_bytes, used)
        gb = round(used / GB, 3)
        self.stage_peaks[self.stage] = max(self.stage_peaks.get(self.stage, 0.0), gb)
        self.samples.append((round(time.monotonic() - self._t0, 2), round(used / GB, 3)))
        if self.warn_gb and used > self.warn_gb * GB and not self._warned:
            self._warned = True
            log.warning(
                "memory %.2f GB passed hardware.memory_warn_gb (%g GB); the run stops at "
                "hardware.memory_limit_gb (%s GB)",
                used / GB,
                self.warn_gb,
                f"{self.limit_gb:g}" if self.limit_gb else "none",
            )
        if self.limit_gb and used > self.limit_gb * GB and not self.over_limit:
            self.over_bytes = used
            self.over_limit = True
            log.error(
                "memory %.2f GB passed hardware.memory_limit_gb (%g GB): stopping at the next "
                "safe point",
                used / GB,
                self.limit_gb,
            )
        return used

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def check(self, where: str) -> None:
        """Raise `MemoryLimitExceeded` if the limit was crossed (call at safe points; `where`
        names the point, e.g. "the start of stage search")."""
        if self.over_limit:
            raise MemoryLimitExceeded(
                f"memory {self.over_bytes / GB:.2f} GB (driver + Ray processes) passed "
                f"hardware.memory_limit_gb = {self.limit_gb:g} GB; stopped cleanly at {where}",
                stage=where,
                cause="memory_limit",
                used_gb=round(self.over_bytes / GB, 3),
            )

    def __enter__(self) -> MemorySampler:
        self._t0 = time.monotonic()
        self.sample()  # one synchronous sample: the first safe point already knows the level
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB


_ACTIVE: list[MemorySampler] = []  # samplers running in this process (the phase's, usually one)


def check_memory(where: str) -> None:
    """Raise `MemoryLimitExceeded` if any running sampler saw the limit crossed. A no-op when no
    sampler runs (tests, the plain-loop benchmark), so any loop can call it."""
    for sampler in list(_ACTIVE):
        sampler.check(where)


def memory_exceeded() -> bool:
    return any(s.over_limit for s in _ACTIVE)


def ray_data_limits(
    hw: HardwareConfig, cpus: float | None = None, preserve_order: bool = False
) -> ray.data.ExecutionOptions:
    """Ray Data's limits for a stage: `cpus` (default: every CPU Ray has, at most
    hardware.num_cpus) and half the object store (at most hardware.object_store_gb) for blocks
    in flight, so the stage leaves room for the objects the rest of the run holds."""
    import ray.data  # Ray Data's import costs ~1 s: only for the stages that use it

    res = ray.cluster_resources()
    if cpus is None:
        cpus = min(float(hw.num_cpus), res.get("CPU", 1.0))
    store = min(hw.object_store_gb * GB, res.get("object_store_memory", float("inf")))
    return ray.data.ExecutionOptions(
        resource_limits=ray.data.ExecutionResources(cpu=cpus, object_store_memory=int(store / 2)),
        preserve_order=preserve_order,
    )
