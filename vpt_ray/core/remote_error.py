"""Errors raised inside Ray workers, brought back to the driver as themselves.

Why: Ray Data wraps an exception raised in a map function in `UserCodeException("UDF failed to
process a data block")` and the original type and message survive only inside a traceback
string, so a bad bar file ended a run with that sentence alone. A map function therefore catches
its error and returns it as a value (`capture`); the driver raises the original exception
(`reraise`), which the CLI turns into one line and exit code 2 when it is a user error (bad
data, missing data). The worker's traceback goes to the run log. Plain Ray tasks need no help:
Ray re-raises a picklable exception as a subclass of its own type (`cli.unwrap` takes `.cause`).
"""

from __future__ import annotations

import logging
import pickle
import traceback

log = logging.getLogger("vpt_ray.remote_error")


def capture(exc: BaseException) -> bytes:
    """`exc` and its traceback text, pickled; an unpicklable exception becomes a RuntimeError
    carrying its type and message."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)  # an exception whose __init__ cannot take its args fails here
    except Exception:  # noqa: BLE001 - any pickling failure: fall back to the message
        blob = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return pickle.dumps((blob, text))


def reraise(captured: bytes, where: str) -> None:
    """Raise the exception `capture` packed; its worker traceback is logged at DEBUG."""
    blob, text = pickle.loads(captured)
    exc = pickle.loads(blob)
    log.debug("error in %s, worker traceback:\n%s", where, text)
    raise exc
