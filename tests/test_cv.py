"""Purged splitters: no training label overlaps a test label, embargo respected, per ticker and
pooled across tickers; CPCV counts and paths against AFML's example (via mlfinlab's test) and an
independent implementation (skfolio's CombinatorialPurgedCV, transcribed below).

The leakage checks use `_allowed`, a brute-force statement of the documented rule over every
(train, test) pair, independent of the splitters' window arithmetic.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vpt_ray.model.cv import CombinatorialPurgedCV, PurgedWalkForward


def _pooled_samples(seed: int = 0, n_bars: int = 400, horizon: int = 5):
    """Three tickers on one shared clock, each with its own missing bars, labels ending `horizon`
    bars later in the ticker's own series (so across a gap a label spans more clock bars), pooled
    and shuffled: duplicate positions across tickers, no ordering to rely on."""
    rng = np.random.default_rng(seed)
    pos, label_end, ticker = [], [], []
    for t, missing in enumerate((0.0, 0.05, 0.3)):
        bars = np.flatnonzero(rng.random(n_bars) >= missing)
        pos.append(bars[:-horizon])
        label_end.append(bars[horizon:])
        ticker.append(np.full(len(bars) - horizon, t))
    pos, label_end, ticker = map(np.concatenate, (pos, label_end, ticker))
    order = rng.permutation(len(pos))
    return pos[order], label_end[order], ticker[order]


def _allowed(pos, label_end, test, embargo) -> np.ndarray:
    """Samples that may train next to `test`, by brute force over every test sample j: a sample
    before j must have its label end before j starts and lie more than `embargo` bars before j;
    a sample after j must start more than `embargo` bars after j's label ends; never the same bar.
    """
    ok = np.ones(len(pos), dtype=bool)
    for j in test:
        before = (pos < pos[j]) & (label_end < pos[j]) & (pos < pos[j] - embargo)
        after = (pos > pos[j]) & (pos > label_end[j] + embargo)
        ok &= before | after
    return ok


def _assert_no_leak(pos, label_end, train, test, embargo):
    assert len(np.intersect1d(train, test)) == 0
    tr = train[:, None]
    te = test[None, :]
    # label windows [pos, label_end] of training and test samples never intersect
    overlap = (pos[tr] <= label_end[te]) & (pos[te] <= label_end[tr])
    assert not overlap.any()
    # every training sample is more than `embargo` bars from every test sample
    assert (np.abs(pos[tr] - pos[te]) > embargo).all()


# ------------------------------------------------------------------ PurgedWalkForward


def test_walk_forward_docstring_example():
    pos = np.arange(10)
    cv = PurgedWalkForward(n_splits=2, embargo=1, min_train_fraction=0.4)
    got = [(tr.tolist(), va.tolist()) for tr, va in cv.split(pos, pos + 1)]
    assert got == [([0, 1, 2], [4, 5, 6]), ([0, 1, 2, 3, 4, 5], [7, 8, 9])]


@pytest.mark.parametrize("embargo", [0, 5, 12])
@pytest.mark.parametrize("scope", ["pooled", 0, 1, 2])
def test_walk_forward_never_trains_on_a_validation_label(embargo, scope):
    pos, label_end, ticker = _pooled_samples(seed=1)
    if scope != "pooled":
        keep = ticker == scope
        pos, label_end, ticker = pos[keep], label_end[keep], ticker[keep]
    cv = PurgedWalkForward(n_splits=4, embargo=embargo, min_train_fraction=0.3)
    folds = list(cv.split(pos, label_end))
    assert len(folds) == cv.get_n_splits() == 4
    seen_val = np.concatenate([va for _, va in folds])
    assert len(seen_val) == len(np.unique(seen_val))  # validation blocks do not overlap
    for (lo, hi), (train, val) in zip(cv.windows(pos), folds, strict=True):
        assert set(val) == set(np.flatnonzero((pos >= lo) & (pos <= hi)))
        _assert_no_leak(pos, label_end, train, val, embargo)
        # nothing useful is thrown away: train is every earlier sample the rule allows
        expected = np.flatnonzero(_allowed(pos, label_end, val, embargo) & (pos < lo))
        np.testing.assert_array_equal(np.sort(train), expected)
        # per ticker: each ticker's training labels end before the block and respect the embargo
        for t in np.unique(ticker[train]):
            mine = train[ticker[train] == t]
            assert (label_end[mine] < lo).all() and (pos[mine] < lo - embargo).all()


def test_walk_forward_purges_by_label_end_across_a_gap():
    # A ticker with a gap: its sample at bar 47 has a label ending at bar 60 (after the gap),
    # inside the validation window that starts at 55 - even though 47 + horizon (3) < 55.
    pos = np.concatenate([np.arange(0, 48), np.arange(58, 100)])
    label_end = np.concatenate([np.arange(3, 48 + 3), np.arange(58 + 3, 103)])
    label_end[45:48] = [58, 59, 60]  # the 3 bars before the gap end after it
    other = np.arange(0, 100)  # a second, gap-free ticker on the same clock
    pos = np.concatenate([pos, other])
    label_end = np.concatenate([label_end, other + 3])
    cv = PurgedWalkForward(n_splits=1, embargo=3, min_train_fraction=0.55)
    ((train, val),) = list(cv.split(pos, label_end))
    lo, _ = cv.windows(pos)[0]
    assert lo == 55
    assert 47 not in pos[train[label_end[train] >= lo]]
    assert (label_end[train] < lo).all()
    _assert_no_leak(pos, label_end, train, val, 3)


def test_walk_forward_rejects_bad_input():
    with pytest.raises(ValueError, match="label_end must be >= pos"):
        next(PurgedWalkForward(n_splits=2).split(np.arange(10), np.arange(10) - 1))
    with pytest.raises(ValueError, match="same length"):
        next(PurgedWalkForward(n_splits=2).split(np.arange(10), np.arange(9)))
    with pytest.raises(ValueError, match="no training sample"):
        next(
            PurgedWalkForward(n_splits=2, embargo=50, min_train_fraction=0.3).split(
                np.arange(20), np.arange(20)
            )
        )


# ------------------------------------------------------------------ CPCV: counts and paths


@pytest.mark.parametrize(("n", "k"), [(6, 2), (10, 2), (8, 4), (5, 1), (10, 8), (3, 2)])
def test_cpcv_counts(n, k):
    cv = CombinatorialPurgedCV(n_groups=n, n_test_groups=k)
    assert cv.get_n_splits() == math.comb(n, k)
    # AFML ch. 12: phi[N, k] = C(N, k) * k / N backtest paths
    assert cv.n_paths == math.comb(n, k) * k // n
    assert math.comb(n, k) * k % n == 0
    paths = cv.paths()
    assert paths.shape == (cv.n_paths, n)
    tests = cv.test_groups()
    # path p, group g comes from a split that tests g; every (split, test group) is used once
    used = [(int(paths[p, g]), g) for p in range(cv.n_paths) for g in range(n)]
    assert all(g in tests[s] for s, g in used)
    assert sorted(used) == sorted((s, g) for s, combo in enumerate(tests) for g in combo)


def test_cpcv_matches_afml_example_via_mlfinlab():
    # AFML p. 164 example as tested in hudson-and-thames/mlfinlab
    # mlfinlab/tests/test_combinatorial_cross_validation.py: 100 samples, 6 groups, 2 test groups
    # -> 15 splits; first/last test index of the first five splits [0,33] [0,50] [0,67] [0,83]
    # [0,99] and of the last five [34,83] [34,99] [51,83] [51,99] [68,99]; 5 backtest paths with
    # paths[0][0] = paths[0][1] = split 0, paths[1][0] = split 1, paths[1][2] = split 5,
    # paths[-1][-1] = paths[-1][-2] = split 14.
    pos = np.arange(100)
    cv = CombinatorialPurgedCV(n_groups=6, n_test_groups=2)
    tests = [te for _, te in cv.split(pos, pos)]
    assert len(tests) == 15
    ends = [[int(te[0]), int(te[-1])] for te in tests]
    assert ends[:5] == [[0, 33], [0, 50], [0, 67], [0, 83], [0, 99]]
    assert ends[-5:] == [[34, 83], [34, 99], [51, 83], [51, 99], [68, 99]]
    paths = cv.paths()
    assert len(paths) == 5
    assert paths[0][0] == paths[0][1] == 0
    assert paths[1][0] == 1 and paths[1][2] == 5
    assert paths[-1][-1] == paths[-1][-2] == 14


def _skfolio_reference(n_samples, n_folds, n_test_folds, purged_size, embargo_size):
    """Transcribed from skfolio 1.12.2 skfolio/model_selection/_combinatorial.py
    (CombinatorialPurgedCV.split, recombined_paths and get_path_ids; BSD-3-Clause). One sample
    per bar; purged_size bars are purged before and after each test fold, embargo_size after."""
    n_splits = math.comb(n_folds, n_test_folds)
    test_set_index = np.array(
        list(itertools.combinations(np.arange(n_folds), n_test_folds))
    ).reshape(-1, n_test_folds)
    folds_train_test = np.zeros((n_folds, n_splits), dtype=int)
    folds_train_test[test_set_index, np.arange(n_splits)[:, np.newaxis]] = 1
    recombine_paths = np.argwhere(folds_train_test == 1)[:, 1].reshape(n_folds, -1)
    path_ids = np.zeros((n_splits, n_test_folds), dtype=int)
    for i in range(n_splits):
        for j in range(n_test_folds):
            path_ids[i, j] = np.argwhere(recombine_paths == i)[j][1]

    min_fold_size = n_samples // n_folds
    fold_index_num = np.minimum(np.arange(n_samples) // min_fold_size, n_folds - 1)
    index_train_test = np.zeros((n_samples, n_splits), dtype=int)
    for i in range(n_splits):
        index_train_test[np.argwhere([fold_index_num == j for j in test_set_index[i]])[:, 1], i] = 1
    diff = np.diff(index_train_test, axis=0)
    before_index = np.argwhere(diff == 1)
    for k in range(purged_size):
        index_train_test[np.maximum(0, before_index[:, 0] - k), before_index[:, 1]] = -1
    after_index = np.argwhere(diff == -1)
    for k in range(purged_size + embargo_size):
        index_train_test[
            np.minimum(n_samples - 1, after_index[:, 0] + k + 1), after_index[:, 1]
        ] = -1
    trains = [np.argwhere(index_train_test[:, i] == 0).reshape(-1) for i in range(n_splits)]
    tests = [
        np.concatenate([np.argwhere(fold_index_num == f).reshape(-1) for f in test_set_index[i]])
        for i in range(n_splits)
    ]
    return trains, tests, path_ids


@pytest.mark.parametrize(
    ("n_groups", "k", "horizon", "embargo"),
    [(6, 2, 0, 0), (6, 2, 4, 0), (6, 2, 4, 2), (6, 2, 4, 4), (8, 3, 3, 1), (5, 4, 2, 2)],
)
def test_cpcv_matches_skfolio(n_groups, k, horizon, embargo):
    # With one sample per bar and labels `horizon` bars long, our rule (label ends before the
    # group; more than `embargo` bars before it; after it, more than `embargo` bars past its last
    # label end) is skfolio's purged_size=horizon, embargo_size=embargo whenever embargo <=
    # horizon (before a group we also embargo, which only bites when embargo > horizon).
    n = 240
    pos = np.arange(n)
    cv = CombinatorialPurgedCV(n_groups=n_groups, n_test_groups=k, embargo=embargo)
    ref_train, ref_test, ref_path_ids = _skfolio_reference(n, n_groups, k, horizon, embargo)
    ours = list(cv.split(pos, pos + horizon))
    assert len(ours) == len(ref_train) == cv.get_n_splits()
    for (train, test), rtr, rte in zip(ours, ref_train, ref_test, strict=True):
        np.testing.assert_array_equal(train, rtr)
        np.testing.assert_array_equal(test, rte)
    # skfolio's path id of each split's j-th test group == our path index for that (split, group)
    paths = cv.paths()
    for s, combo in enumerate(cv.test_groups()):
        for j, g in enumerate(combo):
            assert paths[ref_path_ids[s, j], g] == s


# ------------------------------------------------------------------ CPCV: purging on real shapes


@pytest.mark.parametrize("embargo", [0, 5, 12])
@pytest.mark.parametrize("scope", ["pooled", 0, 2])
def test_cpcv_never_trains_on_a_test_label(embargo, scope):
    pos, label_end, ticker = _pooled_samples(seed=2)
    if scope != "pooled":
        keep = ticker == scope
        pos, label_end = pos[keep], label_end[keep]
    cv = CombinatorialPurgedCV(n_groups=6, n_test_groups=2, embargo=embargo)
    group = cv.groups(pos)
    windows = cv.windows(pos)
    for (train, test), combo in zip(cv.split(pos, label_end), cv.test_groups(), strict=True):
        assert set(test) == set(np.flatnonzero(np.isin(group, combo)))
        for g in combo:
            lo, hi = windows[g]
            assert ((pos[group == g] >= lo) & (pos[group == g] <= hi)).all()
        _assert_no_leak(pos, label_end, train, test, embargo)
        # both sides of every test group purged, nothing else dropped
        expected = np.flatnonzero(_allowed(pos, label_end, test, embargo))
        np.testing.assert_array_equal(np.sort(train), expected)
        # training exists on both sides of an inner test group
        if 0 not in combo and cv.n_groups - 1 not in combo:
            assert (pos[train] < windows[combo[0]][0]).any()
            assert (pos[train] > windows[combo[-1]][1]).any()


def test_cpcv_paths_cover_every_sample_once():
    pos, label_end, _ = _pooled_samples(seed=3)
    cv = CombinatorialPurgedCV(n_groups=6, n_test_groups=2, embargo=5)
    group = cv.groups(pos)
    tests = [te for _, te in cv.split(pos, label_end)]
    for path in cv.paths():
        covered = np.concatenate([tests[s][group[tests[s]] == g] for g, s in enumerate(path)])
        np.testing.assert_array_equal(np.sort(covered), np.arange(len(pos)))


def test_cpcv_rejects_bad_parameters():
    with pytest.raises(ValueError, match="n_test_groups"):
        CombinatorialPurgedCV(n_groups=4, n_test_groups=4)
    with pytest.raises(ValueError, match="n_test_groups"):
        CombinatorialPurgedCV(n_groups=4, n_test_groups=0)
    with pytest.raises(ValueError, match="n_groups"):
        CombinatorialPurgedCV(n_groups=1, n_test_groups=1)
    with pytest.raises(ValueError, match="embargo"):
        CombinatorialPurgedCV(embargo=-1)
    with pytest.raises(ValueError, match="distinct times"):
        next(CombinatorialPurgedCV(n_groups=6).split(np.arange(4), np.arange(4)))
    with pytest.raises(ValueError, match="no training sample"):
        next(
            CombinatorialPurgedCV(n_groups=3, n_test_groups=2, embargo=10).split(
                np.arange(12), np.arange(12)
            )
        )


# ------------------------------------------------------------- early stopping inside a fold


def test_early_stopping_split_holds_out_the_last_sessions_purged_and_embargoed():
    """10 sessions x 4 bars of two tickers, labels 2 bars long within a session: the slice is
    the last 2 sessions, every earlier row fits (no label crosses a session), embargo 1 drops
    the last bar before the slice."""
    from vpt_ray.model.cv import early_stopping_split

    slots = 4
    pos = np.tile(np.arange(40), 2)
    label_end = np.minimum(pos + 2, (pos // slots) * slots + slots - 1)
    train = np.flatnonzero(pos < 40)
    fit, stop = early_stopping_split(train, pos, label_end, slots, 0.2, embargo=0)
    assert set(pos[stop]) == set(range(32, 40)) and len(stop) == 16
    assert pos[fit].max() == 31 and len(fit) == 64  # labels end in their session: none purged
    assert not set(fit) & set(stop)
    fit_e, _ = early_stopping_split(train, pos, label_end, slots, 0.2, embargo=1)
    assert pos[fit_e].max() == 30  # the embargo bar before the slice is dropped
    # daily bars: a 3-day label reaching into the slice is purged
    days = np.arange(20)
    fit_d, stop_d = early_stopping_split(days, days, days + 3, 1, 0.25, embargo=0)
    assert days[stop_d].tolist() == [15, 16, 17, 18, 19]
    assert days[fit_d].max() == 11 and (days[fit_d] + 3 < 15).all()


def test_early_stopping_split_refuses_what_it_cannot_split():
    from vpt_ray.model.cv import early_stopping_folds, early_stopping_split

    pos = np.arange(8)
    with pytest.raises(ValueError, match="spans 1 session"):
        early_stopping_split(pos, pos, pos, 390, 0.2)
    with pytest.raises(ValueError, match="cv.early_stopping_fraction = 1.5"):
        early_stopping_split(pos, pos, pos, 1, 1.5)
    # the walk-forward folds, split: the stop slice sits between fit and validation in time
    pos = np.arange(200)
    folds = list(PurgedWalkForward(3, 2, 0.4).split(pos, pos + 2))
    for f in early_stopping_folds(folds, pos, pos + 2, 1, 0.2, embargo=2):
        assert pos[f.fit].max() + 2 < pos[f.stop].min()  # purged and embargoed
        assert pos[f.stop].max() < pos[f.val].min()
        assert len(f.fit) + len(f.stop) + 2 + 2 >= len(np.unique(np.r_[f.fit, f.stop]))
