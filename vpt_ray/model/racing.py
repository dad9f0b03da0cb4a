"""Statistical racing of the search's trials over the CV folds (`search.scheduler: race`).

Why: the search's trials differ by less than the noise of their own scores (phase 4 as shipped:
16 configurations whose Sharpe ratios spread 0.019 against one Sharpe's SE of 0.057), so most of
its time bought a choice that a coin could have made. Racing (F-Race, Birattari et al. 2002;
irace, Lopez-Ibanez et al. 2016) spends the budget where the evidence still points: the folds are
the blocks, and each trial is compared with the best trial that fitted every fold, on the folds
both have fitted, by a paired one-sided t-test of the per-fold validation log loss differences
(Student's t with folds - 1 degrees of freedom: the per-fold levels differ, the pairing removes
them).

- A running trial that is worse than the best by more than the test's margin after at least
  `max(2, search.grace_folds)` folds is stopped there (it cannot win on the remaining folds
  unless the evidence so far is wrong at level `search.race_alpha`).
- The search is settled, and ends, once at least `search.race_min_trials` trials that fitted
  every fold tie for first place: none of them is worse than the best by the test at
  `race_alpha` (the others were). The choice among them is within the noise, and more draws
  from the same space would only add to the tie. Trials still running are then stopped and
  recorded as such; trials not started are not counted as tried. When one configuration is
  clearly better than the rest, nothing ties with it and the search goes on to its trial count.

Plain Python on per-fold losses (no Ray here); `RaceScheduler` and `RaceSettled` are the thin Tune
adapters `vpt_ray.model.search` plugs in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper
from scipy import stats

FOLD_LOSS = (
    "fold_val_log_loss"  # in every trial report: the validation log loss of the fold just fitted
)


@dataclass(frozen=True)
class Comparison:
    """One trial against the best on the folds both fitted: mean loss difference (trial - best),
    its SE over the folds, the one-sided critical value and what the test says."""

    folds: int
    mean_diff: float
    se: float
    t_crit: float

    @property
    def worse(self) -> bool:
        """The trial's loss is above the best's beyond the margin (it is stopped)."""
        return self.folds >= 2 and self.mean_diff - self.t_crit * self.se > 0


def compare(losses: list[float], best: list[float], alpha: float) -> Comparison:
    """Paired comparison of a trial's per-fold losses with the best's, on their common folds."""
    k = min(len(losses), len(best))
    d = np.asarray(losses[:k], dtype=float) - np.asarray(best[:k], dtype=float)
    if k < 2:
        return Comparison(k, float(d.mean()) if k else math.nan, math.nan, math.nan)
    se = float(d.std(ddof=1) / math.sqrt(k))
    return Comparison(k, float(d.mean()), se, float(stats.t.ppf(1.0 - alpha, k - 1)))


@dataclass
class Race:
    """The race's state: each trial's per-fold losses in fold order, who fitted every fold and
    who was stopped, and why."""

    n_folds: int
    alpha: float = 0.05
    min_trials: int = 4
    grace_folds: int = 2
    losses: dict[str, list[float]] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    settled_reason: str | None = None

    def record(self, trial: str, fold_loss: float) -> None:
        self.losses.setdefault(trial, []).append(float(fold_loss))

    def complete(self) -> dict[str, list[float]]:
        return {t: v for t, v in self.losses.items() if len(v) >= self.n_folds}

    def best(self) -> str | None:
        """The complete trial with the lowest mean loss (the one the search would choose)."""
        done = self.complete()
        return min(done, key=lambda t: float(np.mean(done[t]))) if done else None

    def verdict(self, trial: str) -> str | None:
        """Why `trial` should stop now (None: it goes on). Called after each of its folds."""
        got = self.losses.get(trial, [])
        best = self.best()
        if best is None or best == trial or len(got) >= self.n_folds:
            return None
        if len(got) < max(2, self.grace_folds):
            return None
        c = compare(got, self.losses[best], self.alpha)
        if not c.worse:
            return None
        reason = (
            f"worse than the best trial on {c.folds} folds: log loss +{c.mean_diff:.5f} "
            f"(SE {c.se:.5f}, t {c.mean_diff / c.se if c.se else math.inf:.2f} > "
            f"{c.t_crit:.2f} at alpha {self.alpha:g})"
        )
        self.stopped[trial] = reason
        return reason

    def settle(self) -> str | None:
        """Why the search can end now (None: not yet); sets `settled_reason` once. It ends when
        at least `min_trials` trials that fitted every fold tie for first place: none of them is
        worse than the best by the test (the others were), so the choice among them is within
        the noise and more draws from the same space would only add to the tie."""
        if self.settled_reason is not None:
            return self.settled_reason
        done = self.complete()
        best = self.best()
        if best is None:
            return None
        ties = [t for t, v in done.items() if not compare(v, done[best], self.alpha).worse]
        if len(ties) < self.min_trials:
            return None
        widest = max(float(np.mean(done[t]) - np.mean(done[best])) for t in ties)
        self.settled_reason = (
            f"{len(ties)} of the {len(done)} trials that fitted every fold cannot be told apart "
            f"from the best (paired t-tests over the {self.n_folds} folds at alpha "
            f"{self.alpha:g}; widest mean log loss difference {widest:.5f}), the others were "
            "worse: the choice among them is within the noise"
        )
        return self.settled_reason


class RaceScheduler(FIFOScheduler):
    """Tune's side of the race: records each fold's loss as trials report and stops a trial the
    race has dropped."""

    def __init__(self, race: Race) -> None:
        super().__init__()
        self.race = race

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:  # noqa: ANN001
        if FOLD_LOSS in result:
            self.race.record(trial.trial_id, result[FOLD_LOSS])
        if self.race.verdict(trial.trial_id) is not None:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


class RaceSettled(Stopper):
    """Ends the whole search once the race is settled (`Race.settle`)."""

    def __init__(self, race: Race) -> None:
        self.race = race

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.race.settle() is not None
