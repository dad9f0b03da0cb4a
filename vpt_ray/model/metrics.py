"""Classification metrics shared by CV, the search and the out-of-sample evaluation.

One function, so a number called "accuracy" means the same thing in the search, the final model
and the report. Metric names used as Tune objectives are constants here.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

VAL_LOG_LOSS = "val_log_loss"


def classification(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """accuracy (threshold 0.5), AUC and log loss of probabilities `p` for labels `y`."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    if len(y) == 0:
        raise ValueError("classification metrics need at least one sample")
    both = 0 < y.sum() < len(y)
    return {
        "accuracy": float(np.mean((p > 0.5) == (y > 0.5))),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "samples": int(len(y)),
        "base_rate": float(y.mean()),
    }
