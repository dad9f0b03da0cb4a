"""Purged, embargoed time splits over samples pooled across tickers.

Samples are located on a common clock (`pos`: the bar's ordinal on the exchange calendar, the same
for every ticker) and carry the position of the bar their label ends on (`label_end`). A training
sample is kept only if its whole label window ends before the validation window starts (purge) and
it lies at least `embargo` bars away from the validation window (embargo), so no label and no
serially correlated neighbour of the validation data leaks into training - per ticker and across
tickers, since the clock is shared.

Splitters follow scikit-learn's habits: parameters in `__init__`, `split()` yields integer index
arrays, `get_n_splits()` gives the count; nothing is copied.
"""

from __future__ import annotations

from collections.abc import Iterator

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
        return [(int(uniq[a]), int(uniq[b - 1])) for a, b in zip(edges[:-1], edges[1:])]

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
