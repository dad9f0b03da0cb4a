"""The run's memory node by node: what a node's figure counts, and how the stop reads the nodes.

No cluster here (tests/test_jobs.py runs a real two-node one): a node's processes are real
processes of this machine, named by a fake session dir in their command line, with the raylet's
answer (which worker belongs to which job) given by hand; the sampler's stop rule runs on
hand-made node samples.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from vpt_ray.core import node_memory
from vpt_ray.core.memory_sampler import MemoryLimitExceeded, MemorySampler
from vpt_ray.core.node_memory import NodeProbe, NodeSample, PssCache, read_pss
from vpt_ray.core.resources import GB
from vpt_ray.report.html.resources import nodes_table
from vpt_ray.report.run_report import node_memory_line
from vpt_ray.report.tracker import memory_note

HOLD = "import sys, time; x = bytearray(int(sys.argv[2]) * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(60)"  # noqa: E501


def spawn(tag: str, mb: int) -> subprocess.Popen:
    """A process holding `mb` MB of touched memory, `tag` in its command line."""
    return subprocess.Popen([sys.executable, "-c", HOLD, tag, str(mb)])


def test_a_node_counts_its_ray_processes_and_this_jobs_workers_only(tmp_path, monkeypatch):
    session = str(tmp_path / "session_fake")
    system = spawn(session, 40)  # a "raylet": its command line names the node's session dir
    mine = spawn("worker-mine", 60)
    other = spawn("worker-other", 80)
    procs = (system, mine, other)
    try:
        time.sleep(1.5)  # the children allocate
        # Ray's workers are the raylet's children: give the fake raylet these two "children".
        kids = node_memory._children_map()
        kids.setdefault(system.pid, []).extend([mine.pid, other.pid])
        monkeypatch.setattr(node_memory, "_children_map", lambda: kids)
        jobs = {mine.pid: "02000000", other.pid: "03000000"}
        monkeypatch.setattr(node_memory, "raylet_stats", lambda raylet: (jobs, 10 * 2**20))
        probe = NodeProbe("02000000", (), session, ("127.0.0.1", 1))
        s = probe.sample()
        pss = {p.pid: read_pss(p.pid)[0] for p in procs}
        assert s.processes == 2  # the system process and this job's worker, not the other job's
        assert s.memory == pytest.approx(pss[system.pid] + pss[mine.pid] + 10 * 2**20, rel=0.05)
        assert s.store_used == 10 * 2**20  # no counted process maps it: added in full
        # The same worker of no job yet (Ray's idle pool) counts as the node's.
        jobs[other.pid] = node_memory.NIL_JOB
        assert probe.sample().processes == 3
        # `own` (the driver) is counted with its children whatever their job.
        jobs[other.pid] = "03000000"
        driver = NodeProbe("02000000", (other.pid,), session, ("127.0.0.1", 1))
        assert driver.sample().processes == 3
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_pss_is_read_again_only_when_the_resident_size_moves(monkeypatch):
    proc = spawn("pss-cache", 20)
    try:
        time.sleep(1.0)
        cache, reads, real = PssCache(max_age_s=1000), [], node_memory.read_pss
        monkeypatch.setattr(node_memory, "read_pss", lambda pid: reads.append(pid) or real(pid))
        first = cache.get(proc.pid, 0.0)
        assert first[0] > 20 * 2**20
        assert cache.get(proc.pid, 1.0) == first and len(reads) == 1  # RSS unchanged
        assert cache.get(proc.pid, 2000.0) and len(reads) == 2  # too old: read again
        monkeypatch.setattr(node_memory, "read_rss", lambda pid: 10 * 2**30)  # it grew
        assert cache.get(proc.pid, 2001.0) and len(reads) == 3
    finally:
        proc.kill()
        proc.wait()


@dataclass
class FakeCluster:
    """Stands in for `ClusterMemory`: hand-made samples per node."""

    now: dict[str, NodeSample]
    tree: bool = False
    driver_node: str = "aaaaaaaa" + "0" * 48
    nodes: dict = field(default_factory=dict)

    def sample(self) -> dict[str, NodeSample]:
        return dict(self.now)

    def close(self) -> dict[str, int]:
        return {"bbbbbbbb": 5 * 2**20}


def gb(x: float) -> NodeSample:
    return NodeSample(memory=int(x * GB), store_used=int(0.1 * GB))


def test_any_node_past_its_limit_stops_and_is_named(caplog):
    caplog.set_level(logging.WARNING, logger="vpt_ray.resources")
    s = MemorySampler(warn_gb=1.0, limit_gb=2.0, store_cap_gb=0.05)
    s.cluster = FakeCluster({"aaaaaaaa": gb(0.5), "bbbbbbbb": gb(1.5)})
    s.sample()
    s.sample()
    s.check("a safe point")  # 2.0 GB in total, no node past 2.0: no stop
    warns = [r.getMessage() for r in caplog.records]
    assert sum("memory_warn_gb" in w and "node bbbbbbbb" in w for w in warns) == 1  # once
    assert sum("object_store_gb" in w for w in warns) == 2  # once per node: 0.1 GB > 0.05
    s.cluster.now["bbbbbbbb"] = gb(2.5)
    s.sample()
    with pytest.raises(MemoryLimitExceeded, match=r"on node bbbbbbbb .*\(per node\)") as err:
        s.check("the start of stage search")
    assert err.value.scope == "node" and err.value.node == "bbbbbbbb"
    assert err.value.used_gb == pytest.approx(2.5, abs=0.01)
    res = s.resources()
    assert res["peak_memory_gb"] == pytest.approx(3.0, abs=0.01)  # the total, same sample
    assert res["peak_node_memory_gb"] == pytest.approx(2.5, abs=0.01)
    assert res["nodes"]["bbbbbbbb"]["object_store_peak_gb"] == pytest.approx(0.1, abs=0.001)


def test_the_jobs_total_past_its_limit_stops_with_every_nodes_figure():
    s = MemorySampler(limit_gb=2.0, job_limit_gb=2.5)
    s.cluster = FakeCluster({"aaaaaaaa": gb(1.4), "bbbbbbbb": gb(1.4)})
    s.sample()
    with pytest.raises(MemoryLimitExceeded, match="job_memory_limit_gb = 2.5 GB") as err:
        s.check("the features fan-out")
    assert err.value.scope == "job" and err.value.node is None
    assert "aaaaaaaa 1.40 GB, bbbbbbbb 1.40 GB" in str(err.value)
    s.__exit__()  # the samplers' exit removes the nodes' scratch and says how much
    assert s.scratch_removed == {"bbbbbbbb": 5 * 2**20}


def test_samples_before_ray_runs_count_as_the_driver_nodes(monkeypatch):
    s = MemorySampler()
    s.sample()  # no Ray yet: the driver alone
    before = s.node_peaks["driver"]
    fake = FakeCluster({"aaaaaaaa": gb(0.1)})
    monkeypatch.setattr(node_memory.ClusterMemory, "connect", classmethod(lambda cls: fake))
    s.attach()
    assert "driver" not in s.node_peaks and s.node_peaks["aaaaaaaa"] == max(before, 0.1 * GB)


def test_reports_give_every_nodes_peak():
    res = {
        "measured": "per node",
        "peak_memory_gb": 1.9,
        "nodes": {
            "aaaaaaaa": {"peak_gb": 1.1, "driver": True, "object_store_peak_gb": 0.2},
            "bbbbbbbb": {"peak_gb": 0.9, "object_store_gb": 0.5},
        },
        "placement": {"backtest": {"bbbbbbbb": ["AAA", "BBB"]}},
    }
    line = node_memory_line(res)
    assert line.startswith("- Peak memory per node (2 nodes; all together 1.90 GB)")
    assert "aaaaaaaa (driver) 1.10 GB (object store 0.20 GB); bbbbbbbb 0.90 GB" in line
    assert memory_note(res) == "peak memory 1.90 GB on 2 nodes (aaaaaaaa 1.10, bbbbbbbb 0.90)"
    table = nodes_table(res)
    assert "bbbbbbbb" in table and "backtest: 2" in table
    local = {"measured": "process tree", "peak_memory_gb": 1.8, "nodes": {"x": {"peak_gb": 1.8}}}
    assert node_memory_line(local) is None and nodes_table(local) == ""
    assert memory_note(local) == "peak memory 1.80 GB"
