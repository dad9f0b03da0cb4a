"""A real Ray cluster on 127.0.0.1 (a head, optionally more nodes), started and stopped without
touching anyone else's.

The job tests and bench/bench_jobs.py need what a user has after `ray start --head`: a dashboard
with the jobs API and token auth. Other test sessions may run Ray on the same machine, so this
head never uses Ray's fixed default ports or /tmp/ray, never calls `ray stop` (which kills every
Ray process of the user), and tears down only the processes it started: each `ray start --block`
runs in its own session, so every process of that node (GCS, raylet, dashboard, workers) carries
that session id and nothing else does. Start-up takes ~5-8 s on the 2-core machine.

`LocalHead.add_node` joins a second node to the head (`ray start --address ... --block`), with
its own ports, `--temp-dir` and session: a multi-node cluster on one machine, as the memory
governance test needs (tasks forced onto the worker node by giving the head no CPUs).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Every port `ray start --head` would otherwise take from a fixed default (6379, 8265, 10001,
# 52365, ...) or pick itself; fixed defaults would collide with another session's cluster.
PORT_FLAGS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
)
HEAD_ONLY_PORTS = ("port", "dashboard-port", "ray-client-server-port")
# Variables of the caller that would point the head or the CLI at some other cluster.
FOREIGN_RAY_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def session_pids(sid: int) -> list[int]:
    """Pids of the live processes whose session id is `sid` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid pgrp session ...; zombies are already dead
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _start_blocking(cmd: list[str], env: dict[str, str], temp_dir: str) -> subprocess.Popen:
    """`ray start ... --block` in its own session, its output in `temp_dir`/ray-start.log."""
    log = open(Path(temp_dir) / "ray-start.log", "w")  # noqa: SIM115 - owned by the process
    try:
        return subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()


def _stop_session(proc: subprocess.Popen | None, temp_dir: str, grace_s: float) -> None:
    """SIGTERM a `ray start --block` (it shuts its node down), then SIGKILL the stragglers of
    its session; remove its temp dir. An idle node is down in ~2 s; one that ran jobs keeps a
    few processes past SIGTERM, which the callers' 5 s grace ends (20 s held every teardown)."""
    if proc is None:
        return
    sid = proc.pid
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.25)
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class LocalNode:
    """A worker node joined to a `LocalHead`: its own `ray start --address ... --block` session,
    ports and `--temp-dir` (where Ray, and the run's node scratch, keep its files)."""

    num_cpus: int
    resources: dict[str, float]  # includes `tag`: 1, which tells this node apart
    temp_dir: str
    tag: str
    node_id: str = ""  # Ray's id of the node, once it joined
    proc: subprocess.Popen | None = None

    def log_text(self) -> str:
        return (Path(self.temp_dir) / "ray-start.log").read_text()

    def stop(self, grace_s: float = 5.0) -> None:
        _stop_session(self.proc, self.temp_dir, grace_s)
        self.proc = None


@dataclass
class LocalHead:
    """One `ray start --head --block` process and everything it spawned."""

    num_cpus: int = 2
    node_env: dict[str, str] = field(default_factory=dict)
    ray_bin: str = str(Path(sys.executable).parent / "ray")
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    temp_dir: str = ""
    dashboard_port: int = 0
    object_store_mb: int | None = None  # --object-store-memory of every node (None: Ray's default)
    proc: subprocess.Popen | None = None
    start_seconds: float = 0.0
    gcs_port: int = 0
    nodes: list[LocalNode] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)  # port flags to set, e.g. one taken

    @property
    def address(self) -> str:
        """The jobs API / dashboard URL, what `ray job submit --address` takes."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for the Ray CLI talking to this head (token auth, no foreign cluster)."""
        env = {k: v for k, v in (base or os.environ).items() if k not in FOREIGN_RAY_VARS}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        return env

    def start(self, timeout_s: float = 120.0) -> LocalHead:
        # Short path: Ray's unix sockets live under it and must stay below ~107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="vptray-", dir="/tmp")
        ports = {**dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True)), **self.ports}
        self.dashboard_port, self.gcs_port = ports["dashboard-port"], ports["port"]
        env = self._node_env()
        cmd = [
            self.ray_bin, "start", "--head", "--block",
            "--num-cpus", str(self.num_cpus),
            "--node-ip-address", "127.0.0.1",
            "--dashboard-host", "127.0.0.1",
            "--include-dashboard", "true",
            "--disable-usage-stats",
            "--temp-dir", self.temp_dir,
            *self._store_flags(),
            *(f"--{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        t0 = time.monotonic()
        self.proc = _start_blocking(cmd, env, self.temp_dir)
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                tail = (Path(self.temp_dir) / "ray-start.log").read_text()[-3000:]
                self.stop()
                raise RuntimeError(f"ray start --head did not come up:\n{tail}")
            time.sleep(0.5)
        self.start_seconds = time.monotonic() - t0
        return self

    def _node_env(self) -> dict[str, str]:
        env = self.client_env()
        # The job's entrypoint runs `python ...` through the node's PATH: make it this venv's.
        env["PATH"] = f"{Path(self.ray_bin).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(self.node_env)
        return env

    def _store_flags(self) -> list[str]:
        if self.object_store_mb is None:
            return []
        return ["--object-store-memory", str(self.object_store_mb * 1024**2)]

    def add_node(
        self, num_cpus: int, resources: dict[str, float] | None = None, timeout_s: float = 180.0
    ) -> LocalNode:
        """Join one more node to this head (same token, node env and store size) and wait until
        the cluster lists it alive. It carries a custom resource `node.tag` of its own, so it is
        recognised in the cluster's node list (and work can be pinned to it)."""
        tag = f"vpt_node_{secrets.token_hex(4)}"
        node = LocalNode(
            num_cpus,
            {**(resources or {}), tag: 1},
            tempfile.mkdtemp(prefix="vptn-", dir="/tmp"),
            tag,
        )
        # Its own ports: the head's would collide (the GCS port is the head's, to join it).
        flags = [f for f in PORT_FLAGS if f not in HEAD_ONLY_PORTS]
        ports = dict(zip(flags, free_ports(len(flags)), strict=True))
        cmd = [
            self.ray_bin, "start", "--block",
            "--address", f"127.0.0.1:{self.gcs_port}",
            "--num-cpus", str(num_cpus),
            "--node-ip-address", "127.0.0.1",
            "--disable-usage-stats",
            "--temp-dir", node.temp_dir,
            "--resources", json.dumps(node.resources),
            *self._store_flags(),
            *(f"--{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        node.proc = _start_blocking(cmd, self._node_env(), node.temp_dir)
        self.nodes.append(node)
        t0 = time.monotonic()
        while not node.node_id:
            if node.proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                tail = node.log_text()[-3000:]
                raise RuntimeError(f"ray start --address did not join the head:\n{tail}")
            time.sleep(0.5)
            for row in self.alive_nodes():
                if tag in (row.get("resources_total") or {}):
                    node.node_id = row["node_id"]
        return node

    def alive_nodes(self) -> list[dict]:
        """The cluster's alive nodes, from the state API of the head's dashboard."""
        req = urllib.request.Request(
            f"{self.address}/api/v0/nodes?limit=1000",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                rows = json.loads(resp.read())["data"]["result"]["result"]
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return []
        return [r for r in rows if r.get("state") == "ALIVE"]

    def _ready(self) -> bool:
        """The jobs API answers an authenticated request (a 401 means: up, but token refused)."""
        req = urllib.request.Request(
            f"{self.address}/api/jobs/", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the added nodes, then the head: SIGTERM each `ray start --block` (it shuts its
        node down), then SIGKILL the stragglers of its session."""
        for node in reversed(self.nodes):
            node.stop(grace_s)
        self.nodes.clear()
        _stop_session(self.proc, self.temp_dir, grace_s)
        self.proc = None

    def __enter__(self) -> LocalHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
