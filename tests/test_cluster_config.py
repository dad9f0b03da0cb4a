"""cluster.yaml and jobs/runtime_env.yaml are checked here because nothing else runs them.

`ray up` is never run in CI (it needs a GCP project), so these tests take the same path `ray up`
takes before it touches the cloud: Ray's own default-merging (`prepare_config`) and schema check
(`validate_config`, ray/autoscaler/ray-schema.json). The runtime env is checked with Ray's own
packager, so the excludes are proven to keep data, artifacts, logs and virtualenvs out of the
upload. No network and no Ray cluster are needed; everything here takes well under a second
except the staging script (one `git archive`).
"""

from __future__ import annotations

import copy
import os
import re
import stat
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest
import ray
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
RUNTIME_ENV_YAML = ROOT / "jobs" / "runtime_env.yaml"
SECRET_ENV_NAMES = ("POLYGON_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "RAY_AUTH_TOKEN")
GIB = 1024**3

# Shapes of credentials that must never be written into a config file.
CREDENTIAL_PATTERNS = {
    "private key block": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key field": re.compile(r"\"?private_key(_id)?\"?\s*:"),
    "Google API key": re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
    "Google OAuth token": re.compile(r"ya29\.[0-9A-Za-z_\-]+"),
    "AWS access key": re.compile(r"AKIA[0-9A-Z]{16}"),
    # a long literal with a digit; names like `--secret=vpt-polygon-api-key` or `$VAR` are fine
    "literal secret assignment": re.compile(
        r"(?i)(api[_-]?key|secret|password|auth[_-]?token)[\"']?\s*[:=]\s*[\"']?"
        r"(?![\"']?[$~/])(?=[A-Za-z0-9_\-+/]*\d)[A-Za-z0-9_\-+/]{16,}"
    ),
}


def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def credential_findings(text: str, config: dict) -> list[str]:
    """Every credential-looking thing in a cluster config: literal secrets, key files/fields."""
    found = [name for name, rx in CREDENTIAL_PATTERNS.items() if rx.search(text)]
    if "gcp_credentials" in config.get("provider", {}):
        found.append("provider.gcp_credentials (use the nodes' service account)")
    if "ssh_private_key" in config.get("auth", {}):
        found.append("auth.ssh_private_key (let `ray up` create the key pair)")
    for remote, local in (config.get("file_mounts") or {}).items():
        if str(local).endswith(".json") or "credentials" in str(local).lower():
            found.append(f"file_mounts {remote}: {local} looks like a key file")
    for match in re.finditer(r"(POLYGON_API_KEY|GOOGLE_APPLICATION_CREDENTIALS)=([^\s;]*)", text):
        if not match.group(2).startswith('"$') and not match.group(2).startswith("$"):
            found.append(f"{match.group(1)} set to a literal value")
    return found


def test_cluster_yaml_passes_rays_own_schema_after_default_merging():
    prepared = prepare_config(copy.deepcopy(load_cluster()))
    validate_config(prepared)  # raises jsonschema.ValidationError on any unknown / mistyped key
    assert prepared["provider"]["type"] == "gcp"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_schema_check_is_not_vacuous():
    bad = load_cluster()
    bad["available_node_types"]["cpu_8cpu_32gb"]["resources"]["CPU"] = "eight"
    with pytest.raises(Exception, match="eight"):
        validate_config(prepare_config(bad))
    bad = load_cluster()
    bad["max_worker"] = 3  # typo of max_workers
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(bad))


def test_worker_type_is_the_reference_workstation_and_autoscales():
    config = load_cluster()
    workers = [
        (name, node)
        for name, node in config["available_node_types"].items()
        if name != config["head_node_type"]
    ]
    assert len(workers) == 1, "one CPU worker type"
    _, worker = workers[0]
    assert worker["node_config"]["machineType"] == "n2-standard-8"  # 8 vCPU, 32 GB
    assert worker["resources"]["CPU"] == 8
    assert 16 * GIB <= worker["resources"]["memory"] <= 32 * GIB
    assert worker["min_workers"] == 0 < worker["max_workers"] <= config["max_workers"]


def test_workers_use_the_projects_service_account_for_gcs():
    config = load_cluster()
    project = config["provider"]["project_id"]
    worker = config["available_node_types"]["cpu_8cpu_32gb"]["node_config"]
    (account,) = worker["serviceAccounts"]
    assert account["email"] == f"ray-autoscaler-sa-v1@{project}.iam.gserviceaccount.com"
    assert "https://www.googleapis.com/auth/cloud-platform" in account["scopes"]


def test_dashboard_is_loopback_only_and_token_auth_is_on():
    config = load_cluster()
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "export RAY_AUTH_MODE=token;" in start, key
        assert start.index("RAY_AUTH_MODE=token") < start.index("ray start"), key
    # The token file travels as a path; the staged source is the only code mount.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert config["file_mounts"]["~/vpt-ray"] == "build/cluster-src"


def test_setup_installs_the_project_with_the_clients_ray():
    config = load_cluster()
    setup = " ".join(config["setup_commands"])
    assert '-e "$HOME/vpt-ray"' in setup
    (pin,) = re.findall(r"ray\[[a-z,]+\]==([0-9.]+)", setup)
    (ray_dep,) = re.findall(r'"(ray\[[^"]*)"', (ROOT / "pyproject.toml").read_text())
    requirement = Requirement(ray_dep)
    assert requirement.specifier.contains(pin), f"cluster pins ray {pin}, pyproject {requirement}"
    if pin.split(".")[:2] != ray.__version__.split(".")[:2]:
        # A warning, not a failure: a new Ray release on PyPI must not break CI by itself.
        warnings.warn(
            f"cluster.yaml pins ray=={pin} but this checkout runs ray {ray.__version__}: update "
            "the pin so the cluster runs the Ray the project is tested with",
            stacklevel=1,
        )


def test_cluster_yaml_holds_no_credentials():
    text = CLUSTER_YAML.read_text()
    assert credential_findings(text, load_cluster()) == []
    # Secrets reach the nodes by name only: the Polygon key from Secret Manager at `ray start`.
    assert "gcloud secrets versions access latest --secret=vpt-polygon-api-key" in text


@pytest.mark.parametrize(
    "planted",
    [
        "# -----BEGIN PRIVATE KEY-----",
        "# POLYGON_API_KEY=abcdEFGH1234ijklMNOP",
        "# api_key: abcdEFGH1234ijklMNOP5678",
        "# AIzaSyA1234567890abcdefghijklmnopqrstuv",
    ],
)
def test_credential_scan_catches_planted_secrets(planted):
    text = CLUSTER_YAML.read_text() + "\n" + planted + "\n"
    assert credential_findings(text, yaml.safe_load(text)) != []


def test_credential_scan_catches_key_fields():
    config = load_cluster()
    config["provider"]["gcp_credentials"] = {"type": "service_account", "credentials": "{}"}
    config["file_mounts"]["~/key.json"] = "~/Downloads/project-1234.json"
    findings = credential_findings(yaml.safe_dump(config), config)
    assert any("gcp_credentials" in f for f in findings)
    assert any("key.json" in f for f in findings)


def test_runtime_env_loads_and_ray_accepts_it():
    env = yaml.safe_load(RUNTIME_ENV_YAML.read_text())
    parsed = ray.runtime_env.RuntimeEnv(**env)  # Ray's own validation of field names / types
    assert parsed["excludes"] == env["excludes"]
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert not set(env["env_vars"]) & set(SECRET_ENV_NAMES), "secrets never go in the runtime env"
    assert "pip" not in env and "uv" not in env  # the cluster image has the project installed


def test_runtime_env_excludes_keep_data_artifacts_logs_and_venvs_out(tmp_path):
    """Package a fake repo with Ray's own packager and the yaml's excludes (gitignore off)."""
    env = yaml.safe_load(RUNTIME_ENV_YAML.read_text())
    tree = tmp_path / "repo"
    files = {
        "vpt_ray/pipeline/phase.py": True,
        "config/base.yaml": True,
        "pyproject.toml": True,
        "jobs/submit.sh": True,
        "data/AAPL.parquet": False,
        "data/cache/x.csv": False,
        "artifacts/models/run1/model.json": False,
        "artifacts/SCALING_TRACKER.md": False,
        "logs/run.log": False,
        ".venv/lib/python3.11/site-packages/ray/__init__.py": False,
        "venv/bin/python": False,
        ".git/HEAD": False,
        "vpt_ray/__pycache__/phase.cpython-311.pyc": False,
        "somewhere/bars.parquet": False,
        ".env": False,
        "gcp-credentials.json": False,
    }
    for rel in files:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    from ray._private.runtime_env.packaging import create_package

    target = tmp_path / "pkg.zip"
    create_package(str(tree), target, include_gitignore=False, excludes=env["excludes"])
    shipped = {n for n in zipfile.ZipFile(target).namelist() if not n.endswith("/")}
    assert shipped == {rel for rel, keep in files.items() if keep}


def test_stage_script_snapshots_committed_code_and_makes_a_private_token(tmp_path):
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        pytest.skip("no git history to stage")
    out = tmp_path / "stage"
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), VPT_STAGE_DIR=str(out))
    run = subprocess.run(
        ["bash", "jobs/stage_cluster.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert (out / ".vpt-cluster-src").read_text().strip() == head.stdout.strip()
    assert (out / "pyproject.toml").is_file() and (out / "vpt_ray" / "core" / "config.py").is_file()
    assert not list(out.rglob("*.parquet")) and not (out / ".venv").exists()
    token_file = home / ".ray" / "auth_token"
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token not in run.stdout + run.stderr
    # A second run replaces its own output and keeps the token.
    again = subprocess.run(
        ["bash", "jobs/stage_cluster.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert token_file.read_text().strip() == token


def test_stage_script_refuses_to_replace_a_foreign_directory(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    env = dict(os.environ, HOME=str(tmp_path), VPT_STAGE_DIR=str(precious))
    run = subprocess.run(
        ["bash", "jobs/stage_cluster.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "refusing to replace" in run.stderr
    assert (precious / "keep.txt").read_text() == "mine"
