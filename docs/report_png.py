"""`python docs/report_png.py [RUN_ID]`: redraw docs/report.png, the README's picture of a report.

Opens the report of RUN_ID (default: the newest phase-1 report under artifacts/reports) in
headless Chromium (the same driver the browser test uses, `tests/browser.py`; Debian's
`chromium` package) and saves the top of the page as a 128-colour PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def newest_phase1_report(artifacts: Path) -> Path:
    found = []
    for metrics in (artifacts / "reports").glob("*/metrics.json"):
        m = json.loads(metrics.read_text())
        phase1 = m.get("phase") == 1 and m.get("kind", "phase") == "phase"
        if phase1 and (metrics.parent / "report.html").exists():
            found.append((metrics.stat().st_mtime, metrics.parent))
    if not found:
        raise SystemExit(f"no phase-1 report.html under {artifacts / 'reports'}: run phase 1")
    return max(found)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/report_png.py", description=__doc__)
    parser.add_argument("run", nargs="?", metavar="RUN_ID", help="default: newest phase-1 run")
    parser.add_argument("--artifacts", default="artifacts", type=Path)
    parser.add_argument("--out", default=REPO / "docs" / "report.png", type=Path)
    parser.add_argument("--height", type=int, default=1700, help="pixels from the top")
    args = parser.parse_args(argv)
    report = (
        args.artifacts / "reports" / args.run if args.run else newest_phase1_report(args.artifacts)
    )
    sys.path.insert(0, str(REPO))
    from tests.browser import main as screenshot

    return screenshot([str(report / "report.html"), str(args.out), "--height", str(args.height)])


if __name__ == "__main__":
    raise SystemExit(main())
