"""What a run leaves for people and tools: `metrics.json`, trades, equity and `summary.md`
(`run_report`), the self-contained `report.html` (`html`, a module per section), the scaling
tracker's tables and chart across runs (`tracker`) and runs side by side (`compare`); the
baselines in words (`evidence`: the naive predictor, the robustness lines).

Reads results and the validation figures; the pipeline decides when to write them.
"""
