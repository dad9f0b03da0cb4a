"""The phase 5 backtest universe: tickers in a price band, chosen before the backtest starts.

Why: the model is trained on `data.tickers` but phase 5 backtests it on the stocks the strategy
is meant for, those trading at $10-20. Which stocks those are must be decided with what was known
before `backtest.start` (an average close over the `universe.lookback_days` sessions before it),
or the selection itself leaks the out-of-sample prices. `select_universe` is the pure rule;
`resolve_universe` fetches the candidates through the data chain, applies the rule and builds the
selected tickers' bars and features for [lookback start, backtest.end].
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import pandas as pd

from vpt_ray.core.config import Config, UniverseConfig
from vpt_ray.data import chain, local
from vpt_ray.data.chain import DataUnavailableError, TickerData

log = logging.getLogger("vpt_ray.universe")
EXCHANGE_TZ = "America/New_York"


class UniverseError(ValueError):
    """Too few candidates qualify for the backtest universe."""


@dataclass(frozen=True)
class Selection:
    """Who was selected and rejected, with the figures that decided it."""

    selected: list[str]
    rejected: dict[str, str]  # ticker -> reason
    avg_price: dict[str, float]  # every candidate with lookback data
    dollar_volume: dict[str, float]  # average daily close x volume over the lookback
    sessions: dict[str, int]  # lookback sessions each candidate had
    window: tuple[str, str] | None  # first and last lookback session seen
    rules: dict = field(default_factory=dict)

    def section(self) -> dict:
        """metrics.json's `universe` section."""
        return {
            **self.rules,
            "window": list(self.window) if self.window else None,
            "selected_count": len(self.selected),
            "selected": [
                {
                    "ticker": t,
                    "avg_price": round(self.avg_price[t], 4),
                    "dollar_volume": round(self.dollar_volume[t], 2),
                    "sessions": self.sessions[t],
                    "reason": f"average close {self.avg_price[t]:.2f} in "
                    f"[{self.rules['min_price']:g}, {self.rules['max_price']:g}]",
                }
                for t in self.selected
            ],
            "rejected": [
                {
                    "ticker": t,
                    "avg_price": round(self.avg_price[t], 4) if t in self.avg_price else None,
                    "reason": r,
                }
                for t, r in sorted(self.rejected.items())
            ],
        }


def _daily(bars: pd.DataFrame, tz: str) -> pd.DataFrame:
    """Per session: the last close and the session's dollar volume."""
    ts = pd.to_datetime(bars["timestamp"], utc=True).dt.tz_convert(tz)
    frame = pd.DataFrame(
        {
            "session": ts.dt.date.to_numpy(),
            "close": bars["close"].to_numpy(float),
            "dollars": (bars["close"] * bars["volume"]).to_numpy(float),
        }
    )
    grouped = frame.groupby("session", sort=True)
    return grouped.agg(close=("close", "last"), dollars=("dollars", "sum"))


def select_universe(
    bars: dict[str, pd.DataFrame | None],
    backtest_start: dt.date,
    rules: UniverseConfig,
    tz: str = EXCHANGE_TZ,
) -> Selection:
    """Apply the band rule to each candidate's bars (any bar size; `None` = no data).

    Only sessions strictly before `backtest_start` count (no lookahead): the last
    `rules.lookback_days` of them, averaged as daily closes. A candidate with fewer than half of
    those sessions is rejected. In-band candidates beyond `rules.max_tickers` are cut by average
    dollar volume (most liquid kept); fewer than `rules.min_tickers` raises `UniverseError`.
    """
    avg: dict[str, float] = {}
    dollars: dict[str, float] = {}
    sessions: dict[str, int] = {}
    rejected: dict[str, str] = {}
    in_band: list[str] = []
    seen: list[dt.date] = []
    lo, hi = rules.min_price, rules.max_price
    need = max(1, (rules.lookback_days + 1) // 2)
    for t, df in bars.items():
        if df is None or len(df) == 0:
            rejected[t] = "no data"
            continue
        daily = _daily(df, tz)
        daily = daily[daily.index < backtest_start].tail(rules.lookback_days)
        sessions[t] = len(daily)
        if len(daily) < need:
            rejected[t] = (
                f"no data: {len(daily)} of {rules.lookback_days} lookback sessions before "
                f"{backtest_start} (need {need})"
            )
            continue
        seen += [daily.index[0], daily.index[-1]]
        avg[t] = float(daily["close"].mean())
        dollars[t] = float(daily["dollars"].mean())
        if lo <= avg[t] <= hi:
            in_band.append(t)
        else:
            side = "below" if avg[t] < lo else "above"
            rejected[t] = f"average close {avg[t]:.2f} {side} [{lo:g}, {hi:g}]"
    ranked = sorted(in_band, key=lambda t: (-dollars[t], t))
    for t in ranked[rules.max_tickers :]:
        rejected[t] = (
            f"average close {avg[t]:.2f} in band, but beyond universe.max_tickers "
            f"({rules.max_tickers}) by dollar volume"
        )
    selected = sorted(ranked[: rules.max_tickers])
    if len(selected) < rules.min_tickers:
        raise UniverseError(
            f"universe: only {len(selected)} of {len(bars)} candidates have an average close in "
            f"[{lo:g}, {hi:g}] over the {rules.lookback_days} sessions before {backtest_start} "
            f"({sum(r.startswith('no data') for r in rejected.values())} without data); "
            f"universe.min_tickers is {rules.min_tickers}: add candidates, widen the band or "
            "lower universe.min_tickers"
        )
    return Selection(
        selected=selected,
        rejected=rejected,
        avg_price=avg,
        dollar_volume=dollars,
        sessions=sessions,
        window=(str(min(seen)), str(max(seen))) if seen else None,
        rules={
            "min_price": lo,
            "max_price": hi,
            "lookback_days": rules.lookback_days,
            "min_tickers": rules.min_tickers,
            "max_tickers": rules.max_tickers,
            "backtest_start": str(backtest_start),
            "candidates": len(bars),
        },
    )


def lookback_window(cfg: Config) -> tuple[dt.date, dt.date]:
    """First and last of the `universe.lookback_days` sessions before `backtest.start`."""
    start = cfg.backtest.start
    days = cfg.universe.lookback_days
    span = dt.timedelta(days=days * 2 + 14)  # calendar days holding `days` sessions
    sess = chain.expected_sessions(cfg.data.calendar, start - span, start - dt.timedelta(days=1))
    if len(sess) < days:
        raise UniverseError(
            f"universe: fewer than {days} {cfg.data.calendar} sessions before {start}"
        )
    return sess[-days], sess[-1]


def _with_tickers(cfg: Config, tickers: list[str], start: dt.date, end: dt.date) -> Config:
    """`cfg` whose data section names `tickers` over [start, end] (the chain and feature task
    read these fields); missing candidates are skipped, not fatal."""
    data = cfg.data.model_copy(
        update={"tickers": tickers, "start": start, "end": end, "on_missing": "skip"}
    )
    return cfg.model_copy(update={"data": data})


def resolve_universe(cfg: Config) -> tuple[Selection, Config, dict[str, TickerData], list[str]]:
    """Select the backtest universe and resolve its bars: (selection, the selection's config,
    bars, skipped).

    The candidates are resolved through the data chain for the lookback window only; the selected
    ones then for [lookback start, backtest.end]. The pipeline builds their features
    (`vpt_ray.pipeline.stages.backtest_universe`) with the same per-ticker feature map as the
    training store (features warm up on the lookback sessions).
    """
    first, last = lookback_window(cfg)
    u = cfg.universe
    log.info(
        "universe: %d candidates, average close over %s..%s in [%g, %g]",
        len(u.candidates),
        first,
        last,
        u.min_price,
        u.max_price,
    )
    try:
        found, _ = chain.resolve(_with_tickers(cfg, list(u.candidates), first, last), first, last)
    except DataUnavailableError:
        found = {}
    tol = cfg.data.vwap_tolerance
    bars = {
        t: local.read_bars(found[t].path, first, last, tol) if t in found else None
        for t in u.candidates
    }
    selection = select_universe(bars, cfg.backtest.start, u)
    log.info("universe: %d selected, %d rejected", len(selection.selected), len(selection.rejected))
    sel_cfg = _with_tickers(cfg, selection.selected, first, last)
    tickers, skipped = chain.resolve(sel_cfg, first, cfg.backtest.end)
    return selection, sel_cfg, tickers, skipped


def summary_line(section: dict | None) -> str | None:
    """summary.md's one line on the backtest universe, or None when it was not used."""
    if not section:
        return None
    return (
        f"- Backtest universe: {section['selected_count']} of {section['candidates']} candidates "
        f"with an average close in [${section['min_price']:g}, ${section['max_price']:g}] over "
        f"the {section['lookback_days']} sessions before {section['backtest_start']} "
        f"({len(section['rejected'])} rejected; list in metrics.json `universe`)"
    )
