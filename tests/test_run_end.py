"""How runs end and what they leave (issue 30), piece by piece, without Ray: the run-id lock,
bounded config input, interruption through C extensions, a full disk's line, file modes, what a
failed run leaves, the tracker's latest rows, `vpt compare`'s status, the preflight checks.
The same rules run end to end in tests/test_faults.py and tests/test_damaged_inputs.py.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import tiny_overrides
from vpt_ray.core import bounded, disk_full, interrupt, run_lock, storage
from vpt_ray.core.config import ConfigError, load_config
from vpt_ray.core.run import RunContext


def test_a_second_holder_of_a_run_id_is_refused_naming_the_first(workspace):
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    first, second = RunContext(cfg, "same", root=workspace), RunContext(cfg, "same", root=workspace)
    with run_lock.exclusive(first):
        with pytest.raises(run_lock.RunIdInUse) as err, run_lock.exclusive(second):
            pass
        assert f"(pid {os.getpid()} on {socket.gethostname()}, started " in str(err.value)
        with run_lock.exclusive(RunContext(cfg, "other", root=workspace)):
            pass  # another id is free
    with run_lock.exclusive(second):  # released on the way out
        pass


def test_yaml_alias_bombs_and_huge_values_are_refused_in_bounded_text(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    levels = ["data:", "  tickers:", "    - &a [A,A,A,A,A,A,A,A,A]"]
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        levels.append(f"    - &{name} [{','.join([f'*{prev}'] * 9)}]")
    bomb.write_text("\n".join(levels) + "\n")
    tracemalloc.start()
    with pytest.raises(ConfigError, match="more than 100,000 values once its aliases"):
        load_config(1, config_path=bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # refused on reading, not after expanding 4.8 M values (hundreds of MB as Python objects)
    assert peak < 64 * 1024**2, peak
    recursive = tmp_path / "rec.yaml"
    recursive.write_text("data: &x {tickers: *x}\n")
    with pytest.raises(ConfigError, match="recursive"):
        load_config(1, config_path=recursive)
    # a legitimate alias still works
    ok = tmp_path / "ok.yaml"
    ok.write_text("search: &s {seed: 7}\ncv: {n_splits: 3}\n")
    assert load_config(1, config_path=ok).search.seed == 7
    # 50,000 bad symbols: the error is a few lines whatever the value's size
    many = tmp_path / "many.yaml"
    many.write_text("data:\n  tickers: [" + ",".join(["bad symbol"] * 50_000) + "]\n")
    with pytest.raises(ConfigError) as err:
        load_config(1, config_path=many)
    assert len(str(err.value)) < 3000 and "more characters" in str(err.value)
    assert bounded.short(list(range(10**6))).endswith("(list of 1,000,000 items)")


def test_an_impossible_date_and_non_utf8_config_name_their_origin(tmp_path):
    with pytest.raises(ConfigError, match=r"--set data.start: 2024-13-45 is not a valid value"):
        load_config(1, overrides=["data.start=2024-13-45"])
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("search:\n  seed: 3 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{latin}: not UTF-8 text \(byte 0xe9 at offset 23\)"):
        load_config(1, config_path=latin)


def test_a_signal_reported_through_a_c_extension_is_still_the_interruption():
    """What Ray did before: the handler's exception left pending inside CoreWorker.wait came
    out as a SystemError whose cause is the interruption; Ray raises KeyboardInterrupt now."""
    try:
        try:
            raise interrupt.RunInterrupted(signal.SIGTERM)
        except interrupt.RunInterrupted as inner:
            raise SystemError("<cyfunction CoreWorker.wait> returned a result") from inner
    except SystemError as exc:
        assert interrupt.as_interrupt(exc).exit_code == 143
    with interrupt.handle_signals():
        with pytest.raises(interrupt.RunInterrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        # Ray re-raises a plain KeyboardInterrupt: it stands for the signal received
        assert interrupt.as_interrupt(KeyboardInterrupt()).signal_name == "SIGTERM"
        # any error after the signal, inside the run, is the interruption's sequel
        assert interrupt.as_interrupt(RuntimeError("a task cut short")).exit_code == 143
    assert interrupt.as_interrupt(RuntimeError("x")) is None  # outside a run: a failure
    assert issubclass(interrupt.RunInterrupted, KeyboardInterrupt)


def test_a_full_disk_is_named_by_the_writer_and_found_through_wrappers(tmp_path):
    target = tmp_path / "reports" / "r" / "metrics.json"
    with pytest.raises(OSError) as err, disk_full.naming(target):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write() names no file
    assert err.value.filename == str(target)

    class RayTaskError(Exception):  # how Ray wraps a task's error: `.cause`
        def __init__(self, cause):
            self.cause = cause

    found = disk_full.find(RayTaskError(err.value))
    line = disk_full.message(found, {"paths.artifacts": tmp_path}, "the run is FAILED")
    assert line.startswith(f"disk full: No space left on device writing {target}")
    assert "(paths.artifacts)" in line and "point paths.artifacts elsewhere" in line
    assert disk_full.find(OSError("1000 requested and 8 written")) is not None  # numpy's
    assert disk_full.find(ValueError("no")) is None


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_written_files_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    """Reports, the tracker, meta.json and config.yaml were 0600 (model dirs 0700) whatever the
    umask: a colleague on a shared machine could not open a report."""
    old = os.umask(umask)
    try:
        storage.write_text_atomic(tmp_path / "summary.md", "x")
        storage.write_parquet_atomic(pa.table({"a": [1]}), tmp_path / "t.parquet")
        with storage.atomic_dir(tmp_path / "model") as d:
            storage.write_json_atomic(d / "meta.json", {})
    finally:
        os.umask(old)
    for f in ("summary.md", "t.parquet", "model/meta.json"):
        assert (tmp_path / f).stat().st_mode & 0o777 == file_mode, f
    assert (tmp_path / "model").stat().st_mode & 0o777 == dir_mode


def test_a_failed_run_takes_back_what_looks_finished_and_its_scratch(workspace):
    cfg = load_config(1, overrides=tiny_overrides(workspace))
    ctx = RunContext(cfg, "broke", root=workspace)
    ctx.mark("RUNNING")
    for name in ("metrics.json", "report.html", "summary.md", "trades.parquet"):
        (ctx.report_dir / name).write_text("from a commit cut short")
    (ctx.work_dir / "search").mkdir(parents=True)
    ctx.mark("FAILED", "OSError in stage report: no space")
    assert sorted(p.name for p in ctx.report_dir.iterdir()) == ["status.json", "summary.md"]
    assert (ctx.report_dir / "summary.md").read_text().startswith("# vpt-ray run broke: FAILED")
    assert not ctx.work_dir.exists()


def test_only_finished_phase_runs_become_a_phases_latest_row(tmp_path):
    from vpt_ray.report import tracker

    path = tmp_path / "SCALING_TRACKER.md"
    row = {"phase": 1, "run_id": "good", "samples": 1, "features": 1, "cv_accuracy": 0.5,
           "cv_auc": 0.5, "cv_log_loss": 0.7, "accuracy": 0.5, "trades": 1, "total_return": 0.0,
           "sharpe": 0.0, "max_drawdown": 0.0, "win_rate": 0.5, "notes": ""}  # fmt: skip
    tracker.update(path, row)
    tracker.update(path, {**row, "run_id": "capped", "status": "STOPPED", "synthetic": None})
    state = tracker.load_state(path)
    assert state["latest"]["1"]["run_id"] == "good"
    assert [r["run_id"] for r in state["history"]] == ["capped", "good"]


def test_compare_shows_each_runs_status(workspace, capsys):
    from vpt_ray.compare import main

    arts = workspace / "artifacts"
    for rid, status in (("A", "FINISHED"), ("B", "STOPPED")):
        d = arts / "reports" / rid
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"run_id": rid, "phase": 1}))
        (d / "status.json").write_text(json.dumps({"run_id": rid, "status": status}))
    assert main(["A", "B", "--artifacts", str(arts)]) == 0
    assert "| status | FINISHED | STOPPED |" in capsys.readouterr().out


def test_distributed_on_one_cpu_is_refused_before_any_compute():
    from vpt_ray.pipeline import preflight

    cfg = load_config(1, overrides=["model.backend=distributed"])
    with pytest.raises(ConfigError, match="needs at least 2 CPUs in Ray.*Ray has 1"):
        preflight.check(cfg, {"num_cpus": 1})
    preflight.check(cfg, {"num_cpus": 2})
    preflight.check(load_config(1), {"num_cpus": 1})  # the local backend runs on one


def test_an_empty_run_id_is_refused_not_replaced(workspace):
    from vpt_ray.pipeline.phase import run_phase

    with pytest.raises(ConfigError, match="--run-id '': a run id is a name"):
        run_phase(load_config(1, overrides=tiny_overrides(workspace)), run_id="")
    assert not Path(workspace / "artifacts" / "reports").exists()
