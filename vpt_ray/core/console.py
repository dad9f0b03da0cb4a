"""Who writes to the terminal during a run: vpt-ray's log lines and its own progress bar, nothing
else.

Why: Ray's libraries each draw on the terminal on their own. Ray Data redraws its progress bars
several times a second from the driver, Tune prints a configuration box and a TensorBoard hint
(for a temporary directory, with TensorBoard not installed), and the run's log lines land in the
middle of those redraws. Here the run takes the terminal back: Ray Data's bars are off and its
console logger shows warnings only (its full log stays in Ray's session log), Tune writes no
TensorBoard files, and whatever a library prints to stdout while the search runs goes to the run
log instead (`library_output_to_log`). Progress comes from vpt-ray's own lines
(`vpt_ray.model.search_progress`, the feature store's per-ticker lines) and the one tqdm bar of
`vpt_ray.core.progress`, which log lines are written above, never through (`bar_owns_terminal`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger("vpt_ray.console")
RUN_LOG_ONLY = {"console": False}  # `extra=` for a record that belongs in the run log only


class ConsoleFilter(logging.Filter):
    """Drops records logged with `extra=RUN_LOG_ONLY` from the console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


def quiet_libraries() -> None:
    """Turn off Ray's own terminal output for this process (idempotent; call after ray.init)."""
    # Tune's automatic loggers include TensorBoard's (tensorboardX comes with ray[tune]); the
    # search passes Tune's CSV and JSON loggers itself (`tune_loggers`), so the trial results
    # stay on disk without TensorBoard's event files and the hint that points at them.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # gRPC (inside Ray's core worker) leaves absl's log level alone unless GRPC_VERBOSITY is set,
    # so its INFO lines reach the terminal: "chttp2_transport.cc ... Got goaway" as the driver
    # disconnects at the end of every run. ERROR is gRPC's documented default; set before
    # ray.init, the raylet and the workers inherit it.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    auth = logging.getLogger(RAY_AUTH_LOGGER)
    if not any(isinstance(f, _TokenNotice) for f in auth.filters):
        auth.addFilter(_TokenNotice())
    try:
        import ray.data
    except ImportError:  # pragma: no cover - ray[data] is a dependency
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console" and not any(  # Ray Data's own console handler
            isinstance(f, _NoBarNotice) for f in handler.filters
        ):
            handler.setLevel(logging.WARNING)
            handler.addFilter(_NoBarNotice())


RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _TokenNotice(logging.Filter):
    """Moves Ray's notice that a local `ray.init()` turned token authentication on (Ray 2.60's
    default, printed on every run) to the run log. Ray's warning that authentication is *off*
    stays on the console: that one asks for action."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not text.startswith("Token authentication is enabled for this Ray cluster"):
            return True
        log.info("Ray: %s", text, extra=RUN_LOG_ONLY)
        return False


class _NoBarNotice(logging.Filter):
    """Drops Ray Data's notice that its progress bars are off (we turned them off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "progress bars" not in str(record.msg).lower()


def tune_loggers() -> list:
    """Tune's CSV and JSON result loggers (what its automatic loggers add, minus TensorBoard)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [CSVLoggerCallback(), JsonLoggerCallback()]


class _LineLogger(io.TextIOBase):
    """A text stream that logs each complete line to the run log only."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger, self.buf = logger, ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.strip():
                self.logger.info("%s", line.rstrip(), extra=RUN_LOG_ONLY)
        return len(s)

    def flush(self) -> None:
        if self.buf.strip():
            self.logger.info("%s", self.buf.rstrip(), extra=RUN_LOG_ONLY)
        self.buf = ""


@contextlib.contextmanager
def library_output_to_log(name: str) -> Iterator[None]:
    """Send what libraries print to stdout inside the block (Tune's experiment box, "View
    detailed results here") to the run log, tagged with `name`, instead of the terminal."""
    stream = _LineLogger(logging.getLogger(f"vpt_ray.{name}"))
    with contextlib.redirect_stdout(stream):
        try:
            yield
        finally:
            stream.flush()


class _Tee(io.TextIOBase):
    """A text stream writing to `out` and, line by line, to the run log only."""

    def __init__(self, out: io.TextIOBase, log_lines: _LineLogger) -> None:
        self.out, self.log_lines = out, log_lines

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.out.write(s)
        self.log_lines.write(s)
        return len(s)

    def flush(self) -> None:
        self.out.flush()


@contextlib.contextmanager
def also_to_run_log(name: str) -> Iterator[None]:
    """What the block prints (a run's summary and decision) stays on stdout and is written to
    the run log as well, tagged `vpt_ray.{name}`: the log holds what the console showed."""
    lines = _LineLogger(logging.getLogger(f"vpt_ray.{name}"))
    with contextlib.redirect_stdout(_Tee(sys.stdout, lines)):
        try:
            yield
        finally:
            lines.flush()


def interactive() -> bool:
    """Whether the console is a terminal (progress bars redraw) or a file/pipe (plain lines)."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def bar_owns_terminal() -> Iterator[None]:
    """While a tqdm bar is drawn, write vpt-ray's console log lines above it (tqdm.write), so a
    line from another thread (the memory sampler, a stage) never lands inside the bar."""
    if not interactive():
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger("vpt_ray")]):
        yield
