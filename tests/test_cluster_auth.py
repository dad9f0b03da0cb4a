"""Cluster auth: jobs/submit.sh refuses a cluster that runs without authentication, and the
cluster token file is owner-only whoever created it.

Against a real `ray start --head` (tests/ray_head.py) started with RAY_AUTH_MODE=disabled: before,
submit.sh sent the job without a word, although anyone who reaches such a dashboard port can run
code on the cluster. Ray writes `~/.ray/auth_token` world-readable (644), and the staging script
only chmodded a token it generated itself.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_head import LocalHead  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SUBMIT = ROOT / "jobs" / "submit.sh"


@pytest.fixture(scope="module")
def open_head():
    with LocalHead(num_cpus=1, node_env={"RAY_AUTH_MODE": "disabled"}) as h:
        yield h


def _submit(head: LocalHead, home: Path, *options: str) -> subprocess.CompletedProcess:
    env = {**head.client_env(), "HOME": str(home)}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    return subprocess.run(
        ["bash", str(SUBMIT), "1", "--address", head.address, *options, "--",
         "--set", "data.tickers=[AAA]", "--set", "data.sources=[synthetic]"],
        env=env, capture_output=True, text=True, timeout=300, cwd="/",
    )  # fmt: skip


def _jobs(head: LocalHead) -> list:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.address).list_jobs()


def _world_readable_token(home: Path) -> Path:
    token = home / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text("x" * 64)
    token.chmod(0o644)  # what `ray get-auth-token --generate` leaves
    return token


@pytest.mark.cluster
def test_submit_refuses_a_cluster_without_auth_unless_insecure(open_head, tmp_path):
    token = _world_readable_token(tmp_path)
    refused = _submit(open_head, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "reports authentication disabled" in refused.stderr
    assert "RAY_AUTH_MODE=token" in refused.stderr and "--insecure" in refused.stderr
    assert _jobs(open_head) == []  # nothing was sent
    assert stat.S_IMODE(token.stat().st_mode) == 0o600  # and the token file is private now
    assert "now mode 600" in refused.stderr and token.read_text() not in refused.stderr

    sent = _submit(open_head, tmp_path, "--insecure")
    assert sent.returncode == 0, sent.stderr
    assert "authentication disabled (--insecure)" in sent.stderr
    job_id = sent.stdout.splitlines()[0]
    assert [j.submission_id for j in _jobs(open_head)] == [job_id]
    from ray.job_submission import JobSubmissionClient

    JobSubmissionClient(open_head.address).stop_job(job_id)  # the test needs only the submission


def test_stage_script_makes_an_existing_token_private(tmp_path):
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("no git history to stage")
    token = _world_readable_token(tmp_path / "home")
    env = dict(os.environ, HOME=str(tmp_path / "home"), VPT_STAGE_DIR=str(tmp_path / "stage"))
    run = subprocess.run(
        ["bash", "jobs/stage_cluster.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert token.read_text() == "x" * 64  # kept, not regenerated
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
