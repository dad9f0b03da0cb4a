"""`report.html`: one self-contained page that answers "did it learn, where, at what cost, and
should I scale?" for one run, one module per section (`decision`, `learning`, `predictions`,
`backtest`, `trades`, `pnl`, `risk`, `oracle`, `resources`), assembled by `page`.

Why apart from the run report (`vpt_ray.report.run_report`, the machine-readable files): this
package reads them back from disk only (`inputs`), so the page can be rebuilt for any finished
run with `vpt report RUN_ID` (or `python -m vpt_ray.html_report RUN_ID`) after the fact.

Charts are plotly figures; plotly.js is embedded once in the page (about 4.7 MB), so the file opens
offline with no CDN. A section whose inputs are missing says so instead of failing the page.
"""
