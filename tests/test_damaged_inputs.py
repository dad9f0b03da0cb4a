"""Every user-facing command over a corpus of damaged inputs: one `error:` line naming the file or
the key, exit 2, never a traceback (issue 30).

Before, `vpt compare` on a garbage or list-shaped metrics.json or a damaged tracker, `vpt report`
on a list-shaped metrics.json, `vpt backtest` on a random-bytes model.ubj (a UnicodeDecodeError
from xgboost's error path) or a meta.json of wrong types, a non-UTF-8 config and `--set
data.start=2024-13-45` all ended in tracebacks; `--run-id ''` was silently replaced by a
generated id, and a 274-byte YAML alias bomb printed a 56 MB error.

Each case runs its command through the `vpt` dispatcher in this process: it runs the command's
module as `__main__` (runpy), exactly what `python -m vpt_ray.X` runs. No case needs Ray: each
fails before any compute (the damaged bar file's case runs the data stage on the session's Ray).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
import yaml

from tests.conftest import fresh_console, tiny_overrides
from vpt_ray.__main__ import main as vpt
from vpt_ray.core.config import load_config

TINY_DATES = ["data.start=2024-01-02", "data.end=2024-02-29", "backtest.start=2024-03-05"]
BOMB = """data:
  tickers:
    - &a [A,A,A,A,A,A,A,A,A]
    - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


@pytest.fixture(autouse=True)
def _no_leftover_console():
    """Commands add a console handler bound to this test's captured stderr: drop it after."""
    root = logging.getLogger("vpt_ray")
    before = list(root.handlers)
    with fresh_console():
        yield
    for h in [h for h in root.handlers if h not in before]:
        root.removeHandler(h)


def _report(arts: Path, run_id: str, metrics: object = None) -> Path:
    """A report directory with a small, valid metrics.json (or `metrics` as given)."""
    d = arts / "reports" / run_id
    d.mkdir(parents=True, exist_ok=True)
    m = {"run_id": run_id, "phase": 1} if metrics is None else metrics
    (d / "metrics.json").write_text(json.dumps(m))
    return d


def _model(arts: Path, run_id: str) -> Path:
    """A real, readable model directory (a tiny booster on 3 features)."""
    d = arts / "models" / run_id
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 2, 50)
    xgb.train({"nthread": 1}, xgb.DMatrix(X, y), 2).save_model(d / "model.ubj")
    meta = {
        "run_id": run_id,
        "phase": 1,
        "feature_names": ["a", "b", "c"],
        "train_window": ["2024-01-02", "2024-02-29"],
    }
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "config.yaml").write_text(yaml.safe_dump(load_config(1, overrides=TINY_DATES).to_dict()))
    return d


def _edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _bars(path: Path) -> None:
    """A valid bar file of one session, then truncated to half its bytes."""
    ts = pd.date_range("2024-01-02 14:30", periods=30, freq="min", tz="UTC")
    p = np.linspace(10, 11, 30)
    table = pa.table(
        {
            "timestamp": ts, "open": p, "high": p + 0.1, "low": p - 0.1, "close": p,
            "volume": np.full(30, 100.0), "vwap": p, "transactions": np.full(30, 5),
        }
    )  # fmt: skip
    pq.write_table(table, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _case(ws: Path) -> dict[str, tuple[Callable[[], None], list[str], str]]:
    """Case id -> (damage, command line, what the error line must name)."""
    arts, a = ws / "artifacts", str(ws / "artifacts")
    sets = sum((["--set", s] for s in tiny_overrides(ws)), [])
    bad_utf8, bomb = ws / "latin1.yaml", ws / "bomb.yaml"
    tracker_file = arts / "SCALING_TRACKER.md"
    metrics = arts / "reports" / "B" / "metrics.json"
    model = arts / "models" / "M"

    def report_file(name: str, data: bytes) -> Callable[[], None]:
        return lambda: (_report(arts, "R") / name).write_bytes(data)

    garbage = bytes(range(256)) * 8
    return {
        # metrics.json: truncated, garbage, a list, a section of the wrong type
        "compare-truncated-metrics": (
            lambda: (_report(arts, "A"), _report(arts, "B"), metrics.write_text('{"run_id": "B"')),
            ["compare", "A", "B", "--artifacts", a],
            str(metrics),
        ),
        "compare-garbage-metrics": (
            lambda: (_report(arts, "A"), _report(arts, "B"), metrics.write_bytes(garbage)),
            ["compare", "A", "B", "--artifacts", a],
            str(metrics),
        ),
        "compare-list-metrics": (
            lambda: (_report(arts, "A"), _report(arts, "B", [1, 2, 3])),
            ["compare", "A", "B", "--artifacts", a],
            str(metrics),
        ),
        "compare-wrong-section": (
            lambda: (_report(arts, "A"), _report(arts, "B", {"run_id": "B", "resources": [1]})),
            ["compare", "A", "B", "--artifacts", a],
            str(metrics),
        ),
        "compare-damaged-tracker": (
            lambda: tracker_file.write_text('# t\n<!-- vpt-ray-tracker {"latest": {}, "hist -->\n'),
            ["compare", "--artifacts", a],
            str(tracker_file),
        ),
        "compare-tracker-wrong-rows": (
            lambda: tracker_file.write_text(
                '# t\n<!-- vpt-ray-tracker {"latest": {}, "history": [{"run_id": 5}]} -->\n'
            ),
            ["compare", "--artifacts", a],
            str(tracker_file),
        ),
        "compare-garbage-config": (
            lambda: (_report(arts, "A"), (_report(arts, "B") / "config.yaml").write_bytes(garbage)),
            ["compare", "A", "B", "--artifacts", a],
            "B/config.yaml",
        ),
        "report-list-metrics": (
            lambda: _report(arts, "R", ["not", "an", "object"]),
            ["report", "R", "--artifacts", a],
            "R/metrics.json",
        ),
        "report-garbage-metrics": (
            report_file("metrics.json", garbage),
            ["report", "R", "--artifacts", a],
            "R/metrics.json",
        ),
        "report-wrong-section": (
            lambda: _report(arts, "R", {"run_id": "R", "backtest": 5}),
            ["report", "R", "--artifacts", a],
            "R/metrics.json",
        ),
        # parquet: truncated, garbage, the wrong columns
        "report-truncated-trades": (
            report_file("trades.parquet", b"PAR1\x00\x00"),
            ["report", "R", "--artifacts", a],
            "R/trades.parquet",
        ),
        "report-garbage-equity": (
            report_file("equity.parquet", garbage),
            ["report", "R", "--artifacts", a],
            "R/equity.parquet",
        ),
        "report-garbage-equity-bars": (
            report_file("equity_bars.parquet", garbage),
            ["report", "R", "--artifacts", a],
            "R/equity_bars.parquet",
        ),
        "report-wrong-columns": (
            lambda: pd.DataFrame({"x": [1]}).to_parquet(_report(arts, "R") / "equity.parquet"),
            ["report", "R", "--artifacts", a],
            "R/equity.parquet",
        ),
        "optimize-list-metrics": (
            lambda: _report(arts, "B", [1]),
            ["optimize", "B", "--artifacts", a],
            str(metrics),
        ),
        "optimize-wrong-phase": (
            lambda: _report(arts, "B", {"run_id": "B", "phase": "one"}),
            ["optimize", "B", "--artifacts", a],
            str(metrics),
        ),
        # models: random bytes, meta.json of wrong types, truncated, a list
        "backtest-random-model": (
            lambda: (_model(arts, "M") / "model.ubj").write_bytes(np.random.bytes(5000)),
            ["backtest", "--model-dir", str(model)],
            str(model / "model.ubj"),
        ),
        "backtest-meta-feature-names": (
            lambda: _edit_json(_model(arts, "M") / "meta.json", feature_names=5),
            ["backtest", "--model-dir", str(model)],
            "feature_names is 5",
        ),
        "backtest-meta-train-window": (
            lambda: _edit_json(_model(arts, "M") / "meta.json", train_window="nope"),
            ["backtest", "--model-dir", str(model)],
            "train_window is 'nope'",
        ),
        "backtest-meta-run-id": (
            lambda: _edit_json(_model(arts, "M") / "meta.json", run_id=["x"]),
            ["backtest", "--model-dir", str(model)],
            str(model / "meta.json"),
        ),
        "backtest-meta-truncated": (
            lambda: (_model(arts, "M") / "meta.json").write_text('{"run_id": "M", '),
            ["backtest", "--model-dir", str(model)],
            str(model / "meta.json"),
        ),
        "backtest-meta-list": (
            lambda: (_model(arts, "M") / "meta.json").write_text("[]"),
            ["backtest", "--model-dir", str(model)],
            str(model / "meta.json"),
        ),
        "backtest-latest-garbage-meta": (
            lambda: (_model(arts, "M") / "meta.json").write_bytes(garbage),
            ["backtest", "--latest-phase", "1", "--set", f"paths.artifacts={a}"],
            str(model / "meta.json"),
        ),
        "backtest-bad-date": (
            lambda: _model(arts, "M"),
            ["backtest", "--model-dir", str(model), "--set", "data.start=2024-13-45"],
            "--set data.start",
        ),
        # configs: not UTF-8, an impossible date, an alias bomb, an empty run id
        "phase-non-utf8-config": (
            lambda: bad_utf8.write_bytes("search:\n  seed: 3 # café\n".encode("latin-1")),
            ["phase", "1", "--config", str(bad_utf8), *sets],
            str(bad_utf8),
        ),
        "train-non-utf8-config": (
            lambda: bad_utf8.write_bytes(b"search: {seed: 3} # \xff\xfe\n"),
            ["train", "--config", str(bad_utf8), *sets],
            str(bad_utf8),
        ),
        "audit-non-utf8-config": (
            lambda: bad_utf8.write_bytes(b"\xff\xfe"),
            ["audit", "--config", str(bad_utf8)],
            str(bad_utf8),
        ),
        "data-fetch-non-utf8-config": (
            lambda: bad_utf8.write_bytes(b"\xff\xfe"),
            ["data", "fetch", "--config", str(bad_utf8)],
            str(bad_utf8),
        ),
        "phase-bad-date": (
            lambda: None,
            ["phase", "1", *sets, "--set", "data.start=2024-13-45"],
            "--set data.start",
        ),
        "train-bad-date": (
            lambda: None,
            ["train", *sets, "--set", "data.start=2024-13-45"],
            "--set data.start",
        ),
        "audit-bad-date": (
            lambda: None,
            ["audit", "--set", "data.start=2024-13-45"],
            "--set data.start",
        ),
        "data-check-bad-date": (
            lambda: None,
            ["data", "check", "--set", "data.start=2024-13-45"],
            "--set data.start",
        ),
        "phase-alias-bomb": (
            lambda: bomb.write_text(BOMB),
            ["phase", "1", "--config", str(bomb), *sets],
            str(bomb),
        ),
        "phase-empty-run-id": (lambda: None, ["phase", "1", "--run-id", "", *sets], "--run-id ''"),
        "train-empty-run-id": (lambda: None, ["train", "--run-id", "", *sets], "--run-id ''"),
        "phase-damaged-tracker": (
            lambda: tracker_file.write_text("# notes of someone else\n"),
            ["phase", "1", *sets],
            str(tracker_file),
        ),
    }


CASES = sorted(_case(Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_damaged_input_is_one_error_line_naming_it(case, workspace, capsys):
    damage, argv, names = _case(workspace)[case]
    damage()
    code = vpt(argv)
    out = capsys.readouterr()
    err = out.err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-3000:]
    assert len(errors) == 1 and "Traceback" not in err + out.out, err[-3000:]
    assert names in errors[0], errors[0]
    assert len(err) < 4000  # bounded whatever the input (the alias bomb printed 56 MB)


def test_a_damaged_bar_file_stops_the_phase_and_the_check_names_it(ray_session, workspace, capsys):
    """A truncated bar parquet: `vpt data check` marks its row (exit 1), a phase on it stops
    at the data stage with one line naming the file (exit 2)."""
    data = workspace / "data"
    _bars(data / "AAA.parquet")
    code = vpt(["data", "check", "--data-dir", str(data)])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.err + out.out
    assert "AAA" in out.err + out.out
    sets = tiny_overrides(workspace, "data.sources=[local]", "data.tickers=[AAA]")
    code = vpt(["phase", "1", "--run-id", "on-damaged", *sum((["--set", s] for s in sets), [])])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert str(data / "AAA.parquet") in errors[0], errors[0]
