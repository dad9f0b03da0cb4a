"""Purged, embargoed time splits over samples pooled across tickers.

Samples are located on a common clock (`pos`: the bar's ordinal on the exchange calendar, the same
for every ticker) and carry the position of the bar their label ends on (`label_end`). A training
sample is kept only if its whole label window ends before the validation window starts (purge) and
it lies at least `embargo` bars away from the validation window (embargo), so no label and no
serially correlated neighbour of the validation data leaks into training - per ticker and across
tickers, since the clock is shared.

`PurgedWalkForward` gives one out-of-sample path; `CombinatorialPurgedCV` gives a distribution of
paths (every group tested several times against purged training on both sides).

Splitters follow scikit-learn's habits: parameters in `__init__`, `split()` yields integer index
arrays, `get_n_splits()` gives the count; nothing is copied.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np


def _check_positions(pos: np.ndarray, label_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(pos, dtype=np.int64)
    label_end = np.asarray(label_end, dtype=np.int64)
    if pos.shape != label_end.shape or pos.ndim != 1:
        raise ValueError(
            f"pos and label_end must be 1-D arrays of the same length, got {pos.shape} "
            f"and {label_end.shape}"
        )
    if (label_end < pos).any():
        raise ValueError("label_end must be >= pos for every sample (a label ends after its bar)")
    return pos, label_end


class PurgedWalkForward:
    """Expanding-window walk-forward splits with purge and embargo.

    The last `1 - min_train_fraction` of the time axis is cut into `n_splits` consecutive
    validation blocks of equal sample count; fold k trains on every sample before block k whose
    label ends before the block starts and that lies more than `embargo` bars before it.

    >>> pos = np.arange(10); cv = PurgedWalkForward(n_splits=2, embargo=1, min_train_fraction=0.4)
    >>> [(tr.tolist(), va.tolist()) for tr, va in cv.split(pos, pos + 1)]
    [([0, 1, 2], [4, 5, 6]), ([0, 1, 2, 3, 4, 5], [7, 8, 9])]
    """

    def __init__(self, n_splits: int = 4, embargo: int = 0, min_train_fraction: float = 0.3):
        if n_splits < 1:
            raise ValueError(f"n_splits must be >= 1, got {n_splits}")
        if embargo < 0:
            raise ValueError(f"embargo must be >= 0 bars, got {embargo}")
        if not 0 < min_train_fraction < 1:
            raise ValueError(f"min_train_fraction must be in (0, 1), got {min_train_fraction}")
        self.n_splits = n_splits
        self.embargo = embargo
        self.min_train_fraction = min_train_fraction

    def get_n_splits(self) -> int:
        return self.n_splits

    def windows(self, pos: np.ndarray) -> list[tuple[int, int]]:
        """Validation windows as inclusive (first_pos, last_pos) on the shared clock."""
        uniq = np.unique(np.asarray(pos, dtype=np.int64))
        start = int(len(uniq) * self.min_train_fraction)
        if len(uniq) - start < self.n_splits:
            raise ValueError(
                f"only {len(uniq)} distinct times: too few for {self.n_splits} validation blocks"
            )
        edges = np.linspace(start, len(uniq), self.n_splits + 1).astype(int)
        return [
            (int(uniq[a]), int(uniq[b - 1])) for a, b in zip(edges[:-1], edges[1:], strict=True)
        ]

    def split(
        self, pos: np.ndarray, label_end: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        pos, label_end = _check_positions(pos, label_end)
        for lo, hi in self.windows(pos):
            val = np.flatnonzero((pos >= lo) & (pos <= hi))
            train = np.flatnonzero((label_end < lo) & (pos < lo - self.embargo))
            if len(train) == 0:
                raise ValueError(
                    f"validation window starting at {lo} leaves no training sample after purge and "
                    f"embargo ({self.embargo} bars): lower cv.n_splits or raise min_train_fraction"
                )
            yield train, val


def purge_mask(
    pos: np.ndarray, label_end: np.ndarray, lo: int, hi: int, embargo: int
) -> np.ndarray:
    """Training samples allowed next to the test window [lo, hi]: label ends before `lo`, and the
    sample lies more than `embargo` bars outside the window on either side."""
    pos, label_end = _check_positions(pos, label_end)
    before = (label_end < lo) & (pos < lo - embargo)
    after = pos > hi + embargo
    return before | after


class CombinatorialPurgedCV:
    """Combinatorial purged cross-validation (Lopez de Prado, AFML ch. 12).

    The distinct times are cut into `n_groups` contiguous groups of (nearly) equal size
    (`np.array_split`, as in AFML's example); every combination of `n_test_groups` groups is one
    test set, in `itertools.combinations` order, so there are C(n_groups, n_test_groups) splits.
    Training keeps only samples clear of every test group on both sides: before a group, the label
    must end before the group's first bar and the sample must lie more than `embargo` bars before
    it; after a group, the sample must start more than `embargo` bars after the last bar any of the
    group's labels reaches (so a training label never overlaps a test label window either). Both
    checks are `purge_mask` with the group's window extended to its last label end.

    Each group is tested in C(n-1, k-1) splits; stitching, for every group, its j-th test in split
    order gives `n_paths` = C(n, k) * k / n complete out-of-sample backtest paths (`paths()`).

    >>> pos = np.arange(12); cv = CombinatorialPurgedCV(n_groups=3, n_test_groups=2, embargo=1)
    >>> for tr, te in cv.split(pos, pos + 1):  # labels end one bar later
    ...     print(tr.tolist(), te.tolist())
    [10, 11] [0, 1, 2, 3, 4, 5, 6, 7]
    [6] [0, 1, 2, 3, 8, 9, 10, 11]
    [0, 1, 2] [4, 5, 6, 7, 8, 9, 10, 11]
    >>> cv.paths().tolist()
    [[0, 0, 1], [1, 2, 2]]
    """

    def __init__(self, n_groups: int = 6, n_test_groups: int = 2, embargo: int = 0):
        if n_groups < 2:
            raise ValueError(f"n_groups must be >= 2, got {n_groups}")
        if not 1 <= n_test_groups < n_groups:
            raise ValueError(
                f"n_test_groups must be in [1, n_groups - 1] = [1, {n_groups - 1}], "
                f"got {n_test_groups}"
            )
        if embargo < 0:
            raise ValueError(f"embargo must be >= 0 bars, got {embargo}")
        self.n_groups = n_groups
        self.n_test_groups = n_test_groups
        self.embargo = embargo

    def get_n_splits(self) -> int:
        return math.comb(self.n_groups, self.n_test_groups)

    @property
    def n_paths(self) -> int:
        """Number of complete backtest paths: C(n, k) * k / n = C(n - 1, k - 1)."""
        return math.comb(self.n_groups - 1, self.n_test_groups - 1)

    def test_groups(self) -> list[tuple[int, ...]]:
        """The group ids tested by each split, in split order."""
        return list(itertools.combinations(range(self.n_groups), self.n_test_groups))

    def windows(self, pos: np.ndarray) -> list[tuple[int, int]]:
        """Group windows as inclusive (first_pos, last_pos) on the shared clock."""
        uniq = np.unique(np.asarray(pos, dtype=np.int64))
        if len(uniq) < self.n_groups:
            raise ValueError(f"only {len(uniq)} distinct times: too few for {self.n_groups} groups")
        return [(int(g[0]), int(g[-1])) for g in np.array_split(uniq, self.n_groups)]

    def groups(self, pos: np.ndarray) -> np.ndarray:
        """Group id of every sample (to cut a split's test predictions back into groups)."""
        pos = np.asarray(pos, dtype=np.int64)
        starts = np.array([lo for lo, _ in self.windows(pos)])
        return np.searchsorted(starts, pos, side="right") - 1

    def paths(self) -> np.ndarray:
        """(n_paths, n_groups) split indices: path p takes group g's test predictions from split
        `paths()[p, g]` (the p-th split, in split order, that tests group g)."""
        tested_in: list[list[int]] = [[] for _ in range(self.n_groups)]
        for s, combo in enumerate(self.test_groups()):
            for g in combo:
                tested_in[g].append(s)
        return np.array(tested_in, dtype=np.int64).T

    def split(
        self, pos: np.ndarray, label_end: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        pos, label_end = _check_positions(pos, label_end)
        group = self.groups(pos)
        windows = self.windows(pos)
        # each group's window reaches to the last bar any of its labels touches
        reach = [int(label_end[group == g].max()) for g in range(self.n_groups)]
        clear = [
            purge_mask(pos, label_end, lo, max(hi, reach[g]), self.embargo)
            for g, (lo, hi) in enumerate(windows)
        ]
        for combo in self.test_groups():
            in_test = np.isin(group, combo)
            keep = ~in_test
            for g in combo:
                keep &= clear[g]
            train = np.flatnonzero(keep)
            if len(train) == 0:
                raise ValueError(
                    f"test groups {combo} leave no training sample after purge and embargo "
                    f"({self.embargo} bars): raise cv.n_splits or lower the embargo"
                )
            yield train, np.flatnonzero(in_test)


class EarlyStopFold(NamedTuple):
    """One CV fold with its training part split for early stopping: the booster is fit on `fit`,
    its rounds are chosen on `stop` (the last sessions of the training window, purged and
    embargoed from `fit`), and `val` is scored untouched."""

    fit: np.ndarray
    stop: np.ndarray
    val: np.ndarray


def early_stopping_split(
    train: np.ndarray,
    pos: np.ndarray,
    label_end: np.ndarray,
    slots: int,
    fraction: float,
    embargo: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, stop): the last `fraction` of the training rows' sessions (at least one) become the
    early-stopping slice; a training row is kept for fitting only if its label ends before the
    slice starts and it lies more than `embargo` bars before it (the split's own purge and
    embargo). Both are subsets of `train`, in its order.

    Why: choosing the rounds on the validation fold and then scoring that fold flatters the CV
    figures (and the train-validation gap and PBO built on them).

    >>> pos = np.arange(10); tr = np.arange(8)  # one bar a session (slots=1)
    >>> [a.tolist() for a in early_stopping_split(tr, pos, pos + 1, 1, 0.25, embargo=1)]
    [[0, 1, 2, 3, 4], [6, 7]]
    """
    if not 0 < fraction < 1:
        raise ValueError(
            f"cv.early_stopping_fraction = {fraction}: must be in (0, 1) (share of each "
            "training fold's last sessions held out to choose the boosting rounds)"
        )
    train = np.asarray(train)
    p, le = np.asarray(pos, dtype=np.int64)[train], np.asarray(label_end, dtype=np.int64)[train]
    sessions = np.unique(p // slots)
    if len(sessions) < 2:
        raise ValueError(
            f"a training fold spans {len(sessions)} session(s): early stopping needs >= 2 (one "
            "to fit on, one to stop on); use more data or fewer cv.n_splits"
        )
    n_stop = min(len(sessions) - 1, max(1, int(round(fraction * len(sessions)))))
    lo = int(sessions[-n_stop]) * slots  # first bar of the slice's first session
    stop = train[p >= lo]
    fit = train[(le < lo) & (p < lo - embargo)]
    if len(fit) == 0:
        raise ValueError(
            f"the early-stopping slice (last {n_stop} of {len(sessions)} sessions) leaves no "
            f"training row after purge and embargo ({embargo} bars): lower "
            "cv.early_stopping_fraction or use more data"
        )
    return fit, stop


def early_stopping_folds(
    folds: list[tuple[np.ndarray, np.ndarray]],
    pos: np.ndarray,
    label_end: np.ndarray,
    slots: int,
    fraction: float,
    embargo: int = 0,
) -> list[EarlyStopFold]:
    """`folds` with each training part split by `early_stopping_split`."""
    return [
        EarlyStopFold(*early_stopping_split(tr, pos, label_end, slots, fraction, embargo), va)
        for tr, va in folds
    ]


def sample_days_mask(pos: np.ndarray, slots: int, n_days: int, seed: int) -> np.ndarray:
    """Keep `n_days` sessions drawn one per equal stratum of the period (seeded)."""
    session = pos // slots
    uniq = np.unique(session)
    if n_days >= len(uniq):
        return np.ones(len(pos), dtype=bool)
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, len(uniq), n_days + 1).astype(int)
    chosen = [uniq[rng.integers(a, b)] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return np.isin(session, chosen)
