"""A phase submitted as a Ray job runs on the cluster it is sent to, is governed on every node,
and leaks no secret.

These start a real two-node cluster on 127.0.0.1 (`ray start --head` with token auth and no CPUs,
plus a second `ray start --address ...` node with its own temp dir and the 2 CPUs, so every task,
Tune trial and Ray Data block is forced onto it while the driver runs on the head; see
tests/ray_head.py) and submit through `jobs/submit.sh`, exactly as a user does against a cloud
cluster through `ray dashboard cluster.yaml`. Marked `cluster` (deselect with -m "not cluster"):
about 3 minutes on the 2-core machine, most of it the tiny phase itself.

The job runs in a copy of the working directory that Ray unpacks under each node's temp dir, so
the artifacts, the tracker and the bar data are pointed at absolute paths of this test's tmp dir
(on one machine a path every node sees, as a shared mount would be); or, as on a real cluster, at
a gs:// prefix (here a GCS emulator on 127.0.0.1, `gcs.endpoint_url`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpt_ray.core import storage
from vpt_ray.core.config import GcsConfig
from vpt_ray.core.storage import GcsPath
from vpt_ray.report.tracker import load_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_head import LocalHead, free_ports  # noqa: E402
from remote_fixtures import fake_gcs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SUBMIT = ROOT / "jobs" / "submit.sh"
JOB_TIMEOUT_S = 900
TINY = [
    "--set", "data.tickers=[AAA,BBB]",
    "--set", "data.start=2024-01-02",
    "--set", "data.end=2024-01-31",
    "--set", "backtest.start=2024-02-05",
    "--set", "backtest.end=2024-02-16",
    "--set", "search.num_samples=2",
    # the suite's tiny model (tests/conftest.py TINY): the jobs test the cluster, not the fit
    "--set", "model.n_estimators=60",
    "--set", "cv.n_splits=2",
    "--set", "data.sources=[synthetic]",
]  # fmt: skip


def ray_cli(head: LocalHead, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [head.ray_bin, *args],
        env=head.client_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def job_logs(head: LocalHead, job_id: str) -> str:
    out = ray_cli(head, "job", "logs", "--address", head.address, job_id)
    assert out.returncode == 0, out.stderr
    return out.stdout


def job_info(head: LocalHead, job_id: str):
    from ray.job_submission import JobSubmissionClient

    # the client sends the token only in token mode; set it for this call alone, so a Ray this
    # pytest process starts later (the session's local cluster) is not started in token mode
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        client = JobSubmissionClient(
            head.address, headers={"Authorization": f"Bearer {head.token}"}
        )
        return client.get_job_info(job_id)
    finally:
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = before


def submit(
    head: LocalHead,
    phase: str,
    *args: str,
    options: list[str] | None = None,
    env_extra: dict | None = None,
    wait: bool = True,
):
    """Run jobs/submit.sh the way a user does; returns the finished process."""
    env = head.client_env()
    env.update(env_extra or {})
    cmd = ["bash", str(SUBMIT), phase, "--address", head.address, *(options or [])]
    if wait:
        cmd.append("--wait")
    return subprocess.run(
        [*cmd, "--", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
        check=False,
        cwd="/",  # the script finds the repository itself
    )


@pytest.fixture(scope="module")
def cluster_key() -> str:
    """The Polygon key the cluster's nodes hold (exported before `ray start`)."""
    return "pk-cluster-" + secrets.token_hex(16)


NODE_STORE_MB = 512  # each node's object store, fixed at `ray start` as on a real cluster


@pytest.fixture(scope="module")
def head(cluster_key):
    """The head (driver, GCS, dashboard; no CPUs) and one worker node with the 2 CPUs."""
    env = {"POLYGON_API_KEY": cluster_key}
    with LocalHead(num_cpus=0, node_env=env, object_store_mb=NODE_STORE_MB) as h:
        h.add_node(2)
        yield h


@pytest.fixture(scope="module")
def worker_node(head):
    return head.nodes[0]


@pytest.fixture(scope="module")
def submitter_secrets(tmp_path_factory) -> dict[str, str]:
    """Secrets present in the submitting shell, which must never reach a job spec or a log."""
    key_file = tmp_path_factory.mktemp("creds") / "gcp-key.json"
    key_file.write_text(json.dumps({"private_key": secrets.token_hex(32)}))
    return {
        "POLYGON_API_KEY": "pk-submitter-" + secrets.token_hex(16),
        "GOOGLE_APPLICATION_CREDENTIALS": str(key_file),
    }


@pytest.fixture(scope="module")
def tiny_phase_job(head, submitter_secrets, tmp_path_factory):
    """One tiny phase 1 submitted with jobs/submit.sh --wait, shared by the tests below."""
    out_dir = tmp_path_factory.mktemp("job-out")
    run_id = "job-" + secrets.token_hex(4)
    t0 = time.monotonic()
    proc = submit(
        head,
        "1",
        *TINY,
        "--set", f"data.dir={out_dir / 'data'}",  # where both nodes find the bars
        "--set", "hardware.object_store_gb=0.25",  # below the nodes' fixed stores: flagged
        "--run-id", run_id,
        options=["--results", str(out_dir)],  # artifacts/, SCALING_TRACKER.md, logs/ under it
        env_extra=submitter_secrets,
    )  # fmt: skip
    return {
        "proc": proc,
        "job_id": proc.stdout.splitlines()[0] if proc.stdout else "",
        "run_id": run_id,
        "out_dir": out_dir,
        "seconds": time.monotonic() - t0,
    }


@pytest.mark.cluster
def test_tiny_phase_job_succeeds_on_the_cluster(head, tiny_phase_job):
    proc, job_id = tiny_phase_job["proc"], tiny_phase_job["job_id"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert job_id.startswith("vpt-phase1-")
    for hint in ("ray job logs -f", "ray job stop", "ray job list"):
        assert f"{hint} --address {head.address}" in proc.stdout
    info = job_info(head, job_id)
    assert info.status.value == "SUCCEEDED"
    assert info.entrypoint.startswith("python -m vpt_ray.phase 1 --set paths.artifacts=/")
    assert "--set 'data.tickers=[AAA,BBB]'" in info.entrypoint  # quoted for the job's shell
    # The code travelled as a working_dir package with the excludes; nothing was pip-installed.
    assert info.runtime_env["working_dir"].startswith("gcs://")
    assert "data/" in info.runtime_env["excludes"] and ".venv/" in info.runtime_env["excludes"]
    assert "pip" not in info.runtime_env
    assert info.metadata["phase"] == "1"
    assert tiny_phase_job["run_id"] in job_logs(head, job_id)  # the phase's log streams here


@pytest.mark.cluster
def test_job_writes_artifacts_and_tracker_row(tiny_phase_job):
    out, run_id = tiny_phase_job["out_dir"], tiny_phase_job["run_id"]
    assert tiny_phase_job["proc"].returncode == 0
    report = out / "artifacts" / "reports" / run_id
    assert json.loads((report / "status.json").read_text())["status"] == "FINISHED"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["run_id"] == run_id and metrics["phase"] == 1
    # Sized from the cluster (2 CPUs here), not from the config's 8-core workstation defaults.
    assert metrics["resources"]["ray"]["mode"] == "cluster"
    assert metrics["resources"]["ray"]["num_cpus"] == 2
    assert (out / "artifacts" / "models" / run_id / "model.ubj").stat().st_size > 0
    row = load_state(out / "SCALING_TRACKER.md")["latest"]["1"]
    assert row["run_id"] == run_id
    assert row["trades"] == metrics["backtest"]["trades"]
    assert (out / "logs" / f"run-{run_id}.log").is_file()


def node_scratch_left(node) -> list[Path]:
    """What a run left in the node's run scratch (`node_memory.node_scratch`, under its temp
    dir) or as sample-file copies anywhere under it."""
    root = Path(node.temp_dir)
    return [*root.rglob("vpt-scratch"), *root.rglob("vpt-samples-*")]


@pytest.mark.cluster
def test_job_memory_is_measured_and_cleaned_on_every_node(head, worker_node, tiny_phase_job):
    """The driver's node and the worker node each report their memory; the stages say where
    their work ran; the sample file the worker node rebuilt for the search is gone."""
    out, run_id = tiny_phase_job["out_dir"], tiny_phase_job["run_id"]
    assert tiny_phase_job["proc"].returncode == 0
    res = json.loads((out / "artifacts" / "reports" / run_id / "metrics.json").read_text())[
        "resources"
    ]
    worker, driver = (
        worker_node.node_id[:8],
        next(n["node_id"][:8] for n in head.alive_nodes() if n["node_id"] != worker_node.node_id),
    )
    assert res["measured"] == "per node" and set(res["nodes"]) == {worker, driver}
    assert res["nodes"][driver]["driver"] and not res["nodes"][worker]["driver"]
    # The head holds the driver, GCS and dashboard; the worker node its Ray workers, which
    # fitted trials and backtested: both well above an idle raylet.
    assert res["nodes"][driver]["peak_gb"] > 0.2 and res["nodes"][worker]["peak_gb"] > 0.2
    assert (
        res["peak_memory_gb"]
        >= res["peak_node_memory_gb"]
        == max(n["peak_gb"] for n in res["nodes"].values())
    )
    assert res["peak_memory_gb"] <= sum(n["peak_gb"] for n in res["nodes"].values()) + 1e-6
    assert res["stage_node_peak_gb"]["search"][worker] > 0.2
    placed = res["placement"]
    assert set(placed["features"]) == set(placed["backtest"]) == set(placed["search"]) == {worker}
    assert sorted(placed["backtest"][worker]) == ["AAA", "BBB"]
    assert placed["train"] == {driver: ["final fit (driver)"]}
    # The nodes' object stores were fixed by `ray start`: checked against the config and reported.
    for name, node in res["ray"]["nodes"].items():
        assert node["object_store_set_by"] == "cluster", name
        assert node["object_store_gb"] == pytest.approx(NODE_STORE_MB / 1024, abs=0.01)
        assert node["object_store_over_config"] is True  # 0.5 GB > hardware.object_store_gb 0.25
    logs = job_logs(head, tiny_phase_job["job_id"])
    assert re.search(rf"backtest: 2/2 ticker done \((AAA|BBB) on node {worker}\)", logs)
    assert f"stage search ran on node {worker}: trial " in logs
    assert "is above hardware.object_store_gb = 0.25 GB" in logs
    summary = (out / "artifacts" / "reports" / run_id / "summary.md").read_text()
    assert "Peak memory per node (2 nodes" in summary and f"{worker} " in summary
    row = load_state(out / "SCALING_TRACKER.md")["latest"]["1"]
    assert set(row["node_peak_gb"]) == {worker, driver} and "on 2 nodes" in row["notes"]
    # The worker node rebuilt the sample file in the run's scratch for the search; removed.
    assert res["nodes"][worker]["scratch_removed_mb"] > 0
    assert f"removed the run's node scratch: node {worker}" in logs
    assert node_scratch_left(worker_node) == []


@pytest.mark.cluster
def test_a_job_wide_memory_limit_stops_the_run_cleanly(head, worker_node, tmp_path):
    """`hardware.job_memory_limit_gb` below what the two nodes hold together stops the run at
    its first safe point: verdict "stop", every node in the report, nothing left behind."""
    run_id = "capped-" + secrets.token_hex(3)
    proc = submit(
        head,
        "1",
        *TINY,
        "--set", f"data.dir={tmp_path / 'data'}",
        "--set", "hardware.job_memory_limit_gb=0.5",
        "--run-id", run_id,
        options=["--results", str(tmp_path)],
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:]  # the job ended with the phase's exit 3
    report = tmp_path / "artifacts" / "reports" / run_id
    assert json.loads((report / "status.json").read_text())["status"] == "STOPPED"
    m = json.loads((report / "metrics.json").read_text())
    assert m["decision"]["verdict"] == "stop"
    stopped = m["stopped"]
    assert stopped["cause"] == "memory_limit" and stopped["scope"] == "job"
    assert stopped["stage"] == "data" and stopped["memory_gb"] > 0.5
    assert "hardware.job_memory_limit_gb = 0.5 GB" in stopped["reason"]
    nodes = m["resources"]["nodes"]
    assert len(nodes) == 2 and all(n["peak_gb"] > 0 for n in nodes.values())
    assert worker_node.node_id[:8] in stopped["reason"]  # the reason lists every node's figure
    assert not (tmp_path / "artifacts" / "models" / run_id).exists()
    state = load_state(tmp_path / "SCALING_TRACKER.md")
    row = state["history"][0]  # a STOPPED run is history, never a phase's latest row
    assert row["run_id"] == run_id and "verdict: stop" in row["notes"]
    assert "1" not in state["latest"]
    assert node_scratch_left(worker_node) == []


@pytest.fixture(scope="module")
def gcs_phase_job(head):
    """The tiny phase with `--results gs://...`: every output goes to a GCS emulator's bucket,
    whose endpoint the job gets as a config override (no credentials: token anon)."""
    with fake_gcs() as url:
        gcs = GcsConfig(endpoint_url=url, token="anon")
        storage.gcs_filesystem(gcs).mkdir("vpt-results")
        run_id = "gcsjob-" + secrets.token_hex(4)
        proc = submit(
            head,
            "1",
            *TINY,
            "--run-id", run_id,
            "--set", f"gcs.endpoint_url={url}",
            "--set", "gcs.token=anon",
            options=["--results", "gs://vpt-results/team"],
        )  # fmt: skip
        yield {"proc": proc, "run_id": run_id, "root": GcsPath("vpt-results/team", gcs)}


@pytest.mark.cluster
def test_job_with_gcs_results_writes_every_output_to_the_bucket(head, gcs_phase_job):
    proc, run_id, root = gcs_phase_job["proc"], gcs_phase_job["run_id"], gcs_phase_job["root"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert job_info(head, proc.stdout.splitlines()[0]).status.value == "SUCCEEDED"
    arts = root / "artifacts"
    report = arts / "reports" / run_id
    assert json.loads(storage.read_text(report / "status.json"))["status"] == "FINISHED"
    metrics = json.loads(storage.read_text(report / "metrics.json"))
    assert metrics["run_id"] == run_id and metrics["resources"]["ray"]["mode"] == "cluster"
    assert metrics["model_dir"] == str(arts / "models" / run_id)
    assert {"summary.md", "report.html", "config.yaml"} <= set(storage.list_files(report))
    assert {"model.ubj", "meta.json"} <= set(storage.list_files(arts / "models" / run_id))
    assert load_state(root / "SCALING_TRACKER.md")["latest"]["1"]["run_id"] == run_id
    assert run_id in storage.read_text(root / "logs" / f"run-{run_id}.log")
    features = storage.list_files(arts / "cache" / "features")
    assert sum(f.endswith(".parquet") for f in features) == 2  # written by the cluster's tasks
    assert any(f.startswith("search/") for f in storage.list_files(arts / "runs" / run_id))


@pytest.mark.cluster
def test_bad_config_job_ends_failed_with_the_config_error_in_its_logs(head):
    proc = submit(head, "1", *TINY, "--set", "search.num_sampels=3")
    assert proc.returncode != 0
    job_id = proc.stdout.splitlines()[0]
    assert job_info(head, job_id).status.value == "FAILED"
    logs = job_logs(head, job_id)
    assert "unknown key 'search.num_sampels'" in logs
    assert "did you mean 'num_samples'" in logs


@pytest.mark.cluster
def test_secrets_never_appear_in_job_specs_or_logs(
    head, tiny_phase_job, submitter_secrets, cluster_key
):
    """The submitter's key is not sent; the cluster's key reaches jobs only through the env."""
    proc = tiny_phase_job["proc"]
    assert proc.returncode == 0
    forbidden = {*submitter_secrets.values(), cluster_key, head.token}
    # The job can read the cluster-held key from its environment (a hash proves it, not a print).
    probe = ray_cli(
        head, "job", "submit", "--address", head.address, "--", "python", "-c",
        "import hashlib, os; "
        "print('key-sha256', hashlib.sha256(os.environ['POLYGON_API_KEY'].encode()).hexdigest())",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert f"key-sha256 {hashlib.sha256(cluster_key.encode()).hexdigest()}" in probe.stdout

    listed = ray_cli(head, "job", "list", "--address", head.address)
    assert listed.returncode == 0, listed.stderr
    job_id = tiny_phase_job["job_id"]
    status = ray_cli(head, "job", "status", "--address", head.address, job_id)
    info = job_info(head, job_id)
    seen = {
        "submit.sh output": proc.stdout + proc.stderr,
        "ray job logs": job_logs(head, job_id),
        "ray job status": status.stdout + status.stderr,
        "ray job list": listed.stdout + listed.stderr,
        "job runtime env": json.dumps(info.runtime_env),
        "job entrypoint + metadata": info.entrypoint + json.dumps(info.metadata),
    }
    for where, text in seen.items():
        for secret in forbidden:
            assert secret not in text, f"a secret leaked into {where}"
    env_vars = info.runtime_env.get("env_vars", {})
    assert not {"POLYGON_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "RAY_AUTH_TOKEN"} & set(
        env_vars
    )
    assert "POLYGON_API_KEY is set here but is not sent with the job" in proc.stderr


def test_submit_rejects_a_bad_phase_and_unknown_options():
    bad_phase = subprocess.run(["bash", str(SUBMIT), "7"], capture_output=True, text=True)
    assert bad_phase.returncode == 2 and "phase must be 1-5, got '7'" in bad_phase.stderr
    unknown = subprocess.run(["bash", str(SUBMIT), "1", "--bogus"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown option '--bogus'" in unknown.stderr
    relative = subprocess.run(
        ["bash", str(SUBMIT), "1", "--results", "out/dir"], capture_output=True, text=True
    )
    assert relative.returncode == 2 and "--results must be an absolute path" in relative.stderr
    bad_address = subprocess.run(
        ["bash", str(SUBMIT), "1", "--address", "127.0.0.1:6379"], capture_output=True, text=True
    )
    assert bad_address.returncode == 2 and "http://HOST:8265" in bad_address.stderr


def test_submit_fails_clearly_when_no_cluster_answers():
    port = free_ports(1)[0]
    proc = subprocess.run(
        ["bash", str(SUBMIT), "1", "--address", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "POLYGON_API_KEY"},
    )
    assert proc.returncode == 2
    # one line, not the Ray CLI's 116 lines and five tracebacks (issue 30)
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(
        f"error: jobs/submit.sh: no Ray cluster answers at http://127.0.0.1:{port}"
    )
    assert proc.stdout == ""  # no job id is printed for a job that does not exist


@pytest.mark.cluster
def test_submit_names_the_fix_when_the_heads_agent_port_was_taken():
    """A local run (any `ray.init()`) holds the dashboard agent's default port 52365; a `ray
    start --head` after it gets no agent, and Ray answers every submission "No available agent
    to submit job, please try again later" for as long as one waits (issue 30). Here a plain
    socket holds the port the head's agent is given."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with LocalHead(num_cpus=1, ports={"dashboard-agent-listen-port": port}) as head:
            proc = subprocess.run(
                ["bash", str(SUBMIT), "1", "--address", head.address],
                capture_output=True,
                text=True,
                timeout=300,
                env=head.client_env(),
            )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr  # one line
    assert "has no dashboard agent to take jobs" in proc.stderr
    assert "--dashboard-agent-listen-port 52366" in proc.stderr
