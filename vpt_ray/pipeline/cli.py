"""Command-line plumbing shared by every entry point: config flags and clean failures.

CLIs parse and call; this module turns the project's expected errors (bad config, bad data, no
data, a model directory that is not complete, a damaged artifact) into one clear line on stderr
and exit code 2, a run stopped on the memory limit into exit code 3, SIGINT / SIGTERM into 130 /
143 (the run is INTERRUPTED, nothing published, this process's Ray shut down), a full disk into
one line naming where (`vpt_ray.core.disk_full`, exit 1), and anything unexpected into one line
and exit code 1, with the traceback in the run log (or on the console with VPT_RAY_TRACEBACK=1).
Every command's `main` goes through `guarded`, so no input makes a command print a traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vpt_ray.core import disk_full, interrupt
from vpt_ray.core.bounded import bounded_lines, short
from vpt_ray.core.console import RUN_LOG_ONLY
from vpt_ray.pipeline.parsers import add_config_args as add_config_args  # their home: parsers
from vpt_ray.pipeline.parsers import add_mlflow_arg as add_mlflow_arg

log = logging.getLogger("vpt_ray")
EXIT_USER_ERROR = 2
EXIT_STOPPED = 3  # the run stopped cleanly on hardware.memory_limit_gb (verdict "stop")
EXIT_FAILED = 1
TRACEBACK_ENV = "VPT_RAY_TRACEBACK"  # set: an unexpected error's traceback on the console too

if TYPE_CHECKING:
    from vpt_ray.core.config import Config


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides plus the ones flags stand for (`--mlflow`)."""
    extra = ["tracking.mlflow=true"] if getattr(args, "mlflow", False) else []
    return [*args.overrides, *extra]


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user's input causes. Imported here, when a command fails: `--help` and
    parsing load neither pandas nor pydantic."""
    from vpt_ray.core.config import ConfigError
    from vpt_ray.core.storage import ArtifactError
    from vpt_ray.data.bars import BarDataError
    from vpt_ray.data.chain import DataUnavailableError

    errors: list[type[BaseException]] = [
        ConfigError,
        BarDataError,
        DataUnavailableError,
        ArtifactError,
    ]
    try:
        from vpt_ray.data.errors import SourceError

        errors.append(SourceError)
    except ImportError:
        pass
    errors.append(FileNotFoundError)
    return tuple(errors)


def unwrap(exc: BaseException) -> BaseException:
    """The user's error inside a Ray task failure, if there is one."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def user_error_exit(exc: BaseException) -> int | None:
    """EXIT_USER_ERROR after printing the error's one line, when `exc` is (or wraps, through a Ray
    task) a user error: bad config, bad data; None for anything else, which the caller re-raises
    or reports."""
    inner = unwrap(exc)
    if not isinstance(inner, user_errors()):
        return None
    print(f"error: {bounded_lines(str(inner))}", file=sys.stderr)
    return EXIT_USER_ERROR


def run_locations(cfg: Config | None) -> dict[str, Path]:
    """The local `paths.*` of a run, for naming the full one (`disk_full.message`)."""
    if cfg is None:
        return {}
    p = cfg.paths
    named = {"paths.artifacts": p.artifacts, "paths.logs": p.logs, "paths.cache": p.cache}
    named["paths.tracker"] = str(Path(p.tracker).parent)
    return {k: Path(v).absolute() for k, v in named.items() if v and "://" not in str(v)}


def failure_exit(
    exc: BaseException,
    locations: dict[str, Path] | None = None,
    log_path: str | Path | None = None,
    outcome: str = "",
) -> int:
    """Print one line for any failure of a command and return its exit code: a user error 2, a
    signal 130 / 143, a full disk 1 naming where (`locations`: the command's `paths.*`), anything
    else 1 with its type and message; the traceback goes to the run log (`log_path`) only.
    `outcome` says what became of the command's work (a run: FAILED, nothing published)."""
    if (code := user_error_exit(exc)) is not None:
        return code
    if (stop := interrupt.as_interrupt(exc)) is not None:
        return interrupted_exit(stop)
    log.error("failed", exc_info=exc, extra=RUN_LOG_ONLY)  # the traceback: the run log only
    if os.environ.get(TRACEBACK_ENV):
        traceback.print_exception(exc, file=sys.stderr)
    if (full := disk_full.find(exc)) is not None:
        print(f"error: {disk_full.message(full, locations or {}, outcome)}", file=sys.stderr)
        return EXIT_FAILED
    inner = unwrap(exc)
    where = f"traceback in {log_path}" if log_path else f"{TRACEBACK_ENV}=1 shows the traceback"
    tail = f"; {outcome}" if outcome else ""
    text = " ".join(short(str(inner), 500).split())
    print(f"error: {type(inner).__name__}: {text}{tail} ({where})", file=sys.stderr)
    return EXIT_FAILED


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    """A command's `main` that ends in one line and an exit code whatever goes wrong
    (`failure_exit`); argparse's own exits (usage errors: 2, --help: 0) pass through."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure becomes one line
            return failure_exit(exc)

    return run


def interrupted_exit(stop: interrupt.RunInterrupted) -> int:
    """130 / 143 after one line, once this process's Ray is shut down (the local cluster it
    started goes with it; a joined cluster keeps running, without this driver's tasks)."""
    with interrupt.held():
        run = getattr(stop, "run_id", None)
        what = f"run {run} marked INTERRUPTED" if run else "stopped"
        print(
            f"interrupted: {stop.signal_name} received; {what}: no model, report or tracker "
            "row published and nothing partial cached",
            file=sys.stderr,
        )
        import ray

        if ray.is_initialized():
            ray.shutdown()
    return stop.exit_code
