"""`python scripts/phase1_backtest.py`: the seed's phase-1 backtest command. Backtests the newest
phase-1 model under artifacts/models on its own out-of-sample window (2024-07-08..2024-12-31 for
config/phase1.yaml); `--start-date`/`--end-date`, `--set key=value` and `--mlflow` may follow."""

import sys

from vpt_ray.backtest.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main(["--latest-phase", "1", *sys.argv[1:]]))
