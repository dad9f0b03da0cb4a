"""A real single-node Ray cluster on 127.0.0.1, started and stopped without touching anyone else's.

The job tests and bench/bench_jobs.py need what a user has after `ray start --head`: a dashboard
with the jobs API and token auth. Other test sessions may run Ray on the same machine, so this
head never uses Ray's fixed default ports or /tmp/ray, never calls `ray stop` (which kills every
Ray process of the user), and tears down only the processes it started: `ray start --block` runs
in its own session, so every process of this cluster (GCS, raylet, dashboard, workers) carries
that session id and nothing else does. Start-up takes ~5-8 s on the 2-core machine.
"""

from __future__ import annotations

import contextlib
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


@dataclass
class LocalHead:
    """One `ray start --head --block` process and everything it spawned."""

    num_cpus: int = 2
    node_env: dict[str, str] = field(default_factory=dict)
    ray_bin: str = str(Path(sys.executable).parent / "ray")
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    temp_dir: str = ""
    dashboard_port: int = 0
    proc: subprocess.Popen | None = None
    start_seconds: float = 0.0

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
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        self.dashboard_port = ports["dashboard-port"]
        env = self.client_env()
        # The job's entrypoint runs `python ...` through the node's PATH: make it this venv's.
        env["PATH"] = f"{Path(self.ray_bin).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(self.node_env)
        cmd = [
            self.ray_bin, "start", "--head", "--block",
            "--num-cpus", str(self.num_cpus),
            "--node-ip-address", "127.0.0.1",
            "--dashboard-host", "127.0.0.1",
            "--include-dashboard", "true",
            "--disable-usage-stats",
            "--temp-dir", self.temp_dir,
            *(f"--{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        log = open(Path(self.temp_dir) / "ray-start.log", "w")  # noqa: SIM115 - owned by proc
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                tail = (Path(self.temp_dir) / "ray-start.log").read_text()[-3000:]
                self.stop()
                raise RuntimeError(f"ray start --head did not come up:\n{tail}")
            time.sleep(0.5)
        self.start_seconds = time.monotonic() - t0
        return self

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

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM `ray start --block` (it shuts its cluster down), then SIGKILL stragglers."""
        if self.proc is None:
            return
        sid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.25)
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
