"""One typed, validated config for a whole run.

Loading order: `config/base.yaml`, then `config/phase{N}.yaml`, then `--config PATH` (over the
phase file when both are given), then `--set dotted.key=value` overrides; `Config.layers` lists
the chain, and each run records it. Unknown keys and bad values raise `ConfigError` naming the
key, the file it came from and what is allowed, so a typo never runs silently with a default.

The sections are `vpt_ray.core.config_sections`; this module holds the whole `Config` (with
the checks across sections) and its loading.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from vpt_ray.core.bounded import InputTooLarge, bounded_lines, load_yaml, short, short_repr
from vpt_ray.core.config_sections import (
    BacktestConfig,
    ConfigError,
    CvConfig,
    DataConfig,
    DecisionConfig,
    FeaturesConfig,
    GcsConfig,
    HardwareConfig,
    LabelsConfig,
    ModelConfig,
    PathsConfig,
    PolygonConfig,
    ScalingConfig,
    SearchConfig,
    Section,
    SyntheticConfig,
    TrackingConfig,
    UniverseConfig,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


class Config(Section):
    """The whole run's settings. Build with `load_config`."""

    phase: int = Field(1, ge=1, le=5)
    run_name: str = "vpt"
    data: DataConfig
    gcs: GcsConfig = Field(default_factory=GcsConfig)
    polygon: PolygonConfig = Field(default_factory=PolygonConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    cv: CvConfig = Field(default_factory=CvConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    backtest: BacktestConfig
    universe: UniverseConfig = Field(default_factory=UniverseConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    _layers: list[str] = PrivateAttr(default_factory=list)

    @property
    def layers(self) -> list[str]:
        """Where the settings came from, first to last (files, then each `--set`)."""
        return list(self._layers)

    @model_validator(mode="after")
    def _check_windows(self) -> Config:
        if self.backtest.start <= self.data.end:
            raise ValueError(
                f"backtest.start ({self.backtest.start}) must come after the training period "
                f"(data.end = {self.data.end}): the out-of-sample window may never overlap training"
            )
        from vpt_ray.core.calendar import calendar_bounds  # exchange_calendars: lazy

        lo, hi = calendar_bounds(self.data.calendar)
        if self.data.start < lo:
            raise ValueError(
                f"data.start ({self.data.start}) is before {lo}, the first {self.data.calendar} "
                f"session the exchange-calendar clock supports: set data.start >= {lo}"
            )
        if self.backtest.end > hi:
            raise ValueError(
                f"backtest.end ({self.backtest.end}) is after {hi}, the last "
                f"{self.data.calendar} session the calendar knows: set backtest.end <= {hi}"
            )
        self._check_tradable()
        return self

    def _check_tradable(self) -> None:
        """Refuse settings under which no bar could get a label or no order could fill."""
        d = self.data
        if d.bar != "1day" and self.labels.horizon >= d.bars_per_session:
            raise ValueError(
                f"labels.horizon ({self.labels.horizon}) must be below the {d.bars_per_session} "
                f"bars of a {d.bar} session: intraday labels never cross the session close, so "
                f"no bar would get a label; set labels.horizon <= {d.bars_per_session - 1} or "
                "use data.bar: 1day (daily labels span sessions)"
            )
        if d.bar == "1day":
            from vpt_ray.core.calendar import sessions

            n = len(sessions(self.backtest.start, self.backtest.end, d.calendar))
            if n < 2:
                raise ValueError(
                    f"backtest {self.backtest.start}..{self.backtest.end} holds {n} {d.calendar} "
                    "session(s): with daily bars an order fills at the next bar's open, so the "
                    "backtest can never trade; give it at least 2 sessions"
                )

    @property
    def holds_across_sessions(self) -> bool:
        """Positions are held overnight: always for bars of a session (1day), where
        `backtest.flat_at_close` cannot apply (an entry fills at the next session's open);
        otherwise unless `backtest.flat_at_close`."""
        return self.data.bar == "1day" or not self.backtest.flat_at_close

    @property
    def embargo_bars(self) -> int:
        return self.labels.horizon if self.cv.embargo_bars is None else self.cv.embargo_bars

    @property
    def hold_bars(self) -> int:
        return self.labels.horizon if self.backtest.hold_bars is None else self.backtest.hold_bars

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings); holds no secrets by construction."""
        return json.loads(self.model_dump_json())

    def fingerprint(self) -> str:
        """Short stable hash of the resolved config, for run ids and resume keys. Where results
        are tracked (`tracking`) does not change them, so it is left out."""
        settings = {k: v for k, v in self.to_dict().items() if k != "tracking"}
        blob = json.dumps(settings, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _deep_merge(base: dict, over: dict, origin: str, prefix: str = "") -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, origin, f"{prefix}{key}.")
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); save "
            "it as UTF-8"
        ) from None
    loaded = _yaml_value(text, str(path))
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}"
        )
    return loaded


def _yaml_value(text: str, origin: str) -> Any:
    """YAML `text` as a value (`bounded.load_yaml`: no alias bombs); ConfigError naming
    `origin` for bad syntax, a scalar that is no value (a date like 2024-13-45) or a document
    too large once its aliases are expanded."""
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {bounded_lines(str(exc))}") from None
    except InputTooLarge as exc:
        raise ConfigError(f"{origin}: refused: {exc}") from None
    except ValueError as exc:  # PyYAML's date and number constructors
        raise ConfigError(f"{origin}: {short(text, 80)} is not a valid value ({exc})") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], parsed YAML scalar/list)."""
    if "=" not in item:
        raise ConfigError(f"--set {short(item, 80)}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {short(item, 80)}: empty key segment")
    value = _yaml_value(raw, f"--set {short(key, 80)}") if raw.strip() else None
    return parts, value


def _origin_of(loc: tuple, layers: list[tuple[str, dict]]) -> str:
    """The last layer (file or --set) that defined the key at `loc`."""
    for origin, layer in reversed(layers):
        node: Any = layer
        found = True
        for part in loc:
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                found = False
                break
        if found:
            return origin
    return "defaults"


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = field.annotation
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _format_error(exc: ValidationError, layers: list[tuple[str, dict]]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        origin = _origin_of(loc, layers)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = difflib.get_close_matches(loc[-1], allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            key = short(key, 80)
            lines.append(f"{origin}: unknown key {key!r}{did}; allowed here: {', '.join(allowed)}")
        elif not loc:  # a rule across sections: its message names the keys, not the input
            lines.append(short(str(err["msg"]).removeprefix("Value error, "), 400))
        else:
            value = short_repr(err.get("input"))  # a value of any size prints in a few lines
            lines.append(f"{origin}: {short(key, 80)} = {value}: {short(err['msg'], 400)}")
    return bounded_lines("invalid config:\n  " + "\n  ".join(lines))


def load_config(
    phase: int | None = None,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    base_path: str | Path | None = None,
) -> Config:
    """Resolve base -> phase file -> `config_path` -> `--set` overrides into a `Config`.

    With both `phase` and `config_path`, the file overlays `config/phase{N}.yaml` (it holds the
    user's changes to that phase, not a whole phase); the phase is `phase` whatever the file says.
    """
    base = Path(base_path) if base_path else CONFIG_DIR / "base.yaml"
    layers: list[tuple[str, dict]] = [(str(base), _read_yaml(base))]
    if phase is not None:
        phase_file = base.parent / f"phase{phase}.yaml"
        if not phase_file.exists():
            raise ConfigError(f"{phase_file}: no config for phase {phase} (phases are 1-5)")
        layers.append((str(phase_file), _read_yaml(phase_file)))
    if config_path is not None:
        user = _read_yaml(Path(config_path))
        if phase is not None and "phase" in user and user["phase"] != phase:
            raise ConfigError(
                f"{config_path}: sets phase: {user['phase']!r} but this is a phase {phase} run; "
                f"remove the key, or run phase {user['phase']}"
            )
        layers.append((str(config_path), user))
    set_layer: dict = {}
    for item in overrides or []:
        parts, value = parse_override(item)
        node = set_layer
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    if set_layer:
        layers.append(("--set", set_layer))
    merged: dict = {}
    for origin, layer in layers:
        merged = _deep_merge(merged, layer, origin)
    if phase is not None:
        merged["phase"] = phase
    try:
        cfg = Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, layers)) from None
    cfg._layers = [o for o, _ in layers if o != "--set"] + [f"--set {o}" for o in overrides or []]
    return cfg
