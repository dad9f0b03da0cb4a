"""The commands a new user pastes: the seed document's `scripts/` and every README example.

One tiny model (two synthetic tickers, 5-minute bars, trained on Oct-Nov 2023) serves every
command, run in this process on the session's Ray (a subprocess each would start Ray again):
- the four seed scripts run with the seed's flags verbatim (`--sample_days` spelled its way),
  plus `--set` overrides that make the training tiny: that is the only addition;
- every command in README.md's code blocks is classified below: the short ones run exactly as
  written (RUN_ID replaced by the tiny model's run id), the long ones (a whole phase, the test
  suite, a cluster, a benchmark) are skipped with the reason. A README command missing from
  the table fails the test, so a new example cannot go untested by accident.
"""

from __future__ import annotations

import contextlib
import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from vpt_ray.report import tracker

pytestmark = [
    pytest.mark.slow,
    # runpy warns when it runs a module this test process imported already (a shell starts a
    # fresh interpreter, where the module is not imported yet): expected here, not a defect
    pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package"),
]
MODEL_RUN = "run-XXXX"  # the seed's placeholder, used as the tiny model's run id

# a model trained before 2024, so the seed's backtest window (2024-01-01..2024-06-30) and the
# README's (2024-07-08..2024-12-31) are both out of sample for it
TINY_2023 = [
    "data.tickers=[AAA,BBB]",
    "data.start=2023-10-02",
    "data.end=2023-11-30",
    "backtest.start=2023-12-05",
    "backtest.end=2023-12-15",
    "data.bar=5min",
    "data.sources=[local,synthetic]",
    "search.num_samples=1",
    "model.n_estimators=20",
    "cv.n_splits=2",
    "hardware.num_cpus=2",
    "hardware.object_store_gb=1",
]

SKIP = "long"
# README command -> "run", or why it is not run here
README_COMMANDS = {
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m vpt_ray.phase 1":
        "a fresh install and a whole phase 1 (minutes); .ci/run installs the same way",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -q":
        "it is this test suite (.ci/run runs it)",
    "python scripts/phase1_train.py": "a whole phase-1 training; run below with tiny --set",
    "python scripts/phase1_backtest.py": "run",
    "python scripts/train_model.py --config config/base.yaml --sample_days 365":
        "a whole training on base.yaml; run below with tiny --set",
    "python scripts/backtest_model.py --model-dir artifacts/models/RUN_ID --start-date "
    "2024-07-08 --end-date 2024-12-31": "run",
    "vpt phase 1": "a whole phase 1",
    "vpt train --sample-days 365": "a whole training",
    "vpt backtest --latest-phase 1": "run",
    "vpt report RUN_ID --window 2024-07-08..2024-07-12": "run",
    "vpt compare": "run",
    "vpt compare RUN_A RUN_B RUN_C": "run",
    "vpt optimize RUN_ID": "needs a run whose verdict wrote optimized.yaml "
    "(tests/test_known_truth.py runs a forced degradation through --optimize)",
    "python -m vpt_ray.phase 1 --set data.tickers=[AAPL,MSFT] --set search.num_samples=16":
        "a whole phase 1",
    "python -m vpt_ray.phase 2 --config my_overrides.yaml --run-id time-scaling-try2":
        "a whole phase 2, with the user's own overrides file",
    ".venv/bin/pip install -e '.[mlflow]' && .venv/bin/python -m vpt_ray.phase 1 --mlflow":
        "a whole phase 1 (tests/test_html_report.py logs a tiny phase to MLflow)",
    "bash jobs/stage_cluster.sh && ray up cluster.yaml": "needs a GCP project",
    "ray dashboard cluster.yaml": "needs a GCP cluster",
    "export RAY_AUTH_MODE=token": "shell setting for the cluster commands",
    "jobs/submit.sh 3 --results gs://MY_BUCKET/vpt --wait": "needs a cluster and a bucket "
    "(tests/test_jobs.py submits to a local head node)",
    "ray job logs -f --address http://127.0.0.1:8265 JOB_ID": "needs a running job",
    "gsutil cat gs://MY_BUCKET/vpt/SCALING_TRACKER.md": "needs a bucket",
    "vpt data import stocks.csv.gz --data-dir data": "the user's own file (tests/test_importer.py "
    "imports real daily bars from a PyPI package the same way, then checks them)",
    "vpt data check --data-dir data": "the user's own store (tests/test_importer.py)",
    "vpt phase 1 --set data.sources=[local] --set data.tickers=[AAPL,GOOG,IBM,MSFT] --set "
    "data.bar=1day --set data.start=2005-01-03 --set data.end=2010-12-31 --set "
    "backtest.start=2011-01-10 --set backtest.end=2013-02-28": "a whole phase 1 on the user's "
    "daily files (tests/test_real_data.py runs it on bokeh-sampledata's real daily bars)",
}  # fmt: skip


def readme_commands(text: str) -> list[str]:
    """Commands in README.md's code blocks (4-space indented or fenced), comments removed, a
    line ending in a backslash joined with the next."""
    out, fenced, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or (line.startswith("    ") and line.strip()):
            cmd = re.sub(r"\s+#\s.*$", "", line.strip()).strip()
            if cmd.endswith("\\"):
                pending += cmd[:-1] + " "
                continue
            cmd, pending = pending + cmd, ""
            if cmd and not cmd.startswith("#"):
                out.append(re.sub(r"\s+", " ", cmd).strip())
    return out


@contextlib.contextmanager
def argv(args: list[str]):
    saved = sys.argv
    sys.argv = args
    try:
        yield
    finally:
        sys.argv = saved


def run_command(cmd: str) -> int:
    """Run `python scripts/X.py ...`, `python -m M ...` or `vpt ...` in this process, exactly
    as a shell would start it (the script's or module's __main__ block, its exit code)."""
    words = shlex.split(cmd)
    try:
        if words[0] == "vpt":
            from vpt_ray.__main__ import main

            return main(words[1:])
        assert words[0] == "python", cmd
        if words[1] == "-m":
            with argv([words[2], *words[3:]]):
                runpy.run_module(words[2], run_name="__main__", alter_sys=True)
        else:
            with argv(words[1:]):
                runpy.run_path(str(REPO / words[1]), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def sets(overrides: list[str], ws: Path) -> str:
    """--set flags; the run's directories absolute, since the session's Ray workers were
    started elsewhere (a user's driver and Ray share one working directory)."""
    tracker_md = ws / "artifacts" / "SCALING_TRACKER.md"
    dirs = [f"data.dir={ws / 'data'}", f"paths.artifacts={ws / 'artifacts'}",
            f"paths.logs={ws / 'logs'}", f"paths.tracker={tracker_md}"]  # fmt: skip
    return " ".join(f"--set {o}" for o in [*overrides, *dirs])


@pytest.fixture(scope="module")
def ws(ray_session, tmp_path_factory) -> Path:
    """A user's checkout: config/ next to artifacts/, data/, logs/; the tiny phase-1 model
    `run-XXXX` trained by the seed's `python scripts/phase1_train.py`."""
    ws = tmp_path_factory.mktemp("commands")
    (ws / "config").symlink_to(REPO / "config")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        code = run_command(
            f"python scripts/phase1_train.py --run-id {MODEL_RUN} {sets(TINY_2023, ws)}"
        )
        assert code == 0
        yield ws


@pytest.fixture(autouse=True)
def _in_ws(request, monkeypatch):
    if "ws" in request.fixturenames:
        monkeypatch.chdir(request.getfixturevalue("ws"))


def test_phase1_train_trains_phase_one(ws):
    meta = json.loads((ws / "artifacts" / "models" / MODEL_RUN / "meta.json").read_text())
    assert meta["phase"] == 1 and meta["train_window"] == ["2023-10-02", "2023-11-30"]
    m = json.loads((ws / "artifacts" / "reports" / MODEL_RUN / "metrics.json").read_text())
    assert m["kind"] == "train" and "backtest" not in m  # a training run: CV figures only
    assert m["cv"]["accuracy"] == meta["cv"]["val_accuracy"]


def test_phase1_backtest_tests_the_newest_phase1_model_on_its_own_window(ws, capsys):
    assert run_command("python scripts/phase1_backtest.py") == 0
    run_id = f"{MODEL_RUN}-bt-2023-12-05-2023-12-15"
    m = json.loads((ws / "artifacts" / "reports" / run_id / "metrics.json").read_text())
    assert m["kind"] == "backtest" and m["model_run_id"] == MODEL_RUN
    assert capsys.readouterr().out.rstrip().endswith(f"{run_id}/report.html")


def test_backtest_model_takes_the_seeds_command_verbatim(ws):
    cmd = (
        f"python scripts/backtest_model.py --model-dir artifacts/models/{MODEL_RUN} "
        "--start-date 2024-01-01 --end-date 2024-06-30"
    )
    assert run_command(cmd) == 0
    d = ws / "artifacts" / "reports" / f"{MODEL_RUN}-bt-2024-01-01-2024-06-30"
    m = json.loads((d / "metrics.json").read_text())
    assert m["windows"]["backtest"] == "2024-01-01..2024-06-30" and m["oos"]["samples"] > 1000
    assert (d / "report.html").exists()
    rows = tracker.load_state(ws / "artifacts" / "SCALING_TRACKER.md")["history"]
    assert rows[0]["run_id"] == d.name and rows[0]["notes"].find(f"backtest of {MODEL_RUN}") >= 0


def test_train_model_takes_sample_days_in_both_spellings(ws, capsys):
    from vpt_ray import train  # the public `python -m vpt_ray.train` module

    for flag in ("--sample_days", "--sample-days"):
        parser_args = []

        def capture(args, stop_after=None, _seen=parser_args):
            _seen.append(args)
            return 0

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("vpt_ray.pipeline.commands.run_cli", capture)
            assert train.main(["--config", "config/base.yaml", flag, "365"]) == 0
        assert parser_args[0].sample_days == 365
    short = [o for o in TINY_2023 if not o.startswith("data.end")] + ["data.end=2023-10-31"]
    cmd = (
        "python scripts/train_model.py --config config/base.yaml --sample_days 365 "
        f"--run-id seed-train {sets(short, ws)}"
    )
    capsys.readouterr()
    assert run_command(cmd) == 0
    cfg = (ws / "artifacts" / "models" / "seed-train" / "config.yaml").read_text()
    assert "sample_days: 365" in cfg
    # the wrap-up: the CV figures, where the model is, and the command that backtests it
    m = json.loads((ws / "artifacts" / "reports" / "seed-train" / "metrics.json").read_text())
    out = capsys.readouterr().out
    wrap = dict(re.findall(r"^  (\S.*?\S)  +(\S.*)$", out.split("\n\n")[-1], re.M))
    assert list(wrap)[-2:] == ["tracker", "next"]  # the last line: what to run next
    assert re.match(rf"{m['cv']['accuracy']:.4f} \(SE 0\.\d{{4}}\) / ", wrap["CV accuracy / AUC"])
    assert wrap["model"].endswith("/artifacts/models/seed-train")
    assert wrap["next"].startswith(
        "vpt backtest --model-dir artifacts/models/seed-train --start-date 2023-12-05 "
        "--end-date 2023-12-15"
    )


def test_the_readme_backtest_window_is_out_of_sample_for_the_default_phase1_model():
    from vpt_ray.core.config import load_config

    cmd = next(
        c for c in readme_commands((REPO / "README.md").read_text()) if "backtest_model" in c
    )
    start = re.search(r"--start-date (\S+)", cmd)[1]
    cfg = load_config(1)
    assert str(cfg.data.end) < start, (cfg.data.end, start)


def test_every_readme_command_is_classified_and_the_short_ones_run(ws, capsys):
    commands = readme_commands((REPO / "README.md").read_text())
    unknown = [c for c in commands if c not in README_COMMANDS]
    assert not unknown, f"README commands not classified in this test: {unknown}"
    assert len(commands) >= 15
    bt_run = f"{MODEL_RUN}-bt-2024-07-08-2024-12-31"
    ids = {"RUN_A": MODEL_RUN + "-bt-2023-12-05-2023-12-15", "RUN_B": bt_run,
           "RUN_C": f"{MODEL_RUN}-bt-2024-01-01-2024-06-30"}  # fmt: skip
    ran = []
    order = sorted(commands, key=lambda c: "compare" in c or "report" in c)  # backtests first
    for cmd in order:
        if README_COMMANDS[cmd] != "run":
            continue
        concrete = cmd.replace("RUN_ID", MODEL_RUN if "models/RUN_ID" in cmd else bt_run)
        for k, v in ids.items():
            concrete = concrete.replace(k, v)
        assert run_command(concrete) == 0, concrete
        ran.append(cmd)
    assert len(ran) == 6
    out = capsys.readouterr().out
    assert "# Run comparison: A = " in out and "C - A" in out
    page = (ws / "artifacts" / "reports" / bt_run / "report.html").read_text()
    assert "Prices and trades, 2024-07-08 .. 2024-07-12" in page


def test_the_seed_scripts_alone_fill_both_seed_tables(ws, capsys):
    """The seed: "Update this file after each run". Its scripts' training runs land in the
    training table, its backtests in the backtesting table, each marked as what it is, every
    run in the history; and `vpt compare` reads a training run next to a backtest."""
    path = ws / "artifacts" / "SCALING_TRACKER.md"
    if "1" not in tracker.load_state(path).get("backtesting", {}):  # run alone (-k): backtest
        assert run_command("python scripts/phase1_backtest.py") == 0
    state = tracker.load_state(path)
    assert state["latest"] == {}  # no phase run: nothing for the next phase's decision
    assert state["training"]["1"]["kind"] == "train"
    assert state["backtesting"]["1"]["kind"] == "backtest"
    kinds = {h["run_id"]: h["kind"] for h in state["history"]}
    assert kinds[MODEL_RUN] == "train" and "backtest" in kinds.values()
    text = path.read_text()
    training = text.split("### Training Metrics")[1].split("### Backtesting Metrics")[0]
    backtesting = text.split("### Backtesting Metrics")[1].split("### History")[0]
    assert "| 1 | " in training and "training run (no backtest)" in training
    assert f"backtest of {state['backtesting']['1']['model_run_id']}" in backtesting
    bt_run = state["backtesting"]["1"]["run_id"]
    capsys.readouterr()
    assert run_command(f"vpt compare {MODEL_RUN} {bt_run}") == 0
    out = capsys.readouterr().out
    assert "- A: phase 1 training run, SYNTHETIC data, train 2023-10-02..2023-11-30, not " in out
    assert "- B: backtest of " in out and ", backtest window " in out
    assert "A: phase 1 training run: no decision of its own" in out


HELP_CHECK = """
import contextlib, io, sys
from vpt_ray.__main__ import main
for command in ("phase", "train", "optimize"):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main([command, "--help"]) == 0
    assert out.getvalue().startswith(f"usage: vpt {command} "), out.getvalue()[:200]
    assert "N trading sessions" in " ".join(out.getvalue().split()) or command == "optimize"
print(sorted(m for m in ("ray", "xgboost", "pandas", "pydantic") if m in sys.modules))
"""


def test_run_commands_answer_help_by_their_name_without_loading_the_pipeline():
    """`vpt phase|train|optimize --help` print their usage under the name typed, without
    importing Ray, XGBoost, pandas or pydantic (seconds each: the pipeline loads only to run)."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", HELP_CHECK], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
