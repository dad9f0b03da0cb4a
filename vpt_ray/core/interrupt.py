"""SIGINT and SIGTERM end a run as INTERRUPTED, including inside Ray Tune.

Why: left alone, Ctrl-C inside `Tuner.fit` is caught by Tune's own SIGINT handler, which ends the
search as if it had finished; the run then went on with the trials done so far, published a model,
wrote a tracker row and cached the partial search as if it were complete. SIGTERM (a scheduler,
`kill`, `ray job stop`) hit Ray's driver handler (`sys.exit`) and marked the run FAILED.

How: `handle_signals()` wraps a run (main thread only). The first SIGINT or SIGTERM raises
`RunInterrupted` at the next bytecode. It is a KeyboardInterrupt (so no `except Exception` in
library code swallows it) because of where a signal usually lands: inside Ray's C calls
(`ray.get`, `ray.wait`, Ray Train's fit), which run the handler from `check_signals` and end the
wait cleanly on a KeyboardInterrupt only. Any other exception raised there was left pending: the
wait went on until its result came (the distributed fit noticed a SIGTERM 78 s late) and then
surfaced as `SystemError: <cyfunction CoreWorker.wait> returned a result with an exception set`,
and the run ended FAILED. Ray re-raises a plain KeyboardInterrupt; `as_interrupt` turns it back
into the signal that was received. Inside a `graceful()` block (Tune's fit) the first signal
only records itself: the search's stopper polls `requested()` on every step of Tune's loop, Tune
stops its trials and returns, and `graceful()` raises `RunInterrupted` on exit. A second signal
raises at once. `RunInterrupted.exit_code` is the shell's convention: 130 for SIGINT, 143 for
SIGTERM. Costs nothing while no signal arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger("vpt_ray.interrupt")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # signals seen since handle_signals() was entered
_graceful = [0]  # depth of graceful() blocks
_deferred = [0]  # depth of deferred() blocks
_active = [0]  # depth of handle_signals() blocks


class RunInterrupted(KeyboardInterrupt):
    """The run received SIGINT or SIGTERM and stopped: nothing is published. A KeyboardInterrupt,
    so Ray's C calls stop waiting when it is raised inside them (see the module's docstring)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"{self.signal_name} received")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def as_interrupt(exc: BaseException) -> RunInterrupted | None:
    """`exc` as an interruption, or None for anything else: ours; a KeyboardInterrupt (what Ray
    raises when our handler fired inside its C calls, or SIGINT under Python's own handler),
    which stands for the signal the run received (SIGINT if none was recorded); an error whose
    cause or context is one of those (a C extension that reported the pending interrupt as a
    SystemError, a library that wrapped it); or, inside `handle_signals`, any error raised after
    the run received a signal (a Ray task cancelled by it, a stage cut short): the run stopped
    because it was asked to."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, RunInterrupted):
            return cur
        if isinstance(cur, KeyboardInterrupt):
            return RunInterrupted(requested() or signal.SIGINT)
        cur = cur.__cause__ or cur.__context__
    if _active[0] and _received:  # inside a run that was signalled: the error is its sequel
        return RunInterrupted(_received[0])
    return None


def _handler(signum: int, frame: object) -> None:
    first = not _received
    _received.append(signum)
    name = signal.Signals(signum).name
    if _deferred[0]:
        if first:
            log.warning("%s received: stopping once the current library call returns", name)
        return
    if first and _graceful[0]:
        log.warning(
            "%s received: stopping the search's trials, then the run (send it again to stop "
            "at once)",
            name,
        )
        return
    raise RunInterrupted(signum)


def install() -> None:
    """(Re)install the run's handlers: `ray.init` replaces SIGTERM's with its own `sys.exit`,
    so the phase calls this again once Ray is up. A no-op outside the main thread and outside
    `handle_signals` (a library function calling it must not take over a caller's signals)."""
    if _active[0] and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _handler)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """For the duration of a run: SIGINT and SIGTERM raise `RunInterrupted`; the previous
    handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _received.clear()
    _active[0] += 1
    install()
    try:
        yield
    finally:
        _active[0] -= 1
        if not _active[0]:
            _received.clear()  # what the run received is its own: code after it starts clean
        for s, h in previous.items():
            signal.signal(s, h)


def requested() -> int | None:
    """The first signal received during the run, or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise `RunInterrupted` if a signal arrived (for code that held it back)."""
    if _received:
        raise RunInterrupted(_received[0])


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """A block that ends on its own terms when signalled (Ray Tune's `fit`): the first signal
    only sets `requested()`, which the block's stopper polls; `RunInterrupted` is raised when the
    block returns. Keeps Tune from installing its SIGINT handler (`TUNE_DISABLE_SIGINT_HANDLER`),
    which would otherwise swallow Ctrl-C and end the search as if it had finished."""
    saved = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _graceful[0] += 1
    try:
        yield
    except Exception:
        check()  # an error caused by the interruption (a trial killed by it) is the interruption
        raise
    finally:
        _graceful[0] -= 1
        if saved is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved
    check()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block of C code that calls back into Python (XGBoost's `QuantileDMatrix` pulling its
    data iterator): no signal raises inside it, since an exception raised in a ctypes callback
    is printed and dropped there and leaves the library's state inconsistent (XGBoost then
    failed with `vector::_M_range_check` or aborted the process). Signals are recorded; the
    callbacks poll `requested()` to end early; `RunInterrupted` is raised when the block ends."""
    _deferred[0] += 1
    try:
        yield
    finally:
        _deferred[0] -= 1
    check()


@contextlib.contextmanager
def held() -> Iterator[list[int]]:
    """Signals arriving inside are recorded, not raised: for the few file operations that commit
    a finished run (tracker row, model, final status), which must happen all or not at all.
    Yields the list of signals held."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    got: list[int] = []
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
