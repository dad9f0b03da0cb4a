"""Is the result real, and what to do about it: the overfitting statistics (`overfitting`:
deflated Sharpe, PBO), the standard errors every rule compares against (`uncertainty`), the
honesty section of the search (`honesty`), the known-truth oracle on the synthetic market
(`oracle`) and the verdict advance / stop / optimize / hold (`decision`).

Reads the model's and the backtest's results; imports nothing from the report or the pipeline.
"""
