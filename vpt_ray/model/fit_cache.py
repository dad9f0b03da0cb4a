"""Final fits kept by content (`search.trial_cache` governs it too), so a later phase or a rerun
that fits the same configuration on the same training rows loads the model instead of boosting
it again.

Why: phase 5 trains on phase 4's tickers and window, and its race settles on the same best
configuration, so its final fit is phase 4's, bit for bit: 450 s of the 2-core machine for a
model already on disk. Phase 5's ensemble members that get a weight are final fits too.

The key hashes the training rows' content (`pipeline.resume.training_key`: each ticker's feature
file, the window, the features, stride and session sampling, the fit code), the configuration,
the rounds, the seed, the feature columns, the bins, the threads and the backend. Entries are
XGBoost's native format, written atomically; an unreadable entry is a miss. Nothing is evicted
(delete `{cache}/models`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import xgboost as xgb

from vpt_ray.core import storage
from vpt_ray.model.trial_cache import digest

log = logging.getLogger("vpt_ray.fit_cache")

VERSION = 1


@dataclass(frozen=True)
class FitCache:
    """Where final fits are kept (`location`) and the training rows' content key (`rows_key`)."""

    location: str | storage.GcsPath
    rows_key: str
    read: bool = True  # False (--force): fit again, and keep the new fit

    def _path(self, hp: dict, **fit: object) -> storage.Location:
        key = digest({"v": VERSION, "rows": self.rows_key, "hp": hp, **fit})
        return storage.as_location(self.location) / f"{key}.ubj"

    def get(self, hp: dict, **fit: object) -> xgb.Booster | None:
        """The booster fit with configuration `hp` and settings `fit` on these rows, or None."""
        path = self._path(hp, **fit)
        try:
            if not self.read or not storage.exists(path):
                return None
            booster = xgb.Booster()
            booster.load_model(bytearray(storage.read_bytes(path)))
        except (OSError, ValueError, xgb.core.XGBoostError) as exc:
            log.warning("fit cache entry %s unreadable (%s): fitting again", path, exc)
            return None
        log.info("final fit: reused from the fit cache %s", path)
        return booster

    def put(self, booster: xgb.Booster, hp: dict, **fit: object) -> None:
        path = self._path(hp, **fit)
        try:
            storage.makedirs(storage.as_location(self.location))
            storage.write_bytes(path, bytes(booster.save_raw("ubj")))
        except OSError as exc:  # a full disk costs the reuse, not the run
            log.warning("fit cache: could not keep %s (%s)", path, exc)
