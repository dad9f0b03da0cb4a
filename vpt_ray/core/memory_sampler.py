"""The sampler of the run's memory on every node and the stop rule.

The sampler measures the run's memory on every node (`vpt_ray.core.node_memory`: PSS, so shared
object-store pages are not counted once per worker); `wait_for_exit` uses the processes it sees.

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

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import psutil
import ray

from vpt_ray.core import node_memory
from vpt_ray.core.config import HardwareConfig
from vpt_ray.core.resources import GB, MB

log = logging.getLogger("vpt_ray.resources")


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
    limit_name: str = "hardware.memory_limit_gb"  # or "this machine's memory" (`hold_to`)
    warn_name: str = "hardware.memory_warn_gb"
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

    def hold_to(self, limit: dict) -> None:
        """From now on, stop at the run's effective per-node limit and warn at its level
        (`resources.memory_limit`: the config's, or the machine's memory when smaller)."""
        self.limit_gb, self.warn_gb = limit["limit_gb"], limit.get("warn_gb")
        if limit.get("source") == "machine":
            self.limit_name = "this machine's memory (below hardware.memory_limit_gb)"
            self.warn_name = "hardware.memory_warn_gb scaled to this machine's memory"

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
                "memory %.2f GB%s passed the warning level %g GB (%s); the run stops at %s GB (%s)",
                s.memory / GB,
                where,
                self.warn_gb,
                self.warn_name,
                f"{self.limit_gb:g}" if self.limit_gb else "none",
                self.limit_name,
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
                "memory %.2f GB%s passed the limit %g GB (%s): stopping at the next safe point",
                s.memory / GB,
                where,
                self.limit_gb,
                self.limit_name,
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
                f"processes of this job) passed {self.limit_name} = {self.limit_gb:g} GB "
                f"(per node); stopped cleanly at {where}"
            )
        else:
            msg = (
                f"memory {self.over_bytes / GB:.2f} GB (driver + Ray processes) passed "
                f"{self.limit_name} = {self.limit_gb:g} GB; stopped cleanly at {where}"
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
