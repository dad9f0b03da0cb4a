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
  every fold tie for first place: the test at `race_alpha` does not find them worse than the
  best, or their mean validation log loss is within one SE of the best's score (the folds' own
  sampling noise: a consistent difference of 1e-5 in log loss is real but below what one score
  resolves, and no choice can rest on it). The choice among them is within the noise, and more
  draws from the same space would only add to the tie. Trials still running are then stopped and
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

FOLD_LOSS = "fold_val_log_loss"  # in every trial report: the log loss of the fold just fitted
FOLD_LOSS_SE = "fold_val_log_loss_se"  # and its SE (per-sample losses, effective samples)


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
    ses: dict[str, list[float]] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    settled_reason: str | None = None

    def record(self, trial: str, fold_loss: float, fold_se: float = math.nan) -> None:
        self.losses.setdefault(trial, []).append(float(fold_loss))
        self.ses.setdefault(trial, []).append(float(fold_se))

    def score_se(self, trial: str) -> float:
        """SE of the trial's mean loss over its folds (the folds' own sampling noise; NaN when
        a fold's is unknown): how finely one score can tell configurations apart."""
        se = np.asarray(self.ses.get(trial, []), dtype=float)
        if not len(se) or not np.isfinite(se).all():
            return math.nan
        return float(np.sqrt(np.sum(se**2)) / len(se))

    def ties(self) -> list[str]:
        """Complete trials that cannot be told apart from the best: the paired test does not
        find them worse, or their mean loss is within one SE of the best's score (a difference
        below what one score resolves, however consistent across folds)."""
        done, best = self.complete(), self.best()
        if best is None:
            return []
        noise = self.score_se(best)
        out = []
        for t, v in done.items():
            gap = float(np.mean(v) - np.mean(done[best]))
            if not compare(v, done[best], self.alpha).worse or (
                math.isfinite(noise) and gap <= noise
            ):
                out.append(t)
        return out

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
        at least `min_trials` trials that fitted every fold tie for first place (`ties`): the
        choice among them is within the noise, and more draws from the same space would only
        add to the tie."""
        if self.settled_reason is not None:
            return self.settled_reason
        done, best, ties = self.complete(), self.best(), self.ties()
        if best is None or len(ties) < self.min_trials:
            return None
        widest = max(float(np.mean(done[t]) - np.mean(done[best])) for t in ties)
        self.settled_reason = (
            f"{len(ties)} of the {len(done)} trials that fitted every fold cannot be told apart "
            f"from the best (paired t-tests over the {self.n_folds} folds at alpha "
            f"{self.alpha:g}, or a mean log loss within the best score's SE "
            f"{self.score_se(best):.5f}; widest difference {widest:.5f}): the choice among them "
            "is within the noise"
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
            se = result.get(FOLD_LOSS_SE, math.nan)
            self.race.record(trial.trial_id, result[FOLD_LOSS], math.nan if se is None else se)
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
