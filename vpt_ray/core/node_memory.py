"""The memory a run uses on every node of its Ray cluster, node by node: what the memory stop sums.

What is counted on a node (`NodeProbe`): the proportional set size (PSS) of the node's Ray
processes that serve this run (its system processes: the raylet, which holds the object store,
its agents and, on the head, the GCS and the dashboard; this job's workers: tasks, actors, Tune
trials; idle workers of no job yet; on the driver's node, the driver and its children), plus the
object store's bytes that no counted process maps (an object whose writer has exited). Workers of
other jobs (another user's driver, the job supervisor of `ray job submit`) are left out. PSS
splits shared pages between the processes that map them, so a page is counted once.

Where it is measured: a run that started its own Ray (`python -m vpt_ray.phase N`, one node)
sums the driver and every process under it, as before clusters were handled; the raylet's stats
add the unmapped object-store bytes. A run on a cluster (`ray job submit`, or
`hardware.ray_address`) measures the driver's node in the driver, and every other node through
one light sampler actor pinned to it (`NodeAffinitySchedulingStrategy`, 0 CPUs, ~60 MB: the
memory of a Ray worker that imports psutil only), asked for a sample at each tick. New nodes
(autoscaling) get their sampler at the next node-list refresh; a node that dies keeps its peak.

Cost per sample and node: one pass over /proc (parent ids, as `psutil.Process.children` does),
one smaps_rollup read per counted process whose resident size moved (`PssCache`: the costly
read, a page-table walk; idle system processes are read every 10 s), one `GetNodeStats` call to
the node's raylet (2-5 ms here; it names each worker's job and gives the object store's use).

The run's scratch on a node (`node_scratch`: the sample file rebuilt where the driver's disk is
not visible, the distributed fit's spill) lives under the node's Ray temp dir, one directory per
Ray session and job; the samplers remove it when the run ends, whether it finished or failed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import ray

log = logging.getLogger("vpt_ray.node_memory")
NIL_JOB = "ffffffff"  # a worker not leased to any job yet (Ray's pool)
NODE_REFRESH_S = 10.0  # how often the node list is re-read (new nodes get a sampler)
ROOTS_REFRESH_S = 10.0  # how often a node's system processes are looked up again
ANSWER_TIMEOUT_S = 5.0  # a remote node's sampler that takes longer keeps its previous sample
FIRST_ANSWER_TIMEOUT_S = 60.0  # a new sampler actor's start-up (a Ray worker) on a busy node


def label(node_id: str) -> str:
    """A node's short name in logs, reports and the tracker: the first 8 hex digits of its id."""
    return node_id[:8]


def node_label() -> str:
    """This process's node (`label`), for progress lines and placement records; "local" when
    Ray is not running."""
    if not ray.is_initialized():
        return "local"
    return label(ray.get_runtime_context().get_node_id())


def node_scratch() -> Path:
    """This run's scratch directory on this node: under the node's Ray temp dir, one per Ray
    session and job, so the run's clean-up (`remove_node_scratch`) finds it on every node and
    never touches another run's. Not created here."""
    rc = ray.get_runtime_context()
    return Path(rc.get_temp_dir()) / "vpt-scratch" / f"{rc.get_session_name()}-{rc.get_job_id()}"


def remove_node_scratch() -> int:
    """Delete this run's scratch on this node; returns the bytes it held."""
    root = node_scratch()
    if not root.exists():
        return 0
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    shutil.rmtree(root, ignore_errors=True)
    with contextlib.suppress(OSError):  # the last run's scratch on this node: leave no trace
        root.parent.rmdir()
    return size


@dataclass(frozen=True)
class NodeInfo:
    """One node of the cluster as Ray lists it (`ray.nodes()`)."""

    node_id: str
    ip: str
    raylet: tuple[str, int]  # node manager address and port
    session_dir: str  # the node's Ray session dir: every Ray process of the node names it
    cpus: float
    memory_bytes: int
    store_bytes: int  # the object store's capacity on this node
    head: bool

    @property
    def label(self) -> str:
        return label(self.node_id)

    @classmethod
    def from_ray(cls, n: dict) -> NodeInfo:
        res = n.get("Resources", {})
        return cls(
            node_id=n["NodeID"],
            ip=n.get("NodeManagerAddress", ""),
            raylet=(n.get("NodeManagerAddress", ""), int(n.get("NodeManagerPort", 0))),
            session_dir=str(Path(n.get("RayletSocketName", "")).parent.parent),
            cpus=float(res.get("CPU", 0.0)),
            memory_bytes=int(res.get("memory", 0)),
            store_bytes=int(res.get("object_store_memory", 0)),
            head="node:__internal_head__" in res,
        )


def cluster_nodes() -> list[NodeInfo]:
    """The alive nodes of the cluster this process is connected to."""
    return [NodeInfo.from_ray(n) for n in ray.nodes() if n.get("Alive")]


@dataclass
class NodeSample:
    """One measurement of one node."""

    memory: int = 0  # bytes: PSS of the counted processes + unmapped object-store bytes
    store_used: int = 0  # bytes in the node's object store
    processes: int = 0  # processes counted
    titles: tuple[str, ...] = ()  # the counted processes' titles (Ray titles a worker by its actor)
    error: str | None = None


@functools.cache
def _raylet_stub(address: str, port: int):  # noqa: ANN202 - a gRPC stub
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import node_manager_pb2_grpc

    channel = init_grpc_channel(f"{address}:{port}")
    return node_manager_pb2_grpc.NodeManagerServiceStub(channel)


def raylet_stats(raylet: tuple[str, int]) -> tuple[dict[int, str], int]:
    """(pid -> job id in hex, for every worker and driver the raylet knows; object-store bytes
    in use) from the node's raylet (`GetNodeStats`, what `ray memory` and the dashboard read)."""
    from ray.core.generated import node_manager_pb2

    reply = _raylet_stub(*raylet).GetNodeStats(
        node_manager_pb2.GetNodeStatsRequest(include_memory_info=False), timeout=10.0
    )
    jobs = {int(w.pid): w.job_id.hex() for w in reply.core_workers_stats if w.pid}
    return jobs, int(reply.store_stats.object_store_bytes_used)


def read_pss(pid: int) -> tuple[int, int]:
    """(PSS, PSS of shared memory) of a process in bytes, from /proc/PID/smaps_rollup; RSS and 0
    where that is not readable (another user's process, not Linux)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(pid).memory_info().rss, 0
        return 0, 0
    pss = shmem = 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1]) * 1024
        elif line.startswith("Pss_Shmem:"):
            shmem = int(line.split()[1]) * 1024
    return pss, shmem


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in psutil.process_iter(["ppid"]):
        kids.setdefault(p.info["ppid"] or 0, []).append(p.pid)
    return kids


def _title(pid: int) -> str:
    """A process's title (argv[0], which Ray's workers set to their actor or task); ""."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_rss(pid: int) -> int:
    """Resident bytes of a process from /proc/PID/statm: cheap (no page-table walk)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return -1


@dataclass
class PssCache:
    """PSS per process, read again only when its RSS moved by more than `rel` (or `abs_bytes`)
    since the last read, or after `max_age_s`. Reading smaps_rollup walks the process's page
    tables (5-10 ms for a Ray worker on a loaded 2-core machine); a node's idle system processes
    (GCS, dashboard, agents) are then read once every `max_age_s` instead of every sample."""

    rel: float = 0.02
    abs_bytes: int = 4 * 1024**2
    max_age_s: float = 10.0
    _held: dict[int, tuple[int, int, int, float]] = field(default_factory=dict)

    def get(self, pid: int, now: float) -> tuple[int, int]:
        rss = read_rss(pid)
        held = self._held.get(pid)
        if held is not None and rss >= 0:
            old_rss, pss, shmem, at = held
            moved = abs(rss - old_rss)
            if moved <= max(self.abs_bytes, self.rel * old_rss) and now - at < self.max_age_s:
                return pss, shmem
        pss, shmem = read_pss(pid)
        self._held[pid] = (rss, pss, shmem, now)
        return pss, shmem

    def forget_except(self, pids: set[int]) -> None:
        for pid in set(self._held) - pids:
            del self._held[pid]


@dataclass
class NodeProbe:
    """Measures one node from a process on that node's machine.

    `own`: pids counted with all their descendants whatever their job (the driver). `session_dir`:
    the node's Ray processes are found by it and counted with their descendants, except workers
    of other jobs (and what runs under them). `raylet`: where the object store's use and the
    workers' jobs come from (None: before Ray runs)."""

    job_id: str | None = None
    own: tuple[int, ...] = ()
    session_dir: str | None = None
    raylet: tuple[str, int] | None = None
    _roots: list[int] = field(default_factory=list, repr=False)
    _roots_at: float = field(default=-1e9, repr=False)
    _stats_failed: bool = field(default=False, repr=False)
    _pss: PssCache = field(default_factory=PssCache, repr=False)

    def _system_roots(self) -> list[int]:
        """The processes whose command line names this node's session dir (GCS, raylet,
        dashboard, monitors), looked up again every ROOTS_REFRESH_S or when one has gone."""
        now = time.monotonic()
        if now - self._roots_at > ROOTS_REFRESH_S or not all(map(psutil.pid_exists, self._roots)):
            roots = []
            for p in psutil.process_iter(["cmdline"]):
                cmd = p.info["cmdline"] or []
                if any(self.session_dir in c for c in cmd):
                    roots.append(p.pid)
            self._roots, self._roots_at = roots, now
        return self._roots

    def sample(self) -> NodeSample:
        jobs, store_used, error = {}, 0, None
        if self.raylet is not None:
            try:
                jobs, store_used = raylet_stats(self.raylet)
            except Exception as e:  # noqa: BLE001 - a private API: degrade, say so once
                error = f"raylet stats unavailable ({type(e).__name__}: {e})"
                if not self._stats_failed:
                    log.warning("%s: object store use not counted, other jobs not excluded", error)
                self._stats_failed = True
        kids = _children_map()
        counted: set[int] = set()
        stack = list(self.own)
        while stack:  # the driver and everything under it
            pid = stack.pop()
            if pid not in counted:
                counted.add(pid)
                stack += kids.get(pid, [])
        if self.session_dir:  # the node's Ray processes, without other jobs' workers
            stack = list(self._system_roots())
            while stack:
                pid = stack.pop()
                if pid in counted or jobs.get(pid, self.job_id) not in (self.job_id, NIL_JOB):
                    continue
                counted.add(pid)
                stack += kids.get(pid, [])
        pss = shmem = 0
        titles = []
        now = time.monotonic()
        for pid in counted:
            p, s = self._pss.get(pid, now)
            pss, shmem = pss + p, shmem + s
            if p:
                titles.append(_title(pid))
        self._pss.forget_except(counted)
        memory = pss + max(0, store_used - shmem)
        return NodeSample(memory, store_used, len(counted), tuple(titles), error)


class VptNodeMemory:
    """The sampler of one remote node: a Ray actor pinned to it (see `ClusterMemory`)."""

    def __init__(self, info: NodeInfo, job_id: str):
        self.probe = NodeProbe(job_id, (), info.session_dir, info.raylet)

    def sample(self) -> NodeSample:
        return self.probe.sample()

    def clean(self) -> int:
        return remove_node_scratch()


@dataclass
class _Node:
    info: NodeInfo
    probe: NodeProbe | None = None  # the driver's node: measured in this process
    actor: object | None = None  # any other node: its sampler actor
    last: NodeSample | None = None  # None until its first answer
    gone: bool = False


class ClusterMemory:
    """The run's memory on every node, sampled from the driver (see the module docstring).

    `tree=True` (Ray started by this process, one node): the driver's process tree is the whole
    of Ray; otherwise each node is measured on its own machine."""

    def __init__(self, tree: bool):
        self.tree = tree
        self.job_id = ray.get_runtime_context().get_job_id()
        self.driver_node = ray.get_runtime_context().get_node_id()
        self.nodes: dict[str, _Node] = {}
        self._listed_at = -1e9
        self.refresh()
        self.sample(timeout_s=FIRST_ANSWER_TIMEOUT_S)  # the samplers' start-up, waited once

    @classmethod
    def connect(cls) -> ClusterMemory:
        """The measurement that fits how this process runs Ray: the process tree when the only
        node's raylet runs under this process, else node by node."""
        nodes = cluster_nodes()
        mine = {p.pid for p in psutil.Process().children(recursive=True)}
        tree = len(nodes) == 1 and any(
            any(nodes[0].session_dir in c for c in _cmdline(pid)) for pid in mine
        )
        return cls(tree)

    def refresh(self) -> None:
        """Read the node list (at most every NODE_REFRESH_S): a new node gets its sampler."""
        now = time.monotonic()
        if now - self._listed_at < NODE_REFRESH_S:
            return
        self._listed_at = now
        for info in cluster_nodes():
            if info.node_id in self.nodes and not self.nodes[info.node_id].gone:
                continue
            if info.node_id == self.driver_node:
                if self.tree:
                    probe = NodeProbe(self.job_id, (os.getpid(),), None, info.raylet)
                else:
                    probe = NodeProbe(self.job_id, (os.getpid(),), info.session_dir, info.raylet)
                self.nodes[info.node_id] = _Node(info, probe=probe)
            elif not self.tree:
                self.nodes[info.node_id] = _Node(info, actor=self._start_sampler(info))

    def _start_sampler(self, info: NodeInfo) -> object:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_cls = ray.remote(num_cpus=0, max_restarts=0)(VptNodeMemory)
        return actor_cls.options(  # named for the dashboard; unique, as a rerun may overlap
            name=f"vpt-memory:{info.label}:{uuid.uuid4().hex[:6]}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(info.node_id, soft=False),
        ).remote(info, self.job_id)

    def sample(self, timeout_s: float = ANSWER_TIMEOUT_S) -> dict[str, NodeSample]:
        """One sample of every node (a remote node that does not answer within `timeout_s`
        keeps its previous sample; a dead one keeps its last; one that never answered is not
        listed)."""
        self.refresh()
        pending = {}
        for nid, node in self.nodes.items():
            if node.actor is not None and not node.gone:
                pending[node.actor.sample.remote()] = nid
        for node in self.nodes.values():
            if node.probe is not None:
                node.last = node.probe.sample()
        if pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
            for ref in ready:
                node = self.nodes[pending[ref]]
                try:
                    node.last = ray.get(ref)
                except ray.exceptions.RayError as e:
                    node.gone = True
                    log.warning(
                        "node %s (%s): its memory sampler is gone (%s); its peak so far is kept",
                        node.info.label,
                        node.info.ip,
                        type(e).__name__,
                    )
        return {n.info.label: n.last for n in self.nodes.values() if n.last is not None}

    def close(self, clean: bool = True) -> dict[str, int]:
        """Remove the run's scratch on every node (`remove_node_scratch`) and end the samplers;
        returns the bytes removed per node."""
        removed: dict[str, int] = {}
        if clean:
            with contextlib.suppress(Exception):
                removed[label(self.driver_node)] = remove_node_scratch()
            refs = {
                n.actor.clean.remote(): n.info.label
                for n in self.nodes.values()
                if n.actor is not None and not n.gone
            }
            if refs:
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=30)
                for ref in ready:
                    try:
                        removed[refs[ref]] = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        log.warning("node %s: scratch not removed (%s)", refs[ref], e)
                for ref in set(refs) - set(ready):
                    log.warning("node %s: scratch clean-up did not answer in 30 s", refs[ref])
        for n in self.nodes.values():
            if n.actor is not None:
                with contextlib.suppress(Exception):
                    ray.kill(n.actor)
        return removed


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []
