"""Experiment tracking in MLflow: optional, local by default, one MLflow run per vpt-ray run.

Why here and not only the scaling tracker: the tracker keeps the seed's two tables; MLflow keeps
every run's full settings and figures searchable side by side (`mlflow ui`), next to tools teams
already use. With `tracking.mlflow: true` (or `--mlflow` on any run command) a run logs:

- params: the resolved config, flattened to dotted keys (`search.num_samples`, ...): the same
  values as `config.yaml`, which holds no secrets by construction (the Polygon key is read from
  an environment variable whose *name* is the setting);
- metrics: CV, out-of-sample, backtest, benchmark, overfitting and resource figures of
  metrics.json, flattened the same way (`cv.accuracy`, `backtest.sharpe`,
  `resources.peak_memory_gb`);
- artifacts: the report directory (metrics.json, summary.md, report.html, config.yaml, trades),
  the model directory and the scaling tracker;
- the search's trials as nested runs, through Ray Tune's own MLflow integration
  (`ray.air.integrations.mlflow.MLflowLoggerCallback` with the phase run as `mlflow.parentRunId`);
  a search reused from the resume cache ran no trials, so its trials table is logged as the
  nested runs instead (`log_cached_trials`, tagged `vpt.from_cache`).

Where: `tracking.uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db` in the working
directory, MLflow's recommended local store (its `./mlruns` file store is in maintenance mode in
MLflow 3 and needs MLFLOW_ALLOW_FILE_STORE=true to be read); the artifacts of a sqlite store go
to `mlruns/` next to the database file. Browse with `mlflow ui --backend-store-uri
sqlite:///mlflow.db` (the full `mlflow` package). MLflow is the optional extra
`pip install -e '.[mlflow]'` (the client, `mlflow-skinny`, with SQLAlchemy and Alembic for the
sqlite store); asking for it without the package is a config error before the run starts. Cost:
a few hundred rows per run in the database, and a copy of the report (~5 MB with report.html)
and the model.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from vpt_ray.core.config import Config, ConfigError

log = logging.getLogger("vpt_ray.tracking")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH = 100  # params per log_batch call (MLflow's limit)
METRIC_SECTIONS = ("cv", "oos", "backtest", "benchmark", "overfitting", "search", "resources")
SKIP_KEYS = {"folds", "per_ticker", "table", "memory_samples", "validation", "ray"}
DEFAULT_DB = "mlflow.db"  # the default store: sqlite in the working directory


@dataclass
class MlflowRun:
    """The MLflow run of one vpt-ray run: where it lives and its id; `trials` says how its
    search's trials were logged as nested runs (or why they were not)."""

    uri: str
    experiment: str
    run_id: str
    experiment_id: str = ""
    trials: str = "no search trials logged (the run has no search)"

    def where(self) -> str:
        """One line for the summary: the run, its experiment and store, the trials."""
        return f"run {self.run_id} in experiment {self.experiment!r} at {self.uri}; {self.trials}"

    @property
    def client(self):  # noqa: ANN201 - mlflow.MlflowClient (optional dependency)
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def log_metrics(self, metrics: dict) -> int:
        """Log metrics.json's figures (flattened, numeric only); returns how many."""
        from mlflow.entities import Metric

        figures = metric_values(metrics)
        now = _now_ms()
        items = [Metric(k, v, now, 0) for k, v in figures.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])
        return len(items)

    def log_artifacts(self, **dirs: Path | None) -> None:
        """Copy each existing local directory or file under the artifact path named by its key
        (up to an underscore: `tracker_chart` goes under `tracker/`)."""
        client = self.client
        for name, path in dirs.items():
            if path is None or not Path(path).exists():
                continue
            where = name.split("_")[0]
            if Path(path).is_dir():
                client.log_artifacts(self.run_id, str(path), artifact_path=where)
            else:
                client.log_artifact(self.run_id, str(path), artifact_path=where)

    def set_tags(self, tags: dict[str, object]) -> None:
        for k, v in tags.items():
            if v is not None:
                self.client.set_tag(self.run_id, k, str(v))


_ACTIVE: MlflowRun | None = None  # the run whose search is going on, for `tune_callbacks`


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested dicts to dotted keys; lists and other values stay whole."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values as text (capped in length)."""
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(cfg.to_dict()).items()}


def metric_values(metrics: dict) -> dict[str, float]:
    """metrics.json's numeric figures of `METRIC_SECTIONS`, dotted keys (tables and samples
    left out: they are in the report artifacts)."""
    out: dict[str, float] = {}
    for section in METRIC_SECTIONS:
        part = metrics.get(section)
        if not isinstance(part, dict):
            continue
        part = {k: v for k, v in part.items() if k not in SKIP_KEYS}
        for k, v in flatten(part, f"{section}.").items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if math.isfinite(v):
                out[k] = float(v)
    return out


def tracking_uri(cfg: Config, root: Path) -> str:
    """`tracking.uri`, else `$MLFLOW_TRACKING_URI`, else a sqlite store `root/mlflow.db`."""
    return (
        cfg.tracking.uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{(root / DEFAULT_DB).resolve()}"
    )


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: `mlruns/` next to a local sqlite database
    (MLflow's own default is `./mlruns` of whatever directory the run started in); None (the
    store's default) for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix + ":memory:":
        return None
    return (Path(uri[len(prefix) :]).resolve().parent / "mlruns").as_uri()


def check_available(cfg: Config) -> None:
    """Fail before the run starts when MLflow is asked for but not installed."""
    if not cfg.tracking.mlflow:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(
            "tracking.mlflow = true (or --mlflow) needs MLflow, which is not installed: "
            "pip install -e '.[mlflow]' (or set tracking.mlflow=false)"
        ) from None


def start_run(cfg: Config, run_id: str, root: Path, tags: dict[str, object]) -> MlflowRun | None:
    """Create the MLflow run of `run_id` with the config as params, when `tracking.mlflow` is
    on (else None); it becomes the active run whose search trials nest under it."""
    global _ACTIVE
    if not cfg.tracking.mlflow:
        return None
    check_available(cfg)
    from mlflow import MlflowClient
    from mlflow.entities import Param

    uri = tracking_uri(cfg, root)
    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3.7+ keeps its file store in "maintenance mode" and refuses it unless asked:
        # a file store the user chose (tracking.uri) still works
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database
        logging.getLogger(name).setLevel(logging.WARNING)  # tables...": not a console line
    client = MlflowClient(tracking_uri=uri)
    try:
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        exp_id = (
            exp.experiment_id
            if exp
            else client.create_experiment(
                cfg.tracking.experiment, artifact_location=artifact_location(uri)
            )
        )
    except Exception as exc:  # noqa: BLE001 - any store error: one line naming the store
        raise ConfigError(
            f"tracking.mlflow: cannot use the MLflow store at {uri} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}); set tracking.uri or MLFLOW_TRACKING_URI"
        ) from None
    all_tags = {"vpt.run_id": run_id, **{k: str(v) for k, v in tags.items() if v is not None}}
    created = client.create_run(exp_id, run_name=run_id, tags=all_tags)
    run = MlflowRun(uri, cfg.tracking.experiment, created.info.run_id, exp_id)
    params = [Param(k, v) for k, v in config_params(cfg).items()]
    for i in range(0, len(params), BATCH):
        client.log_batch(run.run_id, params=params[i : i + BATCH])
    log.info("MLflow: run %s in experiment %r at %s", run.run_id, run.experiment, uri)
    _ACTIVE = run
    return run


def finish_run(
    run: MlflowRun | None, status: str, error: str | None = None, **artifacts: Path | None
) -> None:
    """Log metrics.json's figures (from the `report` artifact directory) and the artifacts, then
    end the run: FINISHED for a finished or memory-stopped run (tag `vpt.status` says which),
    FAILED otherwise. Never raises: tracking must not hide or replace the run's own outcome."""
    global _ACTIVE
    if run is None:
        return
    _ACTIVE = None
    try:
        report = artifacts.get("report")
        metrics_file = Path(report) / "metrics.json" if report else None
        if metrics_file is not None and metrics_file.exists():
            import json

            metrics = json.loads(metrics_file.read_text())
            run.log_metrics(metrics)
            verdict = (metrics.get("decision") or {}).get("verdict")
            run.set_tags(
                {"vpt.verdict": verdict, "vpt.synthetic": metrics.get("data", {}).get("synthetic")}
            )
        run.log_artifacts(**artifacts)
        run.set_tags({"vpt.status": status, "vpt.error": error[:5000] if error else None})
        run.client.set_terminated(
            run.run_id, "FINISHED" if status in ("FINISHED", "STOPPED") else "FAILED"
        )
    except Exception:  # noqa: BLE001 - logged; the run's own result stands
        log.exception("MLflow: logging run %s failed", run.run_id)


def tune_callbacks() -> list:
    """Tune callbacks that log each search trial as a run nested under the active MLflow run
    (Ray Tune's own integration); none when no MLflow run is active."""
    if _ACTIVE is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    _ACTIVE.trials = "each search trial a nested run (logged by Ray Tune as it ran)"

    return [
        MLflowLoggerCallback(
            tracking_uri=_ACTIVE.uri,
            experiment_name=_ACTIVE.experiment,
            tags={"mlflow.parentRunId": _ACTIVE.run_id, "vpt.kind": "trial"},
        )
    ]


def active_run() -> MlflowRun | None:
    """The MLflow run of the vpt-ray run going on in this process, if MLflow is on."""
    return _ACTIVE


def log_cached_trials(trials, param_names: list[str]) -> None:  # noqa: ANN001 - a DataFrame
    """Log a search's trials table as runs nested under the active MLflow run, when the search
    came from the resume cache (no trial ran, so Tune's callback logged none): the search space's
    columns (`param_names`) as params, the numeric rest as metrics, tags `vpt.kind` "trial" and
    `vpt.from_cache`. Never raises: a failure is logged and named in the run's summary."""
    run = _ACTIVE
    if run is None:
        return
    from mlflow.entities import Metric, Param

    try:
        client, now = run.client, _now_ms()
        for row in trials.to_dict(orient="records"):
            tags = {"mlflow.parentRunId": run.run_id, "vpt.kind": "trial",
                    "vpt.from_cache": "true", "vpt.trial_id": str(row.get("trial_id")),
                    "vpt.trial_status": str(row.get("status"))}  # fmt: skip
            child = client.create_run(
                run.experiment_id, run_name=f"trial {row.get('trial_id')} (cached)", tags=tags
            )
            params = [Param(k, str(row[k])) for k in param_names if k in row]
            metrics = [
                Metric(k, float(v), now, 0)
                for k, v in row.items()
                if k not in param_names
                and isinstance(v, int | float)
                and not isinstance(v, bool)
                and math.isfinite(v)
            ]
            client.log_batch(child.info.run_id, metrics=metrics, params=params)
            client.set_terminated(child.info.run_id, "FINISHED")
        run.trials = (
            f"{len(trials)} search trials as nested runs, from the resume cache's trials table "
            "(the search was reused: no trial ran in this run)"
        )
    except Exception as exc:  # noqa: BLE001 - tracking must not end the run
        log.exception("MLflow: the cached search's trials were not logged")
        run.trials = f"the cached search's trials were not logged ({type(exc).__name__}: {exc})"
    log.info("MLflow: %s", run.trials)
