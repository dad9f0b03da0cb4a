"""Whether a ticker's bars carry any volume-price information: the exclusion rule and its facts.

Why: a ticker whose volume is zero in every bar, or whose close never moves, passes the bar
contract but gives the model nothing (its volume features are undefined or constant, every label
is "not up") and cannot be traded (orders are capped by the bar's volume). Such a ticker used to
drop out of training by accident, with no word; here it is excluded by a stated rule, with a
warning and a line in the report's data section. Cost: one pass over the ticker's bars, in the
feature task that reads them anyway.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RULES = (
    "no bars in the training window",
    "zero volume in every bar of the training window",
    "constant price: the close never changes in the training window",
)


def window_facts(bars: pd.DataFrame) -> dict:
    """Counts behind the rule for contract bars of one window: bars, bars with zero volume,
    close-to-close changes."""
    close = bars["close"].to_numpy(np.float64)
    return {
        "bars": int(len(bars)),
        "zero_volume_bars": int((bars["volume"].to_numpy() <= 0).sum()),
        "price_changes": int((close[1:] != close[:-1]).sum()),
    }


def exclusion_reason(train: dict) -> str | None:
    """The rule a ticker breaks given its training window's `window_facts` (None: usable)."""
    if train["bars"] == 0:
        return RULES[0]
    if train["zero_volume_bars"] == train["bars"]:
        return RULES[1]
    if train["price_changes"] == 0:
        return RULES[2]
    return None
