"""The config's sections (`data`, `gcs`, `polygon`, `synthetic`, `features`, `labels`, `cv`,
`search`, `model`, `backtest`, `universe`, `hardware`, `decision`, `scaling`, `paths`,
`tracking`): one pydantic model each, typed and validated, with unknown keys refused. The whole
config and its loading are `vpt_ray.core.config`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

BAR_SIZES = ("1min", "5min", "15min", "30min", "60min", "1day")


SOURCES = ("local", "gcs", "polygon", "synthetic")


TICKER_RE = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")  # upper case: file and object names use it


def _tickers(value: Any, key: str) -> Any:
    """Symbols upper-cased and checked (`TICKER_RE`), so the local store, GCS and Polygon all
    see one spelling; duplicates (after upper-casing) are errors."""
    if not isinstance(value, list):
        return value
    out = [v.strip().upper() if isinstance(v, str) else v for v in value]
    bad = [v for v in out if not isinstance(v, str) or not TICKER_RE.match(v)]
    if bad:
        raise ValueError(
            f"{key} has invalid symbols {bad}: a symbol is a letter then up to 9 letters, "
            "digits, '.' or '-' (e.g. AAPL, BRK.B, BF-B)"
        )
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ValueError(f"{key} has duplicates {dup} (symbols are compared upper-cased)")
    return out


def get_close(word: str, options: list[str]) -> list[str]:
    """At most one close match of `word` among `options` (for "did you mean" hints)."""
    return difflib.get_close_matches(word, options, n=1)


class ConfigError(ValueError):
    """A config file or override breaks a rule; the message names key, origin and the fix."""


class Section(BaseModel):
    """A config section: an unknown key is an error, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dir: str = "data"
    tickers: list[str] = Field(min_length=1)
    start: dt.date
    end: dt.date
    bar: Literal["1min", "5min", "15min", "30min", "60min", "1day"] = "1min"
    sources: list[Literal["local", "gcs", "polygon", "synthetic"]] = Field(min_length=1)
    calendar: str = "XNYS"
    regular_session_only: bool = True
    on_missing: Literal["error", "skip"] = "error"
    max_missing_sessions: int = Field(5, ge=0)
    vwap_tolerance: float = Field(0.001, ge=0)

    @field_validator("tickers", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return _tickers(value, "data.tickers")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.end < self.start:
            raise ValueError(f"data.end ({self.end}) is before data.start ({self.start})")
        return self

    @property
    def bars_per_session(self) -> int:
        """Bars in a full regular session (390 minutes) at `bar`: 1 for daily bars."""
        return -(-390 // self.bar_minutes)

    @property
    def bar_minutes(self) -> int:
        """Bar length in minutes (390 for daily bars: one regular session)."""
        return 390 if self.bar == "1day" else int(self.bar.removesuffix("min"))


class GcsConfig(Section):
    bucket_path: str = "jwss_data_store/stocks"
    endpoint_url: str | None = None
    token: str | None = None
    upload_fetched: bool = False
    connect_timeout_s: float = Field(10, gt=0, le=600)
    read_timeout_s: float = Field(30, gt=0, le=3600)
    ticker_deadline_s: float = Field(120, gt=0, le=86400)


class PolygonConfig(Section):
    api_key_env: str = "POLYGON_API_KEY"
    base_url: str = "https://api.polygon.io"
    requests_per_minute: float = Field(5, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(2.0, gt=0, le=600)
    chunk_days: int = Field(30, ge=1, le=400)
    timeout_s: float = Field(30, gt=0)
    connect_timeout_s: float = Field(10, gt=0, le=600)
    down_after: int = Field(3, ge=1)


# Named edges of the synthetic market (`synthetic.signal_strength: NAME` or a number):
# demo, the default, makes phase 1 read like a minute-bar direction model after costs (OOS
# accuracy ~0.53, Sharpe in low single digits); strong is the edge shipped before (phase 1:
# accuracy 0.54, Sharpe ~6), for tests that need the signal to show on a few weeks of data;
# none is the null market.
SIGNAL_STRENGTHS = {"none": 0.0, "demo": 0.75, "strong": 1.0}


class SyntheticConfig(Section):
    seed: int = 7
    signal_strength: float = Field(SIGNAL_STRENGTHS["demo"], ge=0, le=10)
    missing_minute_rate: float = Field(0.002, ge=0, lt=0.5)
    drift: float = Field(0.0, ge=-5, le=5)  # annual log drift of every price: a trend, no edge

    @field_validator("signal_strength", mode="before")
    @classmethod
    def _named(cls, v: object) -> object:
        if isinstance(v, str) and v.strip().lower() in SIGNAL_STRENGTHS:
            return SIGNAL_STRENGTHS[v.strip().lower()]
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                raise ValueError(
                    f"a number >= 0 or one of {', '.join(SIGNAL_STRENGTHS)}, got {v!r}"
                ) from None
        return v


def feature_names(windows: list[int]) -> list[str]:
    """The feature columns, in model order: the names `features.include` may list. Built by
    `vpt_ray.features.causal.build_features`, which selects its output columns by this list,
    so the two cannot drift apart."""
    names = ["ret_1"]
    names += [f"ret_{w}" for w in windows]
    names += ["vwap_pos", "close_vwap_1", "vwap_loc"]
    names += [f"flow_ewm_{w}" for w in windows]
    names += [f"vwap_loc_ewm_{w}" for w in windows]
    names += [f"close_vwap_{w}" for w in windows]
    names += [f"vol_z_{w}" for w in windows]
    names += [f"vpt_slope_{w}" for w in windows]
    names += [f"obv_slope_{w}" for w in windows]
    names += ["mfi_14"]
    names += [f"rv_{w}" for w in windows]
    names += ["range_1", f"range_{windows[0]}"]
    names += ["trades_z", "trade_size_z"]
    names += ["time_of_day", "overnight_gap", "gap_minutes"]
    return names


class FeaturesConfig(Section):
    windows: list[int] = Field(default_factory=lambda: [5, 15, 60], min_length=1)
    dtype: Literal["float32", "float64"] = "float32"
    include: list[str] | None = None  # the model's features (None: every feature built)

    @model_validator(mode="after")
    def _check(self) -> FeaturesConfig:
        if any(w < 2 for w in self.windows):
            raise ValueError("features.windows must all be >= 2 bars")
        return self

    @field_validator("include")
    @classmethod
    def _check_include(cls, include: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if include is None:
            return None
        windows = info.data.get("windows") or [5, 15, 60]
        known = feature_names(windows)
        if not include:
            raise ValueError("empty: list at least one feature, or null for all")
        bad = [f for f in include if f not in known]
        if bad:
            said = ", ".join(
                repr(f) + "".join(f" (did you mean {h!r}?)" for h in get_close(f, known))
                for f in bad
            )
            raise ValueError(
                f"unknown feature(s) {said}; the features built with windows {windows} are: "
                + ", ".join(known)
            )
        if len(set(include)) != len(include):
            raise ValueError(f"has duplicates: {include}")
        return include

    def model_features(self) -> list[str]:
        """The features the model trains and predicts on, in the feature store's order."""
        names = feature_names(self.windows)
        return names if self.include is None else [f for f in names if f in set(self.include)]


class LabelsConfig(Section):
    horizon: int = Field(15, ge=1)
    stride: int = Field(5, ge=1)


class CvConfig(Section):
    method: Literal["walk_forward", "combinatorial"] = "walk_forward"
    n_splits: int = Field(4, ge=2, le=20)
    embargo_bars: int | None = Field(None, ge=0)
    min_train_fraction: float = Field(0.3, gt=0, lt=1)
    n_test_groups: int = Field(2, ge=1, le=19)
    sample_days: int | None = Field(None, ge=1)
    early_stopping_fraction: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> CvConfig:
        if self.method == "combinatorial" and self.n_test_groups >= self.n_splits:
            raise ValueError(
                f"cv.n_test_groups ({self.n_test_groups}) must be < cv.n_splits "
                f"({self.n_splits}, the number of groups) for combinatorial CV"
            )
        return self


class SearchSpace(Section):
    max_depth: tuple[int, int] = (3, 6)
    learning_rate: tuple[float, float] = (0.02, 0.2)
    subsample: tuple[float, float] = (0.6, 1.0)
    colsample_bytree: tuple[float, float] = (0.5, 1.0)
    min_child_weight: tuple[float, float] = (1.0, 50.0)
    reg_alpha: tuple[float, float] = (1e-3, 1.0)
    reg_lambda: tuple[float, float] = (1e-2, 10.0)

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        for name in type(self).model_fields:
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"search.space.{name}: low {lo} is above high {hi}")
            if lo <= 0:
                raise ValueError(f"search.space.{name}: bounds must be positive, got {lo}")
        return self


SEARCH_PARAMS = tuple(SearchSpace.model_fields)  # the searched XGBoost hyperparameters


class SearchConfig(Section):
    num_samples: int = Field(8, ge=1)
    time_budget_s: float | None = Field(None, gt=0)  # None = derived (vpt_ray.model.budget)
    cpus_per_trial: int = Field(1, ge=1)
    fold_cache_mb: int = Field(256, ge=0)
    metric: Literal["val_log_loss"] = "val_log_loss"
    scheduler: Literal["fifo", "asha", "race"] = "fifo"
    grace_folds: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    race_alpha: float = Field(0.05, gt=0, lt=0.5)
    race_min_trials: int = Field(4, ge=2)
    trial_cache: bool = True
    sample_days: int | None = Field(None, ge=1)
    seed: int = 0
    space: SearchSpace = Field(default_factory=SearchSpace)


class EnsembleConfig(Section):
    enabled: bool = False
    top_k: int = Field(3, ge=1, le=50)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    feature_fraction: float = Field(1.0, gt=0, le=1)
    selection_rounds: int = Field(25, ge=1, le=1000)

    @model_validator(mode="after")
    def _check(self) -> EnsembleConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"model.ensemble.seeds has duplicates: {self.seeds}")
        return self


class ModelConfig(Section):
    n_estimators: int = Field(400, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)
    max_bin: int = Field(128, ge=2, le=1024)
    backend: Literal["local", "distributed"] = "local"
    num_workers: int = Field(2, ge=1)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)


class BacktestConfig(Section):
    start: dt.date
    end: dt.date
    capital: float = Field(100_000.0, gt=0)
    long_threshold: float = Field(0.53, gt=0, lt=1)
    short_threshold: float = Field(0.47, gt=0, lt=1)
    allow_short: bool = True
    hold_bars: int | None = Field(None, ge=1)
    exit_on_reversal: bool = False
    commission_per_share: float = Field(0.0035, ge=0)
    min_commission: float = Field(0.35, ge=0)
    slippage_bps: float = Field(0.5, ge=0)
    half_spread: bool = False
    position_fraction: float = Field(1.0, gt=0, le=1)
    max_volume_fraction: float = Field(0.05, gt=0, le=1)
    flat_at_close: bool = True
    max_ticker_weight: float = Field(0.2, gt=0, le=1)
    max_gross_exposure: float = Field(1.0, gt=0, le=10)
    max_cost_bps: float = Field(2.0, gt=0)
    sizing: Literal["volatility", "equal"] = "volatility"
    vol_lookback_bars: int = Field(390, ge=2)

    @model_validator(mode="after")
    def _check(self) -> BacktestConfig:
        if self.end < self.start:
            raise ValueError(f"backtest.end ({self.end}) is before backtest.start ({self.start})")
        if self.short_threshold > self.long_threshold:
            raise ValueError(
                f"backtest.short_threshold ({self.short_threshold}) is above "
                f"backtest.long_threshold ({self.long_threshold})"
            )
        return self


class UniverseConfig(Section):
    """Backtest universe (phase 5): candidates whose average close over `lookback_days` sessions
    before backtest.start lies in [min_price, max_price]. Off unless enabled with candidates."""

    enabled: bool = False
    candidates: list[str] = Field(default_factory=list)
    lookback_days: int = Field(20, ge=1)
    min_price: float = Field(10.0, ge=0)
    max_price: float = Field(20.0, gt=0)
    min_tickers: int = Field(50, ge=1)
    max_tickers: int = Field(100, ge=1)

    @field_validator("candidates", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return _tickers(value, "universe.candidates")

    @model_validator(mode="after")
    def _check(self) -> UniverseConfig:
        if self.min_price >= self.max_price:
            raise ValueError(
                f"universe.min_price ({self.min_price}) must be below "
                f"universe.max_price ({self.max_price})"
            )
        if self.min_tickers > self.max_tickers:
            raise ValueError(
                f"universe.min_tickers ({self.min_tickers}) is above "
                f"universe.max_tickers ({self.max_tickers})"
            )
        if self.active and len(self.candidates) < self.min_tickers:
            raise ValueError(
                f"universe.candidates has {len(self.candidates)} tickers, fewer than "
                f"universe.min_tickers ({self.min_tickers})"
            )
        return self

    @property
    def active(self) -> bool:
        """Selection runs only when enabled and given candidates."""
        return self.enabled and bool(self.candidates)


class HardwareConfig(Section):
    num_cpus: int = Field(8, ge=1)
    memory_gb: float = Field(32, gt=0)
    object_store_gb: float = Field(4, gt=0)
    memory_warn_gb: float = Field(28, gt=0)
    memory_limit_gb: float = Field(32, gt=0)  # per node
    job_memory_limit_gb: float | None = Field(None, gt=0)  # the job's total over all nodes
    sample_interval_s: float = Field(0.5, gt=0)
    ray_address: str | None = None
    max_hours: float = Field(4.0, gt=0)


class DecisionConfig(Section):
    min_accuracy: float = Field(0.52, gt=0, lt=1)
    min_sharpe: float = 1.0
    max_train_val_gap: float = Field(0.05, ge=0)
    max_pbo: float = Field(0.5, ge=0, le=1)
    min_dsr: float = Field(0.95, ge=0, le=1)
    min_trials_for_pbo: int = Field(8, ge=2)
    max_prob_oos_loss: float = Field(0.5, ge=0, le=1)
    stop_se: float = Field(2.0, ge=0)
    optimize_se: float = Field(1.0, ge=0)
    max_top_ticker_share: float = Field(1.0, gt=0)
    z: float = Field(1.645, gt=0)  # one-sided bound: figure - z SE must clear each threshold
    min_trades: int = Field(30, ge=0)
    min_effective_samples: float = Field(100.0, ge=0)


class ScalingConfig(Section):
    """The learning curve and the scaling outlook (`vpt_ray.model.learning_curve`,
    `vpt_ray.validation.scaling`)."""

    learning_curve: bool = True
    fractions: list[float] = Field(default_factory=lambda: [0.0625, 0.125, 0.25], min_length=1)
    repeats: int = Field(1, ge=1, le=8)
    repeat_below: float = Field(0.25, gt=0, lt=1)
    bootstrap: int = Field(1000, ge=50, le=100_000)
    level: float = Field(0.95, gt=0.5, lt=1)
    gain: float = Field(0.001, gt=0, lt=0.5)

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f < 1]
        if bad:
            raise ValueError(f"every fraction must lie in (0, 1) (the full fit is 1), got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate fractions {v}")
        return sorted(v)


class PathsConfig(Section):
    artifacts: str = "artifacts"
    logs: str = "logs"
    tracker: str = "artifacts/SCALING_TRACKER.md"
    cache: str | None = None
    scratch: str | None = None

    @model_validator(mode="after")
    def _check(self) -> PathsConfig:
        for name in ("artifacts", "logs", "tracker", "cache", "scratch"):
            value = getattr(self, name)
            if value is None or "://" not in value:
                continue
            if name == "scratch":
                raise ValueError(f"paths.scratch ({value!r}) must be a local directory")
            bucket = value.removeprefix("gs://").split("/", 1)[0]
            if not value.startswith("gs://") or not bucket:
                raise ValueError(
                    f"paths.{name} ({value!r}): use a local path or gs://BUCKET/PREFIX "
                    "(the only remote storage supported)"
                )
        return self


class TrackingConfig(Section):
    """Experiment tracking beyond the scaling tracker (`vpt_ray.core.tracking`): off by default."""

    mlflow: bool = False
    experiment: str = Field("vpt-ray", min_length=1)
    uri: str | None = None
