"""`python scripts/phase1_train.py`: the seed's phase-1 training command. Trains phase 1's model
(config/phase1.yaml: 5 tickers, 2023-01-03..2024-06-28) without the backtest; any flag of
`vpt train` may follow (`--set key=value`, `--sample_days N`, `--mlflow`)."""

import sys
from pathlib import Path

from vpt_ray.train import main

PHASE1 = Path(__file__).resolve().parent.parent / "config" / "phase1.yaml"

if __name__ == "__main__":
    raise SystemExit(main(["--config", str(PHASE1), *sys.argv[1:]]))
