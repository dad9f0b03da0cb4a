"""Stages 3-5, the model: purged walk-forward CV splits (`cv`), fitting the folds with plain
XGBoost (`folds`), the Ray Tune hyperparameter search with its time budget and progress
(`search`, `budget`, `search_progress`), the final
XGBoost fit and the saved model format (`train`, with Ray Train in `distributed`), the seed /
hyperparameter ensemble (`ensemble`) and the one definition of the classification metrics
(`metrics`).

Sits above `vpt_ray.backtest` (the search scores trials with the backtest's trading rules,
`vpt_ray.backtest.proxy`) and `vpt_ray.features`.
"""
