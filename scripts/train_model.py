"""`python scripts/train_model.py --config config/base.yaml --sample_days 365`: the seed's training
command, verbatim. Same as `vpt train` (`python -m vpt_ray.train`): data -> features -> search ->
final model in artifacts/models/{run_id}/, no backtest. Flags: `--sample_days`/`--sample-days`,
`--config`, `--set key=value`, `--run-id`, `--mlflow`."""

import sys

from vpt_ray.train import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
