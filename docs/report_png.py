"""`python docs/report_png.py [RUN_ID]`: redraw docs/report.png, the README's picture of a report.

Opens the report of RUN_ID (default: the newest phase-1 report under artifacts/reports) in
headless Chromium (the same driver the browser test uses, `tests/browser.py`; Debian's
`chromium` package) and saves the top of the page as a 128-colour PNG.

Every digit on the page is masked (`#`) before the picture is taken: the picture shows what a
report holds and where, not figures that every change to the model, the search or the costs would
make stale (issue 28: the README's picture said Sharpe 6.42 where a fresh run gave 3.46). The PNG
records that in its text chunks (`vpt-ray:digits` = `masked`, the sections it shows, the run and
commit it was drawn from); `tests/test_html_report.py` checks the picture in docs/ carries them and
that the sections it shows still exist.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Replaces every digit of the page's text (HTML and the charts' SVG) with '#'; returns what it did
# and which sections reach into the top `height` pixels.
MASK_DIGITS = r"""((height) => {
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let masked = 0;
  for (let t = walk.nextNode(); t; t = walk.nextNode()) {
    if (t.parentElement && t.parentElement.closest('script, style')) continue;
    const v = t.nodeValue.replace(/[0-9]/g, '#');
    if (v !== t.nodeValue) { t.nodeValue = v; masked++; }
  }
  const svgText = Array.from(document.querySelectorAll('svg text')).map(t => t.textContent);
  return JSON.stringify({
    masked: masked,
    left: (document.body.innerText + svgText.join(' ')).match(/[0-9]/g) || [],
    sections: Array.from(document.querySelectorAll('section'))
      .filter(s => s.getBoundingClientRect().top < height).map(s => s.id),
  });
})"""

READY = (
    "document.readyState === 'complete' && document.querySelectorAll('.js-plotly-plot').length"
    " === Number(document.body.dataset.figures)"
)


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


def draw(report: Path, out: Path, height: int = 1700, width: int = 1280) -> dict:
    """Render `report/report.html` with its digits masked, save the top `height` px to `out`
    (with the text chunks above); returns what the mask saw. Raises on page errors or digits
    left."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    sys.path.insert(0, str(REPO))
    from tests.browser import render_page

    page = render_page(
        (report / "report.html").resolve().as_uri(),
        f"{MASK_DIGITS}({height})",
        ready=READY,
        width=width,
        clip_height=height,
    )
    if page.errors:
        raise RuntimeError("the report has errors: " + "; ".join(page.errors))
    seen = json.loads(page.value)
    if seen["left"] or not seen["masked"]:
        raise RuntimeError(f"masking failed: {seen}")
    metrics = json.loads((report / "metrics.json").read_text())
    info = PngInfo()
    info.add_text("vpt-ray:digits", "masked")
    info.add_text("vpt-ray:sections", ",".join(seen["sections"]))
    info.add_text("vpt-ray:run", str(metrics.get("run_id")))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    info.add_text("vpt-ray:commit", commit or "unknown")
    img = Image.open(io.BytesIO(page.screenshot)).convert("RGB")
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True, pnginfo=info)
    return seen


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
    seen = draw(report, args.out, args.height)
    print(
        f"{args.out}: top {args.height} px of {report / 'report.html'}, {seen['masked']} texts "
        f"masked, sections {', '.join(seen['sections'])}; {args.out.stat().st_size:,} bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
