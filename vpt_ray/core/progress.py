"""Progress of Ray fan-outs: results are consumed as they finish, not after a barrier.

On a terminal a tqdm bar redraws in place, and log lines from any thread are written above it
(`console.bar_owns_terminal`), never through it; elsewhere (CI, `ray job logs`) one plain log line
per finished item is written instead, so logs hold no redraw garbage. A result that says where it
ran (a dict with a "node" key, `node_memory.node_label()`) names its node in the line and in the
run's placement record (`resources.note_node`). The loop is also a safe point of the memory stop:
every second it checks the run's memory flag, and on any exception (the stop, a failed task) it
cancels the tasks still pending so none keeps running after the caller gave up.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import ray
from tqdm import tqdm

from vpt_ray.core.console import bar_owns_terminal
from vpt_ray.core.memory_sampler import check_memory, note_node

log = logging.getLogger("vpt_ray.progress")
CHECK_EVERY_S = 1.0


def track(refs: dict[ray.ObjectRef, str], stage: str, unit: str = "task") -> Iterator[Any]:
    """Yield each ref's result as soon as it is ready, reporting progress and an ETA."""
    pending = list(refs)
    total, done, t0 = len(pending), 0, time.monotonic()
    interactive = sys.stderr.isatty()
    bar = tqdm(total=total, desc=stage, unit=unit, disable=not interactive, leave=False)
    owner = contextlib.ExitStack()
    owner.enter_context(bar_owns_terminal())
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=CHECK_EVERY_S)
            check_memory(f"the {stage} fan-out")  # raises MemoryLimitExceeded: a clean stop
            for ref in ready:
                result = ray.get(ref)
                done += 1
                bar.update(1)
                node = result.get("node") if isinstance(result, dict) else None
                note_node(refs[ref], node)
                if not interactive:
                    elapsed = time.monotonic() - t0
                    eta = elapsed / done * (total - done)
                    log.info(
                        "%s: %d/%d %s done (%s%s), %.0fs elapsed, ETA %.0fs",
                        stage,
                        done,
                        total,
                        unit,
                        refs[ref],
                        f" on node {node}" if node else "",
                        elapsed,
                        eta,
                    )
                yield result
    except BaseException:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        owner.close()
