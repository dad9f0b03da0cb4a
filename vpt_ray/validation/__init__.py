"""Is the result real, and what to do about it: the overfitting statistics (`overfitting`:
deflated Sharpe, PBO), the standard errors every rule compares against (`uncertainty`), the
baselines a result must beat (`baseline`: the naive predictor, buy-and-hold), the honesty
section of the search (`honesty`), the known-truth oracle on the synthetic market (`oracle`) and
the verdict advance / stop / optimize / hold (`decision`; its advance gates as one-sided tests in
`advance`, the evidence and check types in `checks`).

Reads the model's and the backtest's results; imports nothing from the report or the pipeline.
"""
