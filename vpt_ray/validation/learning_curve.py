"""A learning curve's points and their noise: which training sessions a fraction keeps, each
point's out-of-sample figures against the naive predictor, and bootstrap replicates of every
point at once.

Why it exists: whether more data still pays is read off the curve of OOS accuracy against the
training size (`vpt_ray.validation.scaling` fits and extrapolates it). Its points are refits of
the chosen configuration on nested fractions of the training sessions, all scored on the same
out-of-sample labels, so their errors are strongly correlated: the level of the whole curve
moves with the window's luck, the differences between points much less. The bootstrap here
therefore resamples whole blocks of the OOS window (a session of every ticker, or `horizon`
sessions of daily bars, whose labels overlap) once per replicate and rescores every point on
the same draw, which keeps that correlation; treating the points as independent would make the
slope look far noisier than it is and the level far surer.

- `naive_figures`: accuracy, the naive predictor's (the training majority's) accuracy and the
  skill over it with their overlap-aware SEs. Issue 26 (`validation.baseline.naive_figures`,
  same signature and keys) replaces this one in one line.
- `point_figures`: the above plus the log loss and its SE, for one curve point.
- `replicate_figures`: accuracy and log loss of every point under B block-bootstrap draws.

Pure numpy: no Ray, no XGBoost; the refits and the scoring run in `vpt_ray.model.learning_curve`.
"""

from __future__ import annotations

import numpy as np

from vpt_ray.validation.uncertainty import accuracy_se, mean_se

EPS = 1e-7  # probabilities clipped as `model.metrics.classification` clips them


def naive_figures(y_true: np.ndarray, pred: np.ndarray, majority: int, overlap: float) -> dict:
    """Accuracy of `pred` (P(up)) on `y_true`, the naive predictor's (always `majority`) and the
    skill (their paired difference), each with its SE on len(y) x `overlap` effective samples
    (`uncertainty.effective_samples(1, stride, horizon)`)."""
    if not 0 < overlap <= 1:
        raise ValueError(f"naive_figures: overlap = {overlap!r}: must lie in (0, 1]")
    up = np.asarray(y_true, dtype=np.float64) > 0.5
    right = (np.asarray(pred, dtype=np.float64) > 0.5) == up
    if len(up) == 0:
        raise ValueError("naive_figures: no labels")
    n_eff = len(up) * overlap
    naive_right = up == bool(majority)
    acc, naive = float(right.mean()), float(naive_right.mean())
    return {
        "accuracy": acc,
        "accuracy_se": accuracy_se(acc, n_eff),
        "naive_direction": "up" if majority else "down",
        "naive_accuracy": naive,
        "naive_accuracy_se": accuracy_se(naive, n_eff),
        "skill": acc - naive,
        "skill_se": mean_se(right.astype(np.float64) - naive_right, n_eff),
        "samples": int(len(up)),
        "effective_samples": n_eff,
    }


def sample_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each sample's log loss (natural log), probabilities clipped like `classification`."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    up = np.asarray(y, dtype=np.float64) > 0.5
    return -np.where(up, np.log(p), np.log1p(-p))


def point_figures(y: np.ndarray, p: np.ndarray, majority: int, overlap: float) -> dict:
    """One curve point's OOS figures: `naive_figures` plus the log loss and its SE."""
    out = naive_figures(y, p, majority, overlap)
    ll = sample_log_loss(y, p)
    out["log_loss"] = float(ll.mean())
    out["log_loss_se"] = mean_se(ll, out["effective_samples"])
    return out


def block_ids(session: np.ndarray, sessions_per_block: int = 1) -> np.ndarray:
    """Bootstrap block of each OOS label: its session (every ticker together: tickers co-move on
    real markets), grouped `sessions_per_block` at a time (daily bars: the label horizon, over
    which their labels overlap). Returns codes 0..n_blocks-1."""
    s = np.asarray(session, dtype=np.int64)
    uniq, code = np.unique(s, return_inverse=True)
    return code // max(1, int(sessions_per_block)) if len(uniq) else code


def block_sums(y: np.ndarray, p: np.ndarray, block: np.ndarray, n_blocks: int) -> np.ndarray:
    """Per block: labels, right calls and summed log loss of P(up) `p` (n_blocks x 3)."""
    right = ((np.asarray(p, dtype=np.float64) > 0.5) == (np.asarray(y) > 0.5)).astype(float)
    return np.stack(
        [
            np.bincount(block, minlength=n_blocks).astype(np.float64),
            np.bincount(block, weights=right, minlength=n_blocks),
            np.bincount(block, weights=sample_log_loss(y, p), minlength=n_blocks),
        ],
        axis=1,
    )


def replicate_figures(
    sums: list[np.ndarray], replicates: int, seed: int = 0, chunk: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and log loss (replicates x points) of every point under the same block-bootstrap
    draws: each replicate draws the OOS window's blocks with replacement and rescores all points
    on it. `sums`: per point, `block_sums` over the same blocks."""
    if not sums:
        return np.empty((replicates, 0)), np.empty((replicates, 0))
    n_blocks = sums[0].shape[0]
    if any(s.shape[0] != n_blocks for s in sums):
        raise ValueError("replicate_figures: every point must be scored on the same blocks")
    table = np.concatenate(sums, axis=1)  # n_blocks x (3 points)
    rng = np.random.default_rng(seed)
    acc, ll = [], []
    for lo in range(0, replicates, chunk):
        size = min(chunk, replicates - lo)
        draws = rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=size)
        tot = (draws @ table).reshape(len(draws), len(sums), 3)
        n = np.maximum(tot[:, :, 0], 1.0)
        acc.append(tot[:, :, 1] / n)
        ll.append(tot[:, :, 2] / n)
    return np.concatenate(acc), np.concatenate(ll)
