"""The scaling outlook: a saturating power law fitted to the learning curve (and the tracker's
earlier phases), with bootstrap intervals, and the forecast it gives for the next phases' sizes.

Why it exists: the seed's question at every phase is whether more data still pays, and until now
it was answered only after the next phase had been paid for. Learning curves of accuracy and log
loss against the training size are fitted best, across many data sets, by saturating power laws
(Brumen et al. 2021; LCDB, Mohr et al. 2022; Viering & Loog 2022):

    accuracy(n) = c - a (n / n_ref)^-b        log loss(n) = c + a (n / n_ref)^-b,   a >= 0

c is the asymptote (what unlimited data of this kind would reach), b how fast the curve bends.
The fit is weighted least squares (weights 1 / SE^2): for each b of a grid (`B_GRID`) a and c
have a closed form, and the b with the smallest weighted error wins; the asymptote is kept in
[0, 1] for accuracy and >= 0 for log loss. Every bootstrap replicate of the points (the OOS
window's blocks redrawn, `validation.learning_curve.replicate_figures`; an earlier phase's point
redrawn from its SE) is fitted the same way, so each figure read off the fit gets an interval.

- The trend: the fitted gain per doubling of the data at the largest size (d figure / d log2 n,
  from the power law). When its interval covers 0 (enough replicates fit a flat curve there) the
  outlook says "no trend detectable" and extrapolates nothing: no data needed for +gain, and the
  forecast stays at the largest fit's measured level (more data is not shown to help; it is not
  shown to hurt either). The weighted slope against log2(samples) over the measured range is
  reported next to it: a curve can have risen over its range and flattened at its end.
- The forecast for a later phase's sample count: the fitted figure there, with an interval that
  also holds that phase's own measurement noise (binomial on its effective OOS samples), since
  what is forecast is the figure that phase will report.
- The data needed to gain +`gain` accuracy over the largest fit: where the fitted curve reaches
  it, in samples (infinite when the asymptote lies below it).

Pure numpy. `vpt_ray.pipeline.outlook` feeds it and adds the costs; the decision's "scaling
outlook" line (`vpt_ray.report.outlook.outlook_check`) is information: it never changes the
verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

B_GRID = np.geomspace(0.02, 2.0, 64)  # exponents tried; b -> 0 is a log-linear curve
FIGURES = {"accuracy": -1, "log_loss": +1}  # sign of the a n^-b term: accuracy rises, loss falls
BOUNDS = {"accuracy": (0.0, 1.0), "log_loss": (0.0, math.inf)}  # the asymptote's range
# what a point of the fit carries (a curve point, or an earlier phase's tracker record)
POINT_KEYS = ("samples", "accuracy", "accuracy_se", "log_loss", "log_loss_se", "effective_samples")


@dataclass(frozen=True)
class PowerLaw:
    """Fitted parameters, one entry per replicate (row of the figures fitted)."""

    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    sign: int
    n_ref: float

    def at(self, n: float | np.ndarray) -> np.ndarray:
        """The fitted figure at `n` samples (replicates x len(n), or replicates for a scalar)."""
        x = np.asarray(n, dtype=np.float64) / self.n_ref
        if x.ndim == 0:
            return self.c + self.sign * self.a * x ** (-self.b)
        return self.c[:, None] + self.sign * self.a[:, None] * x[None, :] ** (-self.b[:, None])

    def per_doubling(self, n: float) -> np.ndarray:
        """The fitted change per doubling of the data at `n` samples (d figure / d log2 n)."""
        x = float(n) / self.n_ref
        return -self.sign * self.a * self.b * math.log(2.0) * x ** (-self.b)


def fit_power_law(
    n: np.ndarray, values: np.ndarray, weights: np.ndarray, figure: str = "accuracy"
) -> PowerLaw:
    """Fit `figure`'s saturating power law to each row of `values` (replicates x points) at
    sample counts `n` (points) with `weights` (points, e.g. 1 / SE^2). Fewer than two distinct
    sizes give a flat fit (a = 0, c = the weighted mean)."""
    sign = FIGURES[figure]
    lo, hi = BOUNDS[figure]
    n = np.asarray(n, dtype=np.float64)
    Y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    n_ref = float(n.max())
    ybar = Y @ w
    best = (np.full(len(Y), np.inf), ybar.copy(), np.zeros(len(Y)), np.full(len(Y), B_GRID[0]))
    if len(np.unique(n)) < 2:
        return PowerLaw(best[1], best[2], best[3], sign, n_ref)
    for b in B_GRID:
        z = sign * (n / n_ref) ** (-b)
        zc = z - w @ z
        szz = w @ (zc * zc)
        a = (Y - ybar[:, None]) @ (w * zc) / szz
        a = np.maximum(a, 0.0)
        c = ybar - a * (w @ z)
        ok = (c >= lo) & (c <= hi)
        sse = ((Y - c[:, None] - a[:, None] * z[None, :]) ** 2) @ w
        better = ok & (sse < best[0])
        best = (
            np.where(better, sse, best[0]),
            np.where(better, c, best[1]),
            np.where(better, a, best[2]),
            np.where(better, b, best[3]),
        )
    return PowerLaw(best[1], best[2], best[3], sign, n_ref)


def slope_per_doubling(n: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares slope of each row of `values` against log2(n): the change per
    doubling of the data (NaN with fewer than two distinct sizes)."""
    x = np.log2(np.asarray(n, dtype=np.float64))
    Y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    xc = x - w @ x
    sxx = w @ (xc * xc)
    if sxx <= 0:
        return np.full(len(Y), np.nan)
    return (Y - (Y @ w)[:, None]) @ (w * xc) / sxx


def samples_for_gain(fit: PowerLaw, n_from: float, gain: float) -> np.ndarray:
    """Samples at which the fitted accuracy is `gain` above its value at `n_from`, per
    replicate (inf where the asymptote lies below that; n_from where it is already there)."""
    target = fit.at(n_from) + gain
    room = fit.c - target  # accuracy: c - a x^-b = target  ->  x = (a / room)^(1/b)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(room > 0, (fit.a / np.where(room > 0, room, 1.0)) ** (1.0 / fit.b), np.inf)
    return np.where(fit.a > 0, np.maximum(x * fit.n_ref, n_from), np.inf)


def interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the replicates at `level` (order statistics: infinite values
    allowed); (nan, nan) when there is none."""
    s = np.sort(np.asarray(samples, dtype=np.float64)[~np.isnan(samples)])
    if len(s) == 0:
        return math.nan, math.nan
    q, last = (1.0 - level) / 2.0, len(s) - 1
    return float(s[math.floor(q * last)]), float(s[math.ceil((1 - q) * last)])


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def fit_figure(
    figure: str,
    n: np.ndarray,
    point: np.ndarray,
    replicates: np.ndarray,
    weights: np.ndarray,
    level: float,
    gain: float | None = None,
) -> tuple[dict, PowerLaw, PowerLaw]:
    """One figure's fit to the points (and to each replicate) and what is read off it: the gain
    per doubling at the largest size (the trend: detected when its interval excludes 0), the
    slope over the measured range, the asymptote and, with a trend, the samples that buy `gain`.
    Returns (the section, the point fit, the replicates' fits)."""
    best = fit_power_law(n, point[None, :], weights, figure)
    reps = fit_power_law(n, replicates, weights, figure)
    n_full = float(n.max())
    sign = FIGURES[figure]
    slope, (s_lo, s_hi) = best.per_doubling(n_full)[0], interval(reps.per_doubling(n_full), level)
    trend = bool(np.isfinite(s_lo) and (s_lo > 0 if sign < 0 else s_hi < 0))
    r_lo, r_hi = interval(slope_per_doubling(n, replicates, weights), level)
    c_lo, c_hi = interval(reps.c, level)
    out: dict = {
        "form": "c - a (n/n_ref)^-b" if sign < 0 else "c + a (n/n_ref)^-b",
        "n_ref": best.n_ref,
        "c": float(best.c[0]),
        "a": float(best.a[0]),
        "b": float(best.b[0]),
        "slope_per_doubling": _finite(slope),  # at the largest size, from the fit
        "slope_lo": _finite(s_lo),
        "slope_hi": _finite(s_hi),
        "trend": trend,
        "range": [float(n.min()), n_full],
        "range_slope_per_doubling": _finite(slope_per_doubling(n, point[None, :], weights)[0]),
        "range_slope_lo": _finite(r_lo),
        "range_slope_hi": _finite(r_hi),
        "asymptote": float(best.c[0]),
        "asymptote_lo": _finite(c_lo),
        "asymptote_hi": _finite(c_hi),
    }
    if gain is not None:
        out["gain"] = gain
        need, (n_lo, n_hi) = math.nan, (math.nan, math.nan)
        if trend:
            need = samples_for_gain(best, n_full, gain)[0]
            n_lo, n_hi = interval(samples_for_gain(reps, n_full, gain), level)
        out.update(
            samples_for_gain=_finite(need) if trend else None,
            samples_for_gain_lo=_finite(n_lo) if trend else None,
            samples_for_gain_hi=_finite(n_hi) if trend else None,
        )
    return out, best, reps


def outlook(
    points: list[dict],
    rep_accuracy: np.ndarray,
    rep_log_loss: np.ndarray,
    targets: list[dict],
    level: float = 0.95,
    gain: float = 0.001,
    seed: int = 0,
) -> dict:
    """The fit and the forecast from `points` (each: samples, accuracy, accuracy_se, log_loss,
    log_loss_se; the largest-size point of this run's curve flagged `full`) and their bootstrap
    replicates (replicates x points, the same order). `targets`: later phases, each {phase,
    samples, oos_effective_samples}. Returns {"fit": {accuracy, log_loss}, "forecast": [...],
    "band": the fit and its interval on a log grid of sizes, for the charts}."""
    n = np.array([p["samples"] for p in points], dtype=np.float64)
    full = next(i for i, p in enumerate(points) if p.get("full"))
    rng = np.random.default_rng(seed)
    fits, curves = {}, {}
    for fig, reps in (("accuracy", rep_accuracy), ("log_loss", rep_log_loss)):
        point = np.array([p[fig] for p in points], dtype=np.float64)
        se = np.array([p.get(f"{fig}_se") or np.nan for p in points], dtype=np.float64)
        se = np.where(np.isfinite(se) & (se > 0), se, np.nanmax(np.r_[se, 1e-4]))
        fits[fig], best, rfit = fit_figure(
            fig, n, point, reps, 1.0 / se**2, level, gain if fig == "accuracy" else None
        )
        curves[fig] = (best, rfit, point[full], reps[:, full], se[full])
    forecast = []
    for t in targets:
        row = {"phase": t["phase"], "samples": int(round(t["samples"]))}
        for fig, (best, rfit, level_point, level_reps, se_full) in curves.items():
            if fits[fig]["trend"]:
                mid, draws = float(best.at(t["samples"])[0]), rfit.at(t["samples"])
            else:
                mid, draws = float(level_point), level_reps.copy()
            draws = draws + rng.standard_normal(len(draws)) * _noise(
                fig, draws, t.get("oos_effective_samples"), se_full, points[full]
            )
            lo, hi = interval(draws, level)
            row.update({fig: mid, f"{fig}_lo": lo, f"{fig}_hi": hi})
        forecast.append(row)
    grid = np.geomspace(n.min(), max([n.max(), *(t["samples"] for t in targets)]), 40)
    band = {"samples": grid.tolist()}
    for fig, (best, rfit, level_point, level_reps, _) in curves.items():
        if fits[fig]["trend"]:
            mid, draws = best.at(grid)[0], rfit.at(grid)
        else:
            mid = np.full(len(grid), level_point)
            draws = np.repeat(level_reps[:, None], len(grid), axis=1)
        bounds = np.array([interval(draws[:, j], level) for j in range(len(grid))])
        band[fig] = mid.tolist()
        band[f"{fig}_lo"], band[f"{fig}_hi"] = bounds[:, 0].tolist(), bounds[:, 1].tolist()
    return {"level": level, "fit": fits, "forecast": forecast, "band": band}


def _noise(
    figure: str, draws: np.ndarray, n_eff: float | None, se_full: float, full: dict
) -> np.ndarray | float:
    """SD of the figure a phase with `n_eff` effective OOS samples will measure around its true
    value: binomial for accuracy; for log loss this run's per-sample spread rescaled."""
    if not n_eff or n_eff <= 0:
        return 0.0
    if figure == "accuracy":
        p = np.clip(draws, 0.0, 1.0)
        return np.sqrt(p * (1 - p) / n_eff)
    own = full.get("effective_samples") or 0
    return float(se_full * math.sqrt(own / n_eff)) if own > 0 else 0.0
