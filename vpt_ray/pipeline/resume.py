"""Resume: the feature store and the search are cached by content, so a rerun skips what is done.

Why: at phase 4 the feature store and the search are hours of work; a run interrupted after them
(a crash, a memory stop, a deleted report) should not redo them, and a second run on the same data
and settings should not either, whatever its run id.

Keys are hashes of what determines the output, never of run ids or timestamps:
- a ticker's feature file: the ticker, its bar file's bytes (size + sha256), the config that shapes
  features (`data.bar`, calendar, session, vwap tolerance, `features`, `labels`, the data and
  backtest windows) and the source of the code that builds them (`features.py`, `store.py`,
  resampling, bar reading), so a code change invalidates the cache by itself;
- the search: every ticker's feature key (in config order), the windows, `cv`, `search`, `model`
  (but not `model.ensemble`), the code of the search, CV and metrics;
- phase 5's ensemble: the search's key, `model.ensemble` and the ensemble code. The backtest
  universe's feature files are ticker feature files like any other (keyed the same way).

Layout: `{paths.cache or artifacts/cache}/features/{key}.parquet` (+ `.json` summary) per ticker,
so a ticker finished before an interruption is reused even if others were not;
`.../search/{key}/` holds the search result, `.../ensemble/{key}/` the ensemble. Every entry is
written to a temp name and renamed, so a crash never leaves an entry that looks complete. A search
entry records its trial count and how the search ended (`info["ended_by"]`); only a search that
ended by its own rule (all trials, ASHA, the time budget) with `search.num_samples` trials is
cached or reused (`incomplete_reason`): an interrupted one never is, and an entry cached before
this was recorded is searched again.
`force=True` (`--force`) recomputes and overwrites. Cost: one sha256 pass over each bar file per
process (memoized by size and mtime).
Nothing is evicted: delete `artifacts/cache/` to reclaim the space. With `paths.cache` (or
`paths.artifacts`) on gs://, the cache is a bucket prefix that every node reads and writes: the
feature tasks write their files there, and a cached search is uploaded with best.json last.
The bar files are staged there too (`stage_bars`: `.../bars/{sha256}.parquet`), so the tasks
read them on any node; their digests, hence every key, are those of the local files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from vpt_ray.core import storage, tracking
from vpt_ray.core.config import Config
from vpt_ray.core.run import atomic_dir, file_sha256
from vpt_ray.data.chain import TickerData
from vpt_ray.features.store import Matrix, build_store
from vpt_ray.model import ensemble as ens
from vpt_ray.model.fit_cache import FitCache
from vpt_ray.model.search_result import OWN_ENDINGS, SearchResult
from vpt_ray.model.train import training_rows

log = logging.getLogger("vpt_ray.resume")
CACHE_VERSION = 1
PACKAGE = Path(__file__).resolve().parent.parent  # vpt_ray/
FEATURE_CODE = ("features/causal.py", "features/store.py", "data/resample.py", "data/local.py",
                "data/bars.py", "data/quality.py", "core/calendar.py")  # fmt: skip
SEARCH_CODE = (
    "model/search.py",
    "model/search_result.py",
    "model/racing.py",
    "model/folds.py",
    "model/cv.py",
    "model/metrics.py",
    "model/trial_cache.py",
    "pipeline/stages.py",
)
# what a single fold fit computes from its rows (`model.trial_cache`: the rows are in its key)
FIT_CODE = ("model/folds.py", "model/metrics.py", "features/samples.py", "model/trial_cache.py")
_DIGESTS: dict[tuple[str, int, int], str] = {}
_STAGED: dict[str, dict] = {}  # gs:// URI of a bar object staged by this process -> its digest


def digest(obj: object) -> str:
    """Short stable hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def file_digest(path: str | storage.Location) -> dict:
    """Size and sha256 of a file, memoized per process by (path, size, mtime). A gs:// bar
    object staged by `stage_bars` has its local file's digest (its name); another object is
    read and hashed."""
    if isinstance(path, storage.GcsPath):
        if str(path) in _STAGED:
            return _STAGED[str(path)]
        data = storage.read_bytes(path)
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(Path(path))
    return {"bytes": st.st_size, "sha256": _DIGESTS[key]}


def stage_bars(tickers: dict[str, TickerData], cache: storage.Location) -> dict[str, TickerData]:
    """With a gs:// cache: each ticker's bar file as the object `{cache}/bars/{sha256}.parquet`,
    and TickerData pointing at it, so the feature, backtest and oracle tasks read the bars on
    any node of a cluster. A local cache changes nothing.

    Content-addressed: uploaded only when absent (a rerun on the same bars uploads nothing), and
    the digest, so the resume keys and the data fingerprint, stay the local file's. Cost: one
    listing of `bars/` per call and one upload per new file."""
    if not storage.is_remote(cache):
        return tickers
    where = cache / "bars"
    present = set(storage.list_files(where))
    out, uploaded = {}, 0
    for t, td in tickers.items():
        if storage.is_remote(td.path):
            out[t] = td
            continue
        d = file_digest(td.path)
        obj = where / f"{d['sha256']}.parquet"
        if obj.name not in present:
            data = Path(td.path).read_bytes()
            if hashlib.sha256(data).hexdigest() != d["sha256"]:
                raise ValueError(f"{td.path} changed while it was staged to {where}: run again")
            storage.write_bytes(obj, data)
            present.add(obj.name)
            uploaded += 1
        _STAGED[str(obj)] = d
        out[t] = dataclasses.replace(td, path=obj)
    log.info(
        "bars: %d tickers read from %s by the tasks (%d files uploaded, %d already there)",
        len(out),
        where,
        uploaded,
        len(out) - uploaded,
    )
    return out


def code_digest(files: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in files:
        path = PACKAGE / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.exists() else b"")
    return h.hexdigest()[:20]


def cache_dir(cfg: Config, root: Path | None = None) -> storage.Location:
    """`paths.cache`, else `{paths.artifacts}/cache`, absolute (Ray workers read these paths);
    a GcsPath when that is on gs://."""
    root = root or Path.cwd()
    if cfg.paths.cache:
        base = storage.parse(cfg.paths.cache, root, cfg.gcs)
    else:
        base = storage.parse(cfg.paths.artifacts, root, cfg.gcs) / "cache"
    return base if storage.is_remote(base) else base.resolve()


def feature_shape(cfg: Config) -> dict:
    """The config that determines a ticker's feature file."""
    d = cfg.to_dict()
    data = d["data"]
    return {
        "bar": data["bar"],
        "calendar": data["calendar"],
        "regular_session_only": data["regular_session_only"],
        "vwap_tolerance": data["vwap_tolerance"],
        "start": data["start"],
        "end": data["end"],
        "backtest": [d["backtest"]["start"], d["backtest"]["end"]],
        # the store builds every feature whatever the model uses (`features.include`)
        "features": {k: v for k, v in d["features"].items() if k != "include"},
        "labels": d["labels"],
    }


def features_key(cfg: Config, ticker: str, bars_path: str | Path) -> str:
    return digest(
        {
            "v": CACHE_VERSION,
            "ticker": ticker,
            "bars": file_digest(bars_path),
            "shape": feature_shape(cfg),
            "code": code_digest(FEATURE_CODE),
        }
    )


def search_key(cfg: Config, feature_keys: dict[str, str]) -> str:
    d = cfg.to_dict()
    model = {k: v for k, v in d["model"].items() if k != "ensemble"}
    return digest(
        {
            "v": CACHE_VERSION,
            "features": [feature_keys[t] for t in feature_keys],
            "shape": feature_shape(cfg),
            "include": d["features"]["include"],
            "cv": d["cv"],
            "search": d["search"],
            "model": model,
            "code": code_digest(SEARCH_CODE),
        }
    )


def build_features(
    cfg: Config, tickers: dict, store_dir: Path, cache: storage.Location, force: bool = False
) -> dict[str, dict]:
    """The feature store, built only for tickers not already in the cache.

    Returns per-ticker summaries (with `path` into the cache and its `cache_key`) and links the
    files into `store_dir/{ticker}.parquet`, where the run's other readers (HTML report) look
    (not for a gs:// cache: its objects are the store, read where they are).
    """
    fdir = cache / "features"
    storage.makedirs(fdir)
    keys = {t: features_key(cfg, t, td.path) for t, td in tickers.items()}
    out: dict[str, dict] = {}
    for t, key in keys.items():
        summary, parquet = fdir / f"{key}.json", fdir / f"{key}.parquet"
        if not force and storage.exists(summary) and storage.exists(parquet):
            saved = json.loads(storage.read_text(summary))
            out[t] = {**saved, "path": storage.portable(parquet), "from_cache": True}
    todo = {t: tickers[t] for t in tickers if t not in out}
    log.info(
        "features: %d of %d tickers from the resume cache %s, %d to build%s",
        len(out),
        len(tickers),
        fdir,
        len(todo),
        " (--force)" if force else "",
    )
    if todo:
        paths = {t: fdir / f"{keys[t]}.parquet" for t in todo}
        built = build_store(cfg, todo, store_dir, paths=paths)
        for t, s in built.items():
            s = {**s, "cache_key": keys[t]}
            storage.write_json(fdir / f"{keys[t]}.json", s)
            out[t] = {**s, "from_cache": False}
    for t, s in out.items():
        out[t] = {**s, "cache_key": keys[t]}
        if not storage.is_remote(s["path"]):
            _link(Path(s["path"]), store_dir / f"{t}.parquet")
    return {t: out[t] for t in tickers}


def _link(src: Path, dst: Path) -> None:
    """Hard link (survives cache deletion, costs no space), else symlink, else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.resolve() == src.resolve():
        return
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        try:
            dst.symlink_to(src)
        except OSError:
            shutil.copy2(src, dst)


def incomplete_reason(result: SearchResult, cfg: Config | None = None) -> str | None:
    """Why a search result must not be cached or reused (None when it may): it did not end by
    its own rule (all trials, ASHA, a settled race, or the time budget: `info["ended_by"]`),
    e.g. it was interrupted, or was cached before entries recorded that; or it ran another trial
    count."""
    info = result.info or {}
    ended = info.get("ended_by")
    if ended not in OWN_ENDINGS:
        return f"the search ended by {ended or 'an unrecorded cause'}, not by its own rule"
    requested = info.get("trials_requested")
    if cfg is not None and requested != cfg.search.num_samples:
        return f"it ran {requested} trials, search.num_samples is {cfg.search.num_samples}"
    return None


def load_search(path: storage.Location) -> SearchResult | None:
    """A cached search result, or None when absent or unreadable (on gs://: downloaded first;
    a prefix without best.json, which is uploaded last, is absent)."""
    if isinstance(path, storage.GcsPath):
        if not storage.exists(path / "best.json"):
            return None
        with tempfile.TemporaryDirectory(prefix="vpt-search-") as tmp:
            storage.download_dir(path, Path(tmp))
            return load_search(Path(tmp))
    if not (path / "best.json").exists():
        return None
    try:
        best = json.loads((path / "best.json").read_text())
        daily = pd.read_parquet(path / "daily.parquet")
        daily.columns = [int(c) for c in daily.columns]
        return SearchResult(
            best_params=best["best_params"],
            best=best["best"],
            trials=pd.read_parquet(path / "trials.parquet"),
            fold_scores=np.load(path / "fold_scores.npy"),
            daily_perf=daily,
            info=best.get("info", {}),
        )
    except (OSError, ValueError, KeyError) as exc:
        log.warning("search cache %s unreadable (%s): searching again", path, exc)
        return None


def save_search(path: storage.Location, result: SearchResult) -> None:
    """Write the search result to a temp dir, then rename it to `path` (on gs://: replace the
    prefix's files, best.json last)."""
    if isinstance(path, storage.GcsPath):
        with tempfile.TemporaryDirectory(prefix="vpt-search-") as tmp:
            save_search(Path(tmp) / "search", result)
            storage.remove(path)
            storage.upload_dir(Path(tmp) / "search", path, last=("best.json",))
        return
    with atomic_dir(path) as tmp:
        result.trials.to_parquet(tmp / "trials.parquet")
        result.daily_perf.rename(columns=str).to_parquet(tmp / "daily.parquet")
        np.save(tmp / "fold_scores.npy", result.fold_scores)
        (tmp / "best.json").write_text(
            json.dumps(
                {"best_params": result.best_params, "best": result.best, "info": result.info},
                default=_py,
            )
        )


def _py(v: object) -> object:
    return v.item() if hasattr(v, "item") else str(v)


def samples_key(cfg: Config, feature_keys: dict[str, str]) -> str:
    """The training samples' content, for the trial cache (`model.trial_cache`): each ticker's
    feature file, in code order, the features used, the window and labels, and the fit code.
    Unlike `search_key` it leaves out the search's own settings (trials, scheduler, budget), so
    searches that differ only there share their fold fits."""
    d = cfg.to_dict()
    return digest(
        {
            "v": CACHE_VERSION,
            "features": [feature_keys[t] for t in feature_keys],
            "shape": feature_shape(cfg),
            "names": cfg.features.model_features(),
            "code": code_digest(FIT_CODE),
            "labels": d["labels"],
        }
    )


def fit_cache(
    cfg: Config, store: dict[str, dict], cache: storage.Location, force: bool = False
) -> FitCache | None:
    """The final fits' cache (`vpt_ray.model.fit_cache`, in the cache's models/) for this run's
    training rows, keyed like `samples_key` plus the session sampling and the final fit's code;
    None when `search.trial_cache` is off; write-only with `force` (--force recomputes)."""
    if not cfg.search.trial_cache:
        return None
    keys = {t: s["cache_key"] for t, s in store.items()}
    rows = digest(
        {
            "samples": samples_key(cfg, keys),
            "sample_days": cfg.cv.sample_days,
            "code": code_digest(("model/train.py", "model/fit_cache.py", "features/store.py")),
        }
    )
    return FitCache(storage.portable(cache / "models"), rows, read=not force)


def search(
    run: Callable[..., SearchResult],
    cfg: Config,
    store: dict[str, dict],
    m: Matrix,
    folds: list,
    work_dir: Path,
    num_cpus: float,
    cache: storage.Location,
    force: bool = False,
    tune_storage: storage.Location | None = None,
) -> tuple[SearchResult, bool]:
    """The search's result from the cache, else `run`'s (the search stage,
    `vpt_ray.pipeline.stages.search`; then cached); and whether it came from the cache.
    `tune_storage`: where Tune keeps its results (default `work_dir`). The stage is passed in:
    resume wraps a stage and never calls back into the stage module."""

    keys = {t: s["cache_key"] for t, s in store.items()}
    path = cache / "search" / search_key(cfg, keys)
    cached = None if force else load_search(path)
    if cached is not None and (why := incomplete_reason(cached, cfg)):
        log.warning("search cache %s not reused (%s): searching again", path, why)
        cached = None
    if cached is not None:
        log.info("search: reused from the resume cache %s (%d trials)", path, len(cached.trials))
        work_dir.mkdir(parents=True, exist_ok=True)
        cached.trials.to_parquet(work_dir / "trials.parquet")
        cached.daily_perf.rename(columns=str).to_parquet(work_dir / "trials_daily.parquet")
        tracking.log_cached_trials(cached.trials, list(cfg.search.space.model_dump()))  # MLflow
        return cached, True
    bars = int(sum(s.get("bars", 0) for s in store.values()))  # the data size the budget needs
    trials = (storage.portable(cache / "trials"), samples_key(cfg, keys), not force)
    if not cfg.search.trial_cache:
        trials = None
    result = run(
        cfg, m, folds, work_dir, num_cpus, tune_storage=tune_storage, store=store, bars=bars,
        trial_cache=trials,
    )  # fmt: skip
    if why := incomplete_reason(result, cfg):
        log.warning("search: not cached (%s)", why)
        return result, False
    with contextlib.suppress(OSError):
        save_search(path, result)
        log.info(
            "search: cached in %s (%d trials, ended by %s)",
            path,
            result.info["trials_requested"],
            result.info["ended_by"],
        )
    return result, False


ENSEMBLE_CODE = ("model/ensemble.py", "model/train.py", *SEARCH_CODE)


def ensemble_key(cfg: Config, feature_keys: dict[str, str]) -> str:
    """The search's key plus `model.ensemble` and the ensemble code: what shapes the members."""
    return digest(
        {
            "v": CACHE_VERSION,
            "search": search_key(cfg, feature_keys),
            "ensemble": cfg.to_dict()["model"]["ensemble"],
            "code": code_digest(ENSEMBLE_CODE),
        }
    )


def ensemble(
    cfg: Config,
    store: dict[str, dict],
    m: Matrix,
    folds: list,
    result: SearchResult,
    single: xgb.Booster,
    num_cpus: float,
    cache: storage.Location,
    force: bool = False,
    spill_root: Path | None = None,
) -> tuple[ens.EnsembleModel, dict, bool]:
    """Phase 5's ensemble from the cache, else `ensemble.run_ensemble` (then cached): (model,
    its description, whether it came from the cache). The entry is the saved ensemble directory
    (members + ensemble.json, which is written last). `m`, `folds`: the samples the search
    cross-validated; `single`: the train stage's model, reused as the member it is; the members'
    folds go through the trial cache as the search's do."""
    keys = {t: s["cache_key"] for t, s in store.items()}
    path = cache / "ensemble" / ensemble_key(cfg, keys)
    if not force:
        try:
            with storage.local_dir(path / ens.ENSEMBLE_DIR, ens.ENSEMBLE_FILE) as d:
                cached = ens.load_ensemble(d.parent)
        except (OSError, ValueError, KeyError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("ensemble cache %s unreadable (%s): fitting again", path, exc)
            cached = None
        if cached is not None:
            log.info("ensemble: reused from the resume cache %s", path)
            return cached, cached.info, True
    trials = None
    if cfg.search.trial_cache:
        trials = (storage.portable(cache / "trials"), samples_key(cfg, keys), not force)
    rows = training_rows(cfg, store)
    model, info = ens.run_ensemble(
        cfg, m, folds, result, int(num_cpus), rows, single, trials, spill_root,
        fit_cache(cfg, store, cache, force),
    )  # fmt: skip
    with contextlib.suppress(OSError):
        if isinstance(path, storage.GcsPath):
            with tempfile.TemporaryDirectory(prefix="vpt-ensemble-") as tmp:
                saved = ens.save_ensemble(Path(tmp), model)
                storage.remove(path)
                storage.upload_dir(saved, path / ens.ENSEMBLE_DIR, last=(ens.ENSEMBLE_FILE,))
        else:
            ens.save_ensemble(path, model)
        log.info("ensemble: cached in %s", path)
    return model, info, False
