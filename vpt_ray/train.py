"""The final model: fit on the whole training period with the searched configuration, and save it.

A model directory (`artifacts/models/{run_id}/`) holds the booster in XGBoost's native format
(`model.ubj`) plus everything needed to trust and reuse it: the resolved config, the feature list,
the training windows, CV metrics, a data fingerprint, package versions and the git commit. The
directory is assembled under a temp name and renamed into place, so a crash never leaves a model
directory that looks complete.

`python -m vpt_ray.train --config config/base.yaml --sample-days 365` runs data -> features ->
search -> final fit (no backtest), as the seed's `scripts/train_model.py` did.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import xgboost as xgb

from vpt_ray.config import Config
from vpt_ray.run import atomic_dir, write_json_atomic, write_text_atomic
from vpt_ray.search import xgb_params
from vpt_ray.store import Matrix

MODEL_FILE = "model.ubj"


def fit_final(cfg: Config, m: Matrix, hp: dict, rounds: int, nthread: int) -> xgb.Booster:
    """Fit the chosen configuration on every training sample for `rounds` boosting rounds.

    The folds trained on less data than this fit; their median early-stopping round count is
    scaled by the square root of the size ratio, a conservative middle between keeping it and
    scaling it linearly.
    """
    params = xgb_params(hp, nthread, cfg.model.max_bin, seed=cfg.search.seed)
    dtrain = xgb.QuantileDMatrix(m.X, m.y, max_bin=cfg.model.max_bin, feature_names=m.feature_names)
    return xgb.train(params, dtrain, num_boost_round=max(1, rounds), verbose_eval=False)


def final_rounds(fold_rounds: list[int], fold_sizes: list[int], full_size: int) -> int:
    """Rounds for the full fit from the folds' early-stopping rounds (see `fit_final`)."""
    ratio = full_size / max(1.0, float(np.mean(fold_sizes)))
    return int(round(float(np.median(fold_rounds)) * np.sqrt(max(1.0, ratio))))


def save_model(model_dir: Path, booster: xgb.Booster, meta: dict, config_yaml: str) -> Path:
    """Write model + metadata into a temp dir, then rename it to `model_dir`."""
    with atomic_dir(model_dir) as tmp:
        booster.save_model(tmp / MODEL_FILE)
        write_json_atomic(tmp / "meta.json", meta)
        write_text_atomic(tmp / "config.yaml", config_yaml)
    return model_dir


def load_model(model_dir: str | Path) -> tuple[xgb.Booster, dict]:
    """The booster and its metadata; a clear error if the directory is not a complete model."""
    model_dir = Path(model_dir)
    model_path, meta_path = model_dir / MODEL_FILE, model_dir / "meta.json"
    if not model_path.exists() or not meta_path.exists():
        raise FileNotFoundError(
            f"{model_dir}: not a complete model directory (needs {MODEL_FILE} and meta.json); "
            "models are written by `python -m vpt_ray.phase N` or `python -m vpt_ray.train`"
        )
    booster = xgb.Booster()
    booster.load_model(model_path)
    return booster, json.loads(meta_path.read_text())


def main(argv: list[str] | None = None) -> int:
    from vpt_ray.cli import add_config_args, run_cli

    parser = argparse.ArgumentParser(
        prog="python -m vpt_ray.train",
        description="Train the VPT model: data -> features -> purged CV search on Ray Tune -> "
        "final fit, saved to artifacts/models/{run_id}/ (no backtest).",
    )
    add_config_args(parser, default_config="config/base.yaml")
    parser.add_argument(
        "--sample-days",
        type=int,
        default=None,
        help="train and search on N trading days sampled (seeded, stratified) from the period",
    )
    args = parser.parse_args(argv)
    return run_cli(args, stop_after="train")


if __name__ == "__main__":
    raise SystemExit(main())
