"""Errors of the remote data sources (GCS, Polygon), shared with the chain that calls them.

A remote failure must tell the user which ticker and dates were affected and why, in one line, so
the chain can report it or move on to the next source. Bar contract violations stay
`vpt_ray.data.bars.BarDataError`; this type is for transport, service and credential problems.
"""

from __future__ import annotations

import datetime as dt


class SourceError(ValueError):
    """A remote source could not deliver bars; the message names source, ticker, dates and cause.

    `retryable` says whether running again later may succeed (rate limits, outages), as opposed
    to a rejected key or an unusable response.
    """

    def __init__(
        self,
        source: str,
        cause: str,
        ticker: str | None = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
        retryable: bool = False,
    ):
        self.source, self.cause, self.ticker = source, cause, ticker
        self.start, self.end, self.retryable = start, end, retryable
        where = ticker or ""
        if start is not None and end is not None:
            where += f" {start}..{end}" if where else f"{start}..{end}"
        super().__init__(f"{source}: {where}: {cause}" if where else f"{source}: {cause}")

    def __reduce__(self):  # pickled by Ray between processes: rebuild from the same arguments
        return type(self), (
            self.source, self.cause, self.ticker, self.start, self.end, self.retryable
        )  # fmt: skip
