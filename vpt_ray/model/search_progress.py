"""Progress of the Tune search: one log line per finished trial with the best so far and an ETA.

Why a callback: Tune's own progress tables redraw and are noisy in `ray job logs`; the search runs
with `verbose=0`, so without this a long search is silent. One plain line per trial reads the same
on a terminal, in the run log and in a job's logs. With ASHA racing (`search.scheduler: asha`) a
trial stopped at a rung gets its own line (folds fitted, running loss) and never counts as the best:
only trials that fitted every fold can be chosen.
"""

from __future__ import annotations

import logging
import math
import time

from ray.tune import Callback

from vpt_ray.core.memory_sampler import note_node

log = logging.getLogger("vpt_ray.search_progress")


class SearchProgress(Callback):
    """Logs `search: 3/8 trials done, this 0.69041, best 0.69017 (trial ..), 41s elapsed, ETA 68s`.

    total: trials requested (`search.num_samples`); metric/mode: the search objective;
    time_budget_s: the search's budget, which caps the ETA; folds: folds a complete trial fits
    (a trial whose last result has fewer `folds_done` was stopped early).
    """

    def __init__(
        self,
        total: int,
        metric: str,
        mode: str = "min",
        time_budget_s: float | None = None,
        folds: int | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"SearchProgress: mode = {mode!r}: must be 'min' or 'max'")
        if total < 1:
            raise ValueError(f"SearchProgress: total = {total}: must be >= 1")
        if folds is not None and folds < 1:
            raise ValueError(f"SearchProgress: folds = {folds}: must be >= 1 or None")
        self.total, self.metric, self.mode = total, metric, mode
        self.time_budget_s = time_budget_s
        self.folds = folds
        self.done = 0
        self.failed = 0
        self.stopped = 0
        self.best: float | None = None
        self.best_trial: str | None = None
        self.t0: float | None = None
        self.logged: set[str] = set()  # trials whose line is out

    def _elapsed(self) -> float:
        if self.t0 is None:
            self.t0 = time.monotonic()
        return time.monotonic() - self.t0

    def setup(self, **info) -> None:
        self.t0 = time.monotonic()

    def eta(self, elapsed: float) -> float:
        """Seconds left at the mean pace so far, capped by the time budget's remainder."""
        finished = self.done + self.failed
        left = elapsed / max(finished, 1) * (self.total - finished)
        if self.time_budget_s:
            left = min(left, max(0.0, self.time_budget_s - elapsed))
        return left

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        """A trial's last fold reported: its line now. The race can end the search on this very
        result (`model.racing`), and Tune then stops the trial without completing it."""
        if self.folds and result.get("folds_done") == self.folds:
            self._finished(trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._finished(trial, trial.last_result or {})

    def _finished(self, trial, result: dict) -> None:  # noqa: ANN001 - a Tune Trial
        if trial.trial_id in self.logged:
            return
        self.logged.add(trial.trial_id)
        elapsed = self._elapsed()
        self.done += 1
        value = result.get(self.metric)
        fitted = result.get("folds_done")
        if self.folds and isinstance(fitted, int) and fitted < self.folds:
            self.stopped += 1
            log.info(
                "search: %d/%d trials done, trial %s stopped early after %d/%d folds "
                "(running %s %s), %d stopped so far, %.0fs elapsed, ETA %.0fs",
                self.done + self.failed,
                self.total,
                trial.trial_id,
                fitted,
                self.folds,
                self.metric,
                f"{value:.5f}" if isinstance(value, int | float) else "n/a",
                self.stopped,
                elapsed,
                self.eta(elapsed),
            )
            return
        node = result.get("node")
        note_node(f"trial {trial.trial_id}", node)
        this = "n/a"
        if isinstance(value, int | float) and math.isfinite(value):
            this = f"{value:.5f}"
            better = self.best is None or (
                value < self.best if self.mode == "min" else value > self.best
            )
            if better:
                self.best, self.best_trial = float(value), trial.trial_id
        best = "n/a" if self.best is None else f"{self.best:.5f} (trial {self.best_trial})"
        log.info(
            "search: %d/%d trials done%s, %s %s, best %s, %.0fs elapsed, ETA %.0fs",
            self.done + self.failed,
            self.total,
            f" (trial {trial.trial_id} on node {node})" if node else "",
            self.metric,
            this,
            best,
            elapsed,
            self.eta(elapsed),
        )

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        elapsed = self._elapsed()
        self.failed += 1
        log.warning(
            "search: trial %s failed (%d failed so far), %d/%d trials finished, ETA %.0fs",
            trial.trial_id,
            self.failed,
            self.done + self.failed,
            self.total,
            self.eta(elapsed),
        )
