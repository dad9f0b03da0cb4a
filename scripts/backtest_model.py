"""`python scripts/backtest_model.py --model-dir artifacts/models/RUN_ID --start-date 2024-07-08
--end-date 2024-12-31`: the seed's backtest command, verbatim. Same as `vpt backtest`
(`python -m vpt_ray.backtest`): the window must lie outside the model's training period (the
default phase-1 model trains until 2024-06-28, so the seed's 2024-01-01..2024-06-30 is refused for
it, naming the window to use instead). Writes a report and a tracker row "backtest of RUN_ID"."""

import sys

from vpt_ray.backtest.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
