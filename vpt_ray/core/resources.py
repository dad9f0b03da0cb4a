"""Ray start-up with the hardware caps, and the memory a task or trial will need.

The config's hardware section describes the reference workstation (8 cores, 32 GB); this module
clamps it to the machine it actually runs on, says so in the log, and caps Ray's object store. On
a cluster (`ray job submit`) the nodes' stores were fixed by `ray start`: each node's is checked
against `hardware.object_store_gb`, reported, and Ray Data's limits keep to the smaller of the
two per node.

The sampler of the run's memory on every node and the stop rule are
`vpt_ray.core.memory_sampler`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from dataclasses import dataclass

import psutil
import ray

from vpt_ray.core import node_memory
from vpt_ray.core.config import HardwareConfig

log = logging.getLogger("vpt_ray.resources")

GB = 1024**3


MB = 1024**2


WORKER_BASELINE_BYTES = 300 * MB  # a Ray worker with numpy, pandas and xgboost imported


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


def memory_limit(hw: HardwareConfig, machine_gb: float | None) -> dict:
    """The memory stop's per-node limit and warning level this run is held to.

    `hardware.memory_limit_gb`, or the machine's memory when that is smaller: a 32 GB limit on a
    23.5 GB machine is never reached (the machine runs out first), so the machine's memory is
    the limit and the warning level is scaled by the same factor (28 of 32 -> 20.6 of 23.5).
    `source` says which ("hardware.memory_limit_gb" or "machine"); `machine_gb` None (a cluster
    the run joined: its nodes' memory is not this machine's) keeps the config's values."""
    limit, warn = hw.memory_limit_gb, hw.memory_warn_gb
    out = {"limit_gb": limit, "warn_gb": warn, "source": "hardware.memory_limit_gb",
           "config_limit_gb": limit, "config_warn_gb": warn, "machine_gb": machine_gb}  # fmt: skip
    if machine_gb is not None and machine_gb < limit:
        scale = machine_gb / limit
        out.update(limit_gb=round(machine_gb, 2), warn_gb=round(warn * scale, 2), source="machine")
    return out


def limit_text(lim: dict) -> str:
    """`23.5 GB (this machine's memory; hardware.memory_limit_gb 32 GB is above it)` or
    `32 GB (hardware.memory_limit_gb)`: a limit and where it comes from."""
    if lim.get("source") == "machine":
        return (
            f"{lim['limit_gb']:g} GB (this machine's memory; hardware.memory_limit_gb "
            f"{lim['config_limit_gb']:g} GB is above it)"
        )
    return f"{lim['limit_gb']:g} GB (hardware.memory_limit_gb)"


def init_ray(hw: HardwareConfig) -> dict:
    """Start (or join) Ray once per process; returns what Ray was given, for the report."""
    address = hw.ray_address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        res = ray.cluster_resources()
        log.info("Ray already running in this process: %s CPUs", res.get("CPU"))
        return {
            "mode": "existing",
            "num_cpus": res.get("CPU", 0),
            "nodes": node_stores(hw),
            "memory_limit": _log_limit(memory_limit(hw, machine_memory_gb())),
        }
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
            "memory_limit": _log_limit(memory_limit(hw, None)),  # per node, as configured
        }
    caps = clamp(hw)
    if caps.clamped:  # expected on any machine smaller than the reference: one line, not a warning
        log.info("hardware clamped to this machine: %s", "; ".join(caps.clamped))
    ctx = _start_local(caps, _dashboard_available())
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
        "memory_limit": _log_limit(memory_limit(hw, machine_memory_gb())),
    }


def machine_memory_gb() -> float:
    """This machine's memory, GB, to the 0.1 GB `clamp`'s line shows."""
    return round(psutil.virtual_memory().total / GB, 1)


def _log_limit(lim: dict) -> dict:
    log.info(
        "memory limit %s, warning at %s GB; the decision and the report use it",
        limit_text(lim),
        f"{lim['warn_gb']:g}" if lim.get("warn_gb") else "none",
    )
    return lim


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


def _start_local(caps: RayCaps, dashboard: bool) -> object:
    """`ray.init` a local node with the caps. The dashboard is for watching, not for the run: if
    it fails to start (its start-up times out on a loaded machine: seen at load average 60 here),
    the run goes on without it and says so, instead of failing before its first stage."""
    kwargs = dict(
        num_cpus=caps.num_cpus,
        object_store_memory=int(caps.object_store_gb * GB),
        dashboard_host="127.0.0.1",
        configure_logging=False,
        log_to_driver=True,
    )
    try:
        return ray.init(include_dashboard=dashboard, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception with the dashboard's log
        if not dashboard:
            raise
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        log.warning(
            "the Ray dashboard did not start (%s): running without it (resources are still "
            "sampled and reported)",
            first[:200],
        )
        ray.shutdown()
        return ray.init(include_dashboard=False, **kwargs)


def _dashboard_available() -> bool:
    if os.environ.get("VPT_RAY_NO_DASHBOARD"):
        return False
    try:
        import ray.dashboard  # noqa: F401
    except ImportError:
        return False
    return True


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
