"""The run's console log follows `sys.stderr`: a second run in one process (a test after another,
a caller that redirected stderr) logs to the stream of now, never to one closed since."""

from __future__ import annotations

import io
import logging
import sys

from vpt_ray.core.run import setup_logging


def test_console_log_writes_to_the_current_stderr_after_the_first_one_closed(monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging(None)
    logging.getLogger("vpt_ray.test").warning("first run")
    assert "first run" in first.getvalue()
    first.close()  # as pytest closes a finished test's capture
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    setup_logging(None)  # idempotent: the same handler, no second one
    logging.getLogger("vpt_ray.test").warning("second run")
    consoles = logging.getLogger("vpt_ray").handlers
    assert sum(getattr(h, "_vpt_console", False) for h in consoles) == 1
    assert second.getvalue().endswith("WARNING vpt_ray.test: second run\n")
