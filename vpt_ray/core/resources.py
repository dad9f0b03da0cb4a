"""Ray start-up with the hardware caps, a sampler of the run's memory on every node, and the
stop rule.

The config's hardware section describes the reference workstation (8 cores, 32 GB); this module
clamps it to the machine it actually runs on, says so in the log, and caps Ray's object store. On
a cluster (`ray job submit`) the nodes' stores were fixed by `ray start`: each node's is checked
against `hardware.object_store_gb`, reported, and Ray Data's limits keep to the smaller of the
two per node. The sampler measures the run's memory on every node (`vpt_ray.core.node_memory`: PSS,
so shared object-store pages are not counted once per worker).

The stop rule: crossing `hardware.memory_warn_gb` on a node logs a warning; crossing
`hardware.memory_limit_gb` on any node (a per-node limit: the workstation, or one cluster
machine) or `hardware.job_memory_limit_gb` with the job's total over all nodes raises a flag that
the run checks at its safe points (between stages, in the fan-out progress loop, in Tune's
stopper) through `check_memory`, which raises `MemoryLimitExceeded`; the phase turns that, and
Ray's own `OutOfMemoryError`, into a clean stop with verdict "stop" instead of an OOM kill. Task
and trial memory declarations (`memory=`) are Ray's admission control: `clamp_task_memory` keeps
them schedulable on the node Ray has.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import psutil
import ray

from vpt_ray.core import node_memory
from vpt_ray.core.config import HardwareConfig

log = logging.getLogger("vpt_ray.resources")
GB = 1024**3
MB = 1024**2
WORKER_BASELINE_BYTES = 300 * MB  # a Ray worker with numpy, pandas and xgboost imported


class MemoryLimitExceeded(RuntimeError):
    """The run passed `hardware.memory_limit_gb` (or Ray killed a task for memory): stop cleanly.

    `cause` is "memory_limit" (our sampler) or "ray_oom" (Ray's memory monitor); `stage` is where
    the run noticed it; `scope` "node" (`hardware.memory_limit_gb`, `node` names it) or "job"
    (`hardware.job_memory_limit_gb`).
    """

    def __init__(
        self,
        message: str,
        *,
        stage: str,
        cause: str,
        used_gb: float | None = None,
        scope: str = "node",
        node: str | None = None,
    ):
        super().__init__(message)
        self.stage, self.cause, self.used_gb = stage, cause, used_gb
        self.scope, self.node = scope, node  # a node's limit or the job's; the node that passed


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
        return {"mode": "existing", "num_cpus": res.get("CPU", 0), "nodes": node_stores(hw)}
    if address:
        ray.init(address=address, log_to_driver=True)
        res = ray.cluster_resources()
        nodes = node_stores(hw)
        log.info(
            "joined Ray cluster at %s: %s CPUs on %d nodes", address, res.get("CPU"), len(nodes)
        )
        return {
            "mode": "cluster",
            "address": address,
            "num_cpus": res.get("CPU", 0),
            "nodes": nodes,
        }
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
        "nodes": node_stores(hw, set_by_config=caps.object_store_gb),
    }


def node_stores(hw: HardwareConfig, set_by_config: float | None = None) -> dict[str, dict]:
    """Each node's object store against `hardware.object_store_gb`, for the report: the store
    this run set (`set_by_config`, GB: a Ray it started) or the one the cluster's `ray start`
    fixed, which the run cannot change; a fixed store above the config's cap is logged (Ray Data
    keeps to the cap, `ray_data_limits`, other objects may fill the node's store)."""
    out = {}
    for n in node_memory.cluster_nodes():
        gb = n.store_bytes / GB
        entry = {
            "ip": n.ip,
            "head": n.head,
            "cpus": n.cpus,
            "memory_gb": round(n.memory_bytes / GB, 2),
            "object_store_gb": round(gb, 2),
            "object_store_set_by": "config" if set_by_config is not None else "cluster",
        }
        if set_by_config is None and gb > hw.object_store_gb * 1.01:
            entry["object_store_over_config"] = True
            log.warning(
                "node %s (%s): object store %.2f GB, fixed by the cluster (ray start "
                "--object-store-memory), is above hardware.object_store_gb = %g GB: Ray Data keeps "
                "to %g GB on it, the rest of the run's objects may use the node's whole store",
                n.label,
                n.ip,
                gb,
                hw.object_store_gb,
                hw.object_store_gb,
            )
        elif set_by_config is not None and abs(gb - set_by_config) > 0.05 * set_by_config + 0.01:
            log.warning(
                "node %s: Ray gave the object store %.2f GB, not the %.2f GB asked for",
                n.label,
                gb,
                set_by_config,
            )
        out[n.label] = entry
    return out


def _dashboard_available() -> bool:
    if os.environ.get("VPT_RAY_NO_DASHBOARD"):
        return False
    try:
        import ray.dashboard  # noqa: F401
    except ImportError:
        return False
    return True


def wait_for_exit(title: str, timeout_s: float = 10.0) -> float:
    """Wait until no process of this run has a title starting with `title` (Ray titles a worker
    after the actor it hosts: Tune's trials are `ray::ImplicitFunc`). Ray ends actors
    asynchronously; waiting keeps a finished stage's workers out of the next stage's memory.
    On a cluster the run's processes on every node are looked at (the running sampler's
    `titles`), else the processes under this one. Returns the seconds waited; gives up after
    `timeout_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s and any(t.startswith(title) for t in _run_titles()):
        time.sleep(0.1)
    return time.monotonic() - t0


def _run_titles() -> list[str]:
    for sampler in _ACTIVE:
        if sampler.cluster is not None and not sampler.cluster.tree:
            return sampler.titles()
    return [_title(p) for p in psutil.Process().children(recursive=True)]


def _title(p: psutil.Process) -> str:
    """A process's title (argv[0], which Ray's workers set); "" once it has gone."""
    try:
        return (p.cmdline() or [""])[0]
    except psutil.Error:
        return ""


PRE_ATTACH = "driver"  # the node's name in samples taken before Ray runs (the driver alone)


@dataclass(eq=False)  # identity semantics: samplers are registered and removed by identity
class MemorySampler:
    """Background thread recording the run's memory, node by node (`vpt_ray.core.node_memory`).

    Before `attach` (and in tests) it measures the driver and every process under it. `attach`,
    once Ray runs, switches to every node of the cluster: the driver's process tree when this
    process started Ray, else each node's Ray processes that serve this job. The stop rule:
    any node past `limit_gb` (`hardware.memory_limit_gb`, per node) or the job's total past
    `job_limit_gb` (`hardware.job_memory_limit_gb`) raises the flag that `check` turns into
    `MemoryLimitExceeded` at the run's safe points; `warn_gb` warns once per node."""

    interval_s: float = 0.5
    warn_gb: float | None = None
    limit_gb: float | None = None
    job_limit_gb: float | None = None
    store_cap_gb: float | None = None  # hardware.object_store_gb: a node's store use above it warns
    peak_bytes: int = 0  # the job's total (all nodes, same sample)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (s, total GB)
    over_limit: bool = False
    over_bytes: int = 0  # the first sample past a limit: the node's figure, or the job's total
    over_scope: str = "node"  # "node" (hardware.memory_limit_gb) or "job" (job_memory_limit_gb)
    over_node: str | None = None
    stage: str = "start"  # the pipeline stage running now (set by the phase)
    stage_peaks: dict[str, float] = field(default_factory=dict)  # GB, job total per stage
    node_peaks: dict[str, int] = field(default_factory=dict)  # bytes, per node
    node_stage_peaks: dict[str, dict[str, float]] = field(default_factory=dict)  # stage->node->GB
    store_peaks: dict[str, int] = field(default_factory=dict)  # object store bytes, per node
    placement: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # stage->node->items
    cluster: node_memory.ClusterMemory | None = None
    scratch_removed: dict[str, int] = field(default_factory=dict)  # bytes, per node, at the end
    _last: dict[str, node_memory.NodeSample] = field(default_factory=dict, repr=False)
    _probe: node_memory.NodeProbe = field(
        default_factory=lambda: node_memory.NodeProbe(own=(os.getpid(),)), repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _warned: set = field(default_factory=set, repr=False)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    @classmethod
    def for_hardware(cls, hw: HardwareConfig) -> MemorySampler:
        """The sampler of a run with the config's hardware section."""
        return cls(
            hw.sample_interval_s,
            hw.memory_warn_gb,
            hw.memory_limit_gb,
            job_limit_gb=hw.job_memory_limit_gb,
            store_cap_gb=hw.object_store_gb,
        )

    def attach(self) -> None:
        """Measure every node of the Ray cluster this process is connected to from now on (the
        samples taken before, of the driver alone, count as its node's)."""
        with self._lock:
            if self.cluster is not None:
                return
            self.cluster = node_memory.ClusterMemory.connect()
            mine = node_memory.label(self.cluster.driver_node)
            for peaks in (self.node_peaks, self.store_peaks, *self.node_stage_peaks.values()):
                if PRE_ATTACH in peaks:
                    peaks[mine] = max(peaks.pop(PRE_ATTACH), peaks.get(mine, 0))
        self.sample()  # the next safe point already knows every node's level

    def _measure(self) -> dict[str, node_memory.NodeSample]:
        if self.cluster is not None:
            return self.cluster.sample()
        return {PRE_ATTACH: self._probe.sample()}

    def sample(self) -> int:
        """Measure every node once, update the peaks, warn once per node past the warning
        level, flag a limit; returns the job's total bytes."""
        with self._lock:
            nodes = self._measure()
            self._last = nodes
            used = sum(s.memory for s in nodes.values())
            self.peak_bytes = max(self.peak_bytes, used)
            gb = round(used / GB, 3)
            self.stage_peaks[self.stage] = max(self.stage_peaks.get(self.stage, 0.0), gb)
            self.samples.append((round(time.monotonic() - self._t0, 2), gb))
            per_stage = self.node_stage_peaks.setdefault(self.stage, {})
            for name, s in nodes.items():
                self.node_peaks[name] = max(self.node_peaks.get(name, 0), s.memory)
                self.store_peaks[name] = max(self.store_peaks.get(name, 0), s.store_used)
                per_stage[name] = max(per_stage.get(name, 0.0), round(s.memory / GB, 3))
                self._check_node(name, s)
            if self.job_limit_gb and used > self.job_limit_gb * GB and not self.over_limit:
                self.over_bytes, self.over_scope, self.over_node = used, "job", None
                self.over_limit = True
                log.error(
                    "job memory %.2f GB on %d nodes (%s) passed hardware.job_memory_limit_gb "
                    "(%g GB): stopping at the next safe point",
                    used / GB,
                    len(nodes),
                    self.nodes_text(nodes),
                    self.job_limit_gb,
                )
            return used

    def _check_node(self, name: str, s: node_memory.NodeSample) -> None:
        where = f" on node {name}" if self.cluster is not None and not self.cluster.tree else ""
        if self.warn_gb and s.memory > self.warn_gb * GB and ("warn", name) not in self._warned:
            self._warned.add(("warn", name))
            log.warning(
                "memory %.2f GB%s passed hardware.memory_warn_gb (%g GB); the run stops at "
                "hardware.memory_limit_gb (%s GB)",
                s.memory / GB,
                where,
                self.warn_gb,
                f"{self.limit_gb:g}" if self.limit_gb else "none",
            )
        cap = self.store_cap_gb
        if cap and s.store_used > cap * GB and ("store", name) not in self._warned:
            self._warned.add(("store", name))
            log.warning(
                "object store%s holds %.2f GB, above hardware.object_store_gb (%g GB): the "
                "cluster started this node with a larger store (ray start --object-store-memory)",
                where,
                s.store_used / GB,
                cap,
            )
        if self.limit_gb and s.memory > self.limit_gb * GB and not self.over_limit:
            self.over_bytes, self.over_scope, self.over_node = s.memory, "node", name
            self.over_limit = True
            log.error(
                "memory %.2f GB%s passed hardware.memory_limit_gb (%g GB): stopping at the next "
                "safe point",
                s.memory / GB,
                where,
                self.limit_gb,
            )

    @staticmethod
    def nodes_text(nodes: dict[str, node_memory.NodeSample]) -> str:
        return ", ".join(f"{n} {s.memory / GB:.2f} GB" for n, s in sorted(nodes.items()))

    def titles(self) -> list[str]:
        """Titles of the run's processes on every node, from a fresh sample."""
        self.sample()
        return [t for s in self._last.values() for t in s.titles]

    def note(self, stage: str, item: str, node: str | None) -> None:
        """Record that `item` (a ticker, a trial) of `stage` ran on `node`."""
        if node:
            self.placement.setdefault(stage, {}).setdefault(node, []).append(item)

    def placement_text(self, stage: str) -> str:
        """`node a1b2c3d4: AAA, BBB; node e5f6a7b8: CCC` for a stage, "" if none recorded."""
        where = self.placement.get(stage, {})
        return "; ".join(f"node {n}: {', '.join(items)}" for n, items in sorted(where.items()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sampler must outlive a bad sample
                log.exception("memory sampler: a sample failed")

    def check(self, where: str) -> None:
        """Raise `MemoryLimitExceeded` if a limit was crossed (call at safe points; `where`
        names the point, e.g. "the start of stage search")."""
        if not self.over_limit:
            return
        used = round(self.over_bytes / GB, 3)
        if self.over_scope == "job":
            msg = (
                f"job memory {self.over_bytes / GB:.2f} GB (every node: "
                f"{self.nodes_text(self._last)}) passed hardware.job_memory_limit_gb = "
                f"{self.job_limit_gb:g} GB; stopped cleanly at {where}"
            )
        elif self.cluster is not None and not self.cluster.tree:
            msg = (
                f"memory {self.over_bytes / GB:.2f} GB on node {self.over_node} (its Ray "
                f"processes of this job) passed hardware.memory_limit_gb = {self.limit_gb:g} GB "
                f"(per node); stopped cleanly at {where}"
            )
        else:
            msg = (
                f"memory {self.over_bytes / GB:.2f} GB (driver + Ray processes) passed "
                f"hardware.memory_limit_gb = {self.limit_gb:g} GB; stopped cleanly at {where}"
            )
        raise MemoryLimitExceeded(
            msg,
            stage=where,
            cause="memory_limit",
            used_gb=used,
            scope=self.over_scope,
            node=self.over_node,
        )

    def resources(self) -> dict:
        """metrics.json's per-node memory: peak per node, the object store's peak use and
        capacity, where each node is, and which stage and items ran where."""
        infos = {n.info.label: n.info for n in self.cluster.nodes.values()} if self.cluster else {}
        nodes = {}
        for name, peak in sorted(self.node_peaks.items()):
            info = infos.get(name)
            nodes[name] = {
                "peak_gb": round(peak / GB, 3),
                "object_store_peak_gb": round(self.store_peaks.get(name, 0) / GB, 3),
                **(
                    {
                        "ip": info.ip,
                        "head": info.head,
                        "driver": info.node_id == self.cluster.driver_node,
                        "cpus": info.cpus,
                        "object_store_gb": round(info.store_bytes / GB, 3),
                    }
                    if info is not None
                    else {}
                ),
                **(
                    {"scratch_removed_mb": round(self.scratch_removed[name] / MB, 1)}
                    if name in self.scratch_removed
                    else {}
                ),
            }
        return {
            "peak_memory_gb": round(self.peak_gb, 3),  # the job's total, all nodes together
            "peak_node_memory_gb": round(max(self.node_peaks.values(), default=0) / GB, 3),
            "nodes": nodes,
            "measured": "process tree" if self.cluster is None or self.cluster.tree else "per node",
            "stage_node_peak_gb": {k: dict(v) for k, v in self.node_stage_peaks.items()},
            "placement": {k: {n: list(v) for n, v in d.items()} for k, d in self.placement.items()},
        }

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
        if self.cluster is not None:  # the run's scratch on every node goes with the samplers
            try:
                self.scratch_removed = self.cluster.close()
            except Exception:  # noqa: BLE001 - never hide the run's own outcome
                log.exception("removing the run's scratch on the cluster's nodes failed")
            removed = {n: b for n, b in self.scratch_removed.items() if b}
            if removed:
                log.info(
                    "removed the run's node scratch: %s",
                    ", ".join(f"node {n} {b / MB:.1f} MB" for n, b in sorted(removed.items())),
                )

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB

    @property
    def peak_node_gb(self) -> float:
        return max(self.node_peaks.values(), default=0) / GB


_ACTIVE: list[MemorySampler] = []  # samplers running in this process (the phase's, usually one)


def check_memory(where: str) -> None:
    """Raise `MemoryLimitExceeded` if any running sampler saw the limit crossed. A no-op when no
    sampler runs (tests, the plain-loop benchmark), so any loop can call it."""
    for sampler in list(_ACTIVE):
        sampler.check(where)


def memory_exceeded() -> bool:
    return any(s.over_limit for s in _ACTIVE)


def note_node(item: str, node: str | None) -> None:
    """Record, in the running sampler, that `item` (a ticker, a trial) of the stage running now
    ran on `node`, so the stage timings say which node ran what. A no-op when no sampler runs."""
    for sampler in _ACTIVE:
        sampler.note(sampler.stage, item, node)


def ray_data_limits(
    hw: HardwareConfig, cpus: float | None = None, preserve_order: bool = False
) -> ray.data.ExecutionOptions:
    """Ray Data's limits for a stage: `cpus` (default: every CPU Ray has, at most
    hardware.num_cpus per node) and half the object store (at most hardware.object_store_gb per
    node) for blocks in flight, so the stage leaves room for the objects the rest of the run
    holds. Ray Data's limits are cluster-wide: the per-node caps are summed over the nodes."""
    import ray.data  # Ray Data's import costs ~1 s: only for the stages that use it

    nodes = node_memory.cluster_nodes()
    if cpus is None:  # hardware.num_cpus per node, as its object store below
        cpus = max(1.0, sum(min(float(hw.num_cpus), n.cpus) for n in nodes))
    store = (
        sum(min(hw.object_store_gb * GB, n.store_bytes) for n in nodes) or hw.object_store_gb * GB
    )
    return ray.data.ExecutionOptions(
        resource_limits=ray.data.ExecutionResources(cpu=cpus, object_store_memory=int(store / 2)),
        preserve_order=preserve_order,
    )
