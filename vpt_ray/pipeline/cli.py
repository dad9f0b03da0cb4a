"""Command-line plumbing shared by every entry point: config flags and clean failures.

CLIs parse and call; this module turns the project's expected errors (bad config, bad data, no
data, a model directory that is not complete, a damaged artifact) into one clear line on stderr
and exit code 2, a run stopped on the memory limit into exit code 3, SIGINT / SIGTERM into 130 /
143 (the run is INTERRUPTED, nothing published, this process's Ray shut down), and anything
unexpected into exit code 1 with the traceback in the run log.
"""

from __future__ import annotations

import argparse
import logging
import sys

from vpt_ray.core import interrupt
from vpt_ray.core.config import ConfigError
from vpt_ray.core.storage import ArtifactError
from vpt_ray.data.bars import BarDataError
from vpt_ray.pipeline.parsers import add_config_args as add_config_args  # their home: parsers
from vpt_ray.pipeline.parsers import add_mlflow_arg as add_mlflow_arg

log = logging.getLogger("vpt_ray")
EXIT_USER_ERROR = 2
EXIT_STOPPED = 3  # the run stopped cleanly on hardware.memory_limit_gb (verdict "stop")


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides plus the ones flags stand for (`--mlflow`)."""
    extra = ["tracking.mlflow=true"] if getattr(args, "mlflow", False) else []
    return [*args.overrides, *extra]


def user_errors() -> tuple[type[BaseException], ...]:
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
    print(f"error: {inner}", file=sys.stderr)
    return EXIT_USER_ERROR


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
