"""`model.backend: distributed`: the final fit, data-parallel on Ray Train's `XGBoostTrainer`.

Why: one driver process holds the whole quantized matrix and boosts on its own cores; on a
cluster the training set can be split over workers on several nodes, each holding its share.
Ray Data reads the feature store (only the needed columns; the training window is pushed down to
the parquet scan), a map step keeps the final fit's rows (`train.TrainingRows`, the same rows as
the local fit) and the trainer streams the result to the workers. Each worker builds a
`QuantileDMatrix` from a `DataIter` over its shard's blocks; XGBoost's collective (set up by Ray
Train) merges the quantile sketches and the histograms, so the workers grow one model. The
workers report once at the end (per-round reports cost ~2 s each in Ray 2.60, DESIGN.md) and rank
0 attaches the booster as a checkpoint, which the driver loads; the model directory is the same
as with the local backend.

Costs and choices: XGBoost reads its iterator four times; Ray Data reads the store once and each
worker keeps its blocks on local disk for the other passes (`train.SpilledBatches`; memory: the
quantized shard plus one block). Blocks go to workers in a fixed order (`preserve_order`), so a
run's shards, and its booster, are reproducible; no row is dropped (Ray Train's default split
drops rows to equalize the shards; these may differ by a block). Ray Train does not let its
workers be named: the dashboard shows the run as `final_fit-{run id}` and the data steps as
`ReadFilesParquetV2->MapBatches(select_training_rows)`. With one worker the booster equalled the
local fit's in our check; with several, the rows meet the sketch and the `subsample` draws in
another order, so it is equivalent (accuracy within noise), not identical.

Signals: Ray Train installs its own SIGINT handler for the fit (it asks the controller to abort
and lets `fit()` return as if it had ended), which would replace the run's
(`vpt_ray.core.interrupt`). `_Trainer` keeps the run's handlers and the controller's handle: a
SIGINT or SIGTERM ends the driver's wait at once, the controller is asked to abort (its workers
and their placement group go with it), and the interruption propagates.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import ray.data
import ray.train
import xgboost as xgb
from ray.data.expressions import col, lit
from ray.train.xgboost import XGBoostTrainer

from vpt_ray.core import interrupt, storage
from vpt_ray.core.config import Config
from vpt_ray.core.node_memory import node_scratch
from vpt_ray.core.resources import GB, MB, WORKER_BASELINE_BYTES, clamp_task_memory, ray_data_limits
from vpt_ray.features.causal import complete_rows
from vpt_ray.model.folds import xgb_params
from vpt_ray.model.train import MODEL_FILE, SpilledBatches, TrainingRows

log = logging.getLogger("vpt_ray.distributed")
DATASET = "train"


@dataclass(frozen=True)
class WorkerPlan:
    """How the distributed fit uses the CPUs Ray has (see `plan_workers`)."""

    workers: int
    cpus_per_worker: float  # what each Ray Train worker reserves
    data_cpus: float  # what Ray Data's read/select tasks may use meanwhile
    nthread: int  # XGBoost threads per worker (boosting starts after the reads end)
    notes: tuple[str, ...]  # why `workers` is below `model.num_workers`, for the log


def plan_workers(requested: int, cpus: float, files: int) -> WorkerPlan:
    """`requested` workers, clamped to the CPUs Ray has and to the files holding samples (a worker
    with no rows would stall XGBoost's collective). Ray Data keeps a quarter of the CPUs, at least
    one (its file-listing task needs a whole CPU); the workers split the rest."""
    if cpus < 2:
        raise ValueError(
            f"model.backend 'distributed' needs at least 2 CPUs in Ray (one for Ray Data's reads, "
            f"the rest for the Ray Train workers); Ray has {cpus:g}: use model.backend 'local' "
            "or raise hardware.num_cpus"
        )
    notes = []
    data_cpus = float(max(1, int(cpus) // 4))
    workers = requested
    if workers > int(cpus):
        notes.append(f"{workers} -> {int(cpus)} (Ray has {cpus:g} CPUs)")
        workers = int(cpus)
    if workers > files:
        notes.append(f"{workers} -> {files} (only {files} ticker files hold training samples)")
        workers = files
    per_worker = (cpus - data_cpus) / workers
    return WorkerPlan(workers, per_worker, data_cpus, max(1, int(cpus // workers)), tuple(notes))


def training_dataset(rows: TrainingRows, block_bytes: int) -> ray.data.Dataset:
    """The final fit's rows as a Ray dataset of blocks {"X": float32 rows x features, "y"}."""
    held = [p for p, n in zip(rows.paths, rows.rows, strict=True) if n]
    files, fs = _scan_paths(held)
    last = dict(zip(_scan_paths(rows.paths)[0], rows.last_session, strict=True))
    lo, hi = pd.Timestamp(rows.start), pd.Timestamp(rows.end)
    ds = (
        ray.data.read_parquet(files, filesystem=fs, include_paths=True)
        .select_columns(["session", "pos", "label_end", "y", *rows.names, "path"])
        .filter(expr=(col("session") >= lit(lo)) & (col("session") <= lit(hi)))
        .map_batches(
            select_training_rows,
            fn_kwargs={"rows": rows, "last_session": last},
            batch_format="numpy",
            batch_size=None,
        )
    )
    ds.context.target_max_block_size = block_bytes
    ds.set_name("final_fit")  # the dashboard's Ray Data view
    return ds


def _scan_paths(paths: tuple | list) -> tuple[list[str], object]:
    """Ray Data's paths and filesystem for store files: local paths as they are, gs:// objects
    as bucket keys with the pyarrow filesystem that reaches them (as `storage.read_parquet`)."""
    remote = [p for p in paths if isinstance(p, storage.GcsPath)]
    if not remote:
        return [str(p) for p in paths], None
    if len(remote) < len(paths):
        raise ValueError("final fit: the feature store mixes local files and gs:// objects")
    fs, _ = storage.arrow_filesystem(remote[0])
    return [p.key for p in remote], fs


def select_training_rows(
    batch: dict[str, np.ndarray], rows: TrainingRows, last_session: dict[str, int]
) -> dict[str, np.ndarray]:
    """Keep a block's training samples (`TrainingRows.mask`, each row with its file's last
    labelled session) as one float32 feature matrix and the labels."""
    files, inverse = np.unique(batch["path"], return_inverse=True)
    unknown = [f for f in files if f not in last_session]
    if unknown:
        raise ValueError(f"final fit: Ray Data returned rows of {unknown}, not a store file")
    last = np.array([last_session[f] for f in files], dtype=np.int64)[inverse]
    keep = rows.mask(batch["pos"], batch["label_end"], batch["y"], last)
    X = np.empty((int(keep.sum()), len(rows.names)), dtype=np.float32)
    for j, name in enumerate(rows.names):
        X[:, j] = batch[name][keep]
    ok = complete_rows(X)
    return {"X": X[ok], "y": batch["y"][keep][ok].astype(np.float32)}


def final_fit_worker(config: dict) -> None:
    """Ray Train's loop on each worker: shard -> QuantileDMatrix -> boost -> one report."""
    shard = ray.train.get_dataset_shard(DATASET)

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b in shard.iter_batches(batch_size=None, batch_format="numpy"):
            yield b["X"], b["y"]

    scratch = node_scratch()  # removed on every node when the run ends, even after a kill
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vpt-final-fit-", dir=scratch) as spill:
        it = SpilledBatches(blocks, config["names"], Path(spill))  # one Ray Data epoch
        dtrain = xgb.QuantileDMatrix(it, max_bin=config["max_bin"], nthread=config["nthread"])
    local = np.array([dtrain.num_row()], dtype=np.float64)
    total = int(xgb.collective.allreduce(local, xgb.collective.Op.SUM)[0])
    booster = xgb.train(
        config["params"], dtrain, num_boost_round=config["rounds"], verbose_eval=False
    )
    rank = ray.train.get_context().get_world_rank()
    metrics = {"samples": total, "rank_samples": int(local[0])}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        booster.save_model(Path(tmp) / MODEL_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


class _SplitAllRows(ray.train.DataConfig):
    """Ray Train's default sharding with `equal=False`: the default `equal=True` drops rows so
    every worker gets the same count, and the final fit must train on every sample."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        ds = datasets[DATASET]
        ds.context.execution_options = self._resolve_execution_options(DATASET)
        hints = worker_node_ids if self._enable_shard_locality else None
        splits = ds.streaming_split(world_size, equal=False, locality_hints=hints)
        return [{DATASET: s} for s in splits]


class _Trainer(XGBoostTrainer):
    """`XGBoostTrainer` that leaves SIGINT to the run and keeps the controller to abort."""

    controller = None

    def _register_sigint_handler(self, controller) -> None:  # noqa: ANN001 - Ray's ActorHandle
        self.controller = controller  # Ray Train would install its own SIGINT handler here


ABORT_TIMEOUT_S = 15.0  # an abort takes ~1-2 s; past this the driver's exit ends the fit anyway


def _abort(controller) -> None:  # noqa: ANN001 - Ray's ActorHandle
    """Ask an interrupted fit's controller to stop its workers (it exits when done); a few
    seconds at most, and nothing to do when it is already gone."""
    if controller is None:
        return
    with contextlib.suppress(Exception):  # the controller exits inside abort: RayActorError
        ray.get(controller.abort.remote(), timeout=ABORT_TIMEOUT_S)
    log.warning("distributed final fit interrupted: its Ray Train workers were stopped")


def fit_distributed(
    cfg: Config, rows: TrainingRows, hp: dict, rounds: int, run_dir: storage.Location, name: str
) -> tuple[xgb.Booster, dict]:
    """Fit the chosen configuration on `rows` with `model.num_workers` Ray Train workers.

    `run_dir` (local or gs://, reachable by every node) holds Ray Train's run `name` and its
    checkpoint; returns the booster and what the fit used (workers, CPUs, memory per worker,
    Ray Data limits) for the model's metadata.
    """
    cpus = float(ray.cluster_resources().get("CPU", 1))
    files = sum(1 for n in rows.rows if n)
    plan = plan_workers(cfg.model.num_workers, cpus, files)
    for note in plan.notes:
        log.warning("model.num_workers clamped: %s", note)
    n_feat = len(rows.names)
    shard_rows = -(-rows.n_rows // plan.workers)
    float_bytes = rows.n_rows * (n_feat + 1) * 4
    block_bytes = int(min(128 * MB, max(64 * 1024, float_bytes // (4 * plan.workers))))
    memory = clamp_task_memory(
        worker_bytes(shard_rows, n_feat, block_bytes), plan.workers, "final-fit worker"
    )
    # the CPUs the workers leave; order preserved so the shards are the same on every run
    limits = ray_data_limits(cfg.hardware, plan.data_cpus, preserve_order=True)
    log.info(
        "distributed final fit: %d Ray Train workers x %.2f CPUs (%d XGBoost threads each, "
        "%.2f GB declared), %d samples in %d files; Ray Data limited to %.2f CPUs and %.2f GB "
        "of object store",
        plan.workers,
        plan.cpus_per_worker,
        plan.nthread,
        memory / GB,
        rows.n_rows,
        files,
        limits.resource_limits.cpu,
        limits.resource_limits.object_store_memory / GB,
    )
    ds = training_dataset(rows, block_bytes)
    train_path, train_fs = storage.tune_storage(run_dir)
    ds.context.execution_options = limits
    trainer = _Trainer(
        final_fit_worker,
        train_loop_config={
            "params": xgb_params(hp, plan.nthread, cfg.model.max_bin, seed=cfg.search.seed),
            "rounds": max(1, rounds),
            "names": list(rows.names),
            "max_bin": cfg.model.max_bin,
            "nthread": plan.nthread,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.workers,
            resources_per_worker={"CPU": plan.cpus_per_worker, "memory": memory},
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(train_path), storage_filesystem=train_fs
        ),
        datasets={DATASET: ds},
        dataset_config=_SplitAllRows(execution_options=limits),
    )
    try:
        result = trainer.fit()
    except KeyboardInterrupt:  # the run's SIGINT / SIGTERM, raised inside Ray's wait
        _abort(trainer.controller)
        raise
    finally:
        interrupt.install()  # whatever Ray Train changed, the run's handlers are back
    trained = int(result.metrics["samples"])
    if trained != rows.n_rows:
        raise RuntimeError(
            f"distributed final fit trained on {trained} samples, the selection has "
            f"{rows.n_rows}: Ray Data lost or repeated blocks"
        )
    with result.checkpoint.as_directory() as ckpt:
        booster = xgb.Booster()
        booster.load_model(Path(ckpt) / MODEL_FILE)
    info = {
        "workers": plan.workers,
        "cpus_per_worker": round(plan.cpus_per_worker, 3),
        "nthread": plan.nthread,
        "memory_per_worker_gb": round(memory / GB, 3),
        "data_cpus": plan.data_cpus,
        "data_object_store_gb": round(limits.resource_limits.object_store_memory / GB, 3),
        "clamped": list(plan.notes),
    }
    return booster, info


def worker_bytes(rows: int, features: int, block_bytes: int) -> int:
    """Memory a worker declares for `rows` samples: ~6 bytes a cell for XGBoost's hist matrices
    (not `resources.quantized_bytes`' 1: with missing values, which the features have at the
    start of a ticker's history, bin ids take 4 bytes, plus the column index) and ~32 bytes a
    row for gradients and predictions; this matches the local streaming fit's measured peak
    (468 MB for 1.9 M samples x 36 features, bench/bench_final_fit.py --stride 1). Plus two
    blocks in flight and the process itself."""
    return rows * (6 * features + 32) + 2 * block_bytes + WORKER_BASELINE_BYTES
