"""Shared fixtures: one local Ray cluster per test session, tiny configs, temp workspaces."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("VPT_RAY_NO_DASHBOARD", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Keep up to 4 idle Ray workers (Ray's default: as many as CPUs, 2 here). While a search's trial
# actors run, Ray would otherwise kill the 2 idle task workers, and the backtest after it spawn 2
# new ones that import pandas, XGBoost and scikit-learn again (bench/bench_worker_reuse.py: a
# tiny phase 31.4 -> 12.9 CPU s). Only how long an idle worker lives changes, no result. Every
# Ray this session starts inherits it: the session's, the CLI subprocesses', the job tests' nodes.
os.environ.setdefault("RAY_num_workers_soft_limit", "4")

REPO = Path(__file__).resolve().parent.parent

TINY = [
    "data.tickers=[AAA,BBB]",
    "data.start=2024-01-02",
    "data.end=2024-02-29",
    "backtest.start=2024-03-05",
    "backtest.end=2024-03-28",
    "data.sources=[local,synthetic]",
    "search.num_samples=2",
    # one trial at a time on both CPUs: Tune reuses one trial actor for both trials instead of
    # starting two (a new process each, ~3.4 CPU s of imports; 17 -> 12 CPU s a tiny phase).
    # The known-truth chains' phases 4-5, the null chains and the job tests keep 1 CPU a trial.
    "search.cpus_per_trial=2",
    "model.n_estimators=60",
    "cv.n_splits=2",
    "hardware.num_cpus=2",
    "hardware.object_store_gb=1",
    # a few weeks of 2 tickers: the strong edge makes the signal show (the demo default is weaker)
    "synthetic.signal_strength=strong",
]


# The files whose module fixtures run the most (CPU seconds of a serial run on the 2-core
# machine, heaviest first). Sent to the workers first, so the short files fill in around them and
# no long file starts last.
HEAVY_FILES = (
    "test_jobs.py",
    "test_known_truth.py",
    "test_audit.py",
    "test_faults.py",
    "test_search_scaling.py",
    "test_phase.py",
    "test_html_report.py",
    "test_train_backends.py",
    "test_resume.py",
    "test_interrupt.py",
    "test_real_data.py",
    "test_oracle.py",
)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core, at most 4 (each starts a local Ray cluster)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def pytest_collection_modifyitems(config, items) -> None:
    """The heaviest files first (stable: within a file, and among the rest, collection order)."""
    rank = {name: i for i, name in enumerate(HEAVY_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once for the whole session (a few seconds), shared by every Ray test."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            object_store_memory=512 * 1024**2,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A temp directory holding data/, artifacts/ and logs/ for one run."""
    for d in ("data", "artifacts", "logs"):
        (tmp_path / d).mkdir()
    return tmp_path


def tiny_overrides(ws: Path, *extra: str) -> list[str]:
    return [
        *TINY,
        f"data.dir={ws / 'data'}",
        f"paths.artifacts={ws / 'artifacts'}",
        f"paths.logs={ws / 'logs'}",
        f"paths.tracker={ws / 'artifacts' / 'SCALING_TRACKER.md'}",
        *extra,
    ]


@contextlib.contextmanager
def fresh_console() -> Iterator[None]:
    """Let `run.setup_logging` make its console handler on the current (captured) stderr, and
    drop it afterwards: the one an earlier test made writes to a stream pytest has closed."""

    def drop() -> None:
        root = logging.getLogger("vpt_ray")
        for h in [h for h in root.handlers if getattr(h, "_vpt_console", False)]:
            root.removeHandler(h)

    drop()
    try:
        yield
    finally:
        drop()


def cli_error_line(ws: Path, capsys, run_id: str, *extra: str) -> str:
    """Run phase 1 through the CLI path on `ws` with `extra` settings, expect exit 2 and
    return its one `error:` line (no traceback on the console)."""
    from vpt_ray.pipeline.phase import run_cli

    args = argparse.Namespace(
        phase=1,
        config=None,
        overrides=tiny_overrides(ws, *extra),
        run_id=run_id,
        sample_days=None,
        force=False,
    )
    with fresh_console():  # the run's console log writes to this test's stderr
        assert run_cli(args) == 2
    out = capsys.readouterr().err  # the console log may go to stderr too
    err = [line for line in out.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "Traceback" not in out, out[-2000:]
    return err[0]
