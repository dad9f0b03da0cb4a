"""Search trials' fold fits kept by content (`search.trial_cache`), so a later search on the same
samples and folds reuses every fold a configuration already fitted instead of fitting it again.

Why: phase 5 trains on phase 4's tickers and window with the same seed, so its search draws the
same first configurations on the same folds; before this it refitted all of them (phase 4's
search was 87% of that phase). A phase rerun with another trial count, scheduler or budget,
which the whole-search resume cache (`vpt_ray.pipeline.resume`) cannot serve, reuses them too.

An entry is one fold of one configuration: the fold's record (rounds, sizes, metrics) and its
validation probabilities (float32, `.npy`), so the trial's after-cost validation returns are
recomputed from them with the current backtest settings. The key hashes the samples' content
(each ticker's feature-file key, the features used, the window, stride and clock), the fold's
row ids, every setting of the fit (rounds, early stopping, bins, threads), the configuration and
this code's version. Entries are written atomically (temp + rename) by the trial that fitted
them; an unreadable entry is a miss. Nothing is evicted (delete `{cache}/trials`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass

import numpy as np

from vpt_ray.core import storage

log = logging.getLogger("vpt_ray.trial_cache")

VERSION = 2  # bump when what a fold fit computes changes (2: val_log_loss_se)


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _canonical(v: object) -> object:
    """A configuration value as the key sees it: numbers rounded (a float's last bits do not
    change a fit), lists (an ensemble member's feature columns) kept."""
    if isinstance(v, list | tuple):
        return [_canonical(x) for x in v]
    return round(float(v), 12)


def folds_digest(folds: list[tuple[np.ndarray, ...]]) -> list[str]:
    """One digest per fold of its row ids (fit, early-stopping and validation parts)."""
    out = []
    for fold in folds:
        h = hashlib.sha256()
        for part in fold:
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
            h.update(b"|")
        out.append(h.hexdigest()[:24])
    return out


@dataclass(frozen=True)
class TrialCache:
    """Where fold fits are kept and what they are keyed on (picklable: it travels to the trials).

    `data_key`: the samples' content (`pipeline.resume.samples_key`); `fold_keys`: one per fold
    (`folds_digest`); `fit`: the fit settings that change a fold's result."""

    location: str | storage.GcsPath
    data_key: str
    fold_keys: tuple[str, ...]
    fit: tuple[tuple[str, object], ...]

    def key(self, hp: dict, k: int) -> str:
        return digest(
            {
                "v": VERSION,
                "data": self.data_key,
                "fold": self.fold_keys[k],
                "fit": dict(self.fit),
                "hp": {n: _canonical(v) for n, v in sorted(hp.items())},
            }
        )

    def _paths(self, key: str) -> tuple:
        base = storage.as_location(self.location)
        return base / f"{key}.json", base / f"{key}.npy"

    def get(self, hp: dict, k: int) -> tuple[dict, np.ndarray] | None:
        """Fold `k`'s record and validation probabilities for configuration `hp`, or None."""
        meta, arr = self._paths(self.key(hp, k))
        try:
            if not storage.exists(meta):  # written last: its presence means complete
                return None
            record = json.loads(storage.read_text(meta))
            p_val = np.load(io.BytesIO(storage.read_bytes(arr)), allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("trial cache entry %s unreadable (%s): fitting again", meta, exc)
            return None
        if len(p_val) != record.get("val_samples"):
            return None
        return record, p_val

    def put(self, hp: dict, k: int, record: dict, p_val: np.ndarray) -> None:
        meta, arr = self._paths(self.key(hp, k))
        buf = io.BytesIO()
        np.save(buf, np.asarray(p_val, dtype=np.float32), allow_pickle=False)
        try:
            storage.makedirs(storage.as_location(self.location))
            storage.write_bytes(arr, buf.getvalue())
            storage.write_json(meta, record)  # last: marks the entry complete
        except OSError as exc:  # a full disk costs the reuse, not the search
            log.warning("trial cache: could not keep fold %d (%s)", k, exc)
