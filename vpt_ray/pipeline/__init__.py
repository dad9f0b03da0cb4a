"""The pipeline: `phase.run_phase` lists the stages in order (data, features, CV, search, final
model, ensemble, backtest, report, tracker, decision) and calls the stage functions in `stages`
and, for the report stage, `outputs` (with `evidence`: the naive predictor, buy-and-hold and
higher costs, for the decision).
Two wrappers go around stages without being called back by them: the resume cache (`resume`,
which reuses a feature store or a search a previous run computed) and the memory stop
(`memory_stop`, which turns a crossed memory limit into a clean STOPPED run). The verdict's
"optimize" action (`optimize`), the config's cross-checks against Ray's resources before any
compute (`preflight`), the leakage audit (`audit`) and the command-line front ends (`cli`,
`backtest_cli`, `data_cli`, `commands`) live here too.

The top layer: it may import every other package; nothing imports it.
"""
