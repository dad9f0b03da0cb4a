"""Headless Chromium over the DevTools protocol, for tests that need a real browser.

Why not Playwright or Selenium: Debian's `chromium` plus the `websockets` client already installed
(with Ray) are enough to load a page, collect console errors, uncaught exceptions and network
requests, evaluate a script and take a screenshot: no driver download, no extra dependency.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((p for b in BROWSERS if (p := shutil.which(b))), None)


@dataclass
class PageResult:
    value: Any  # the result of `script`
    errors: list[str] = field(default_factory=list)  # console errors + uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page requested
    screenshot: bytes = b""


class _Session:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev.get("method") == method:
                    return ev
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(msg)


def _errors(events: list[dict]) -> list[str]:
    out = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a)) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def render_page(
    url: str,
    script: str,
    *,
    ready: str = "document.readyState === 'complete'",
    width: int = 1280,
    height: int = 900,
    clip_height: int | None = None,
    full_page: bool = False,
    timeout: float = 90,
) -> PageResult:
    """Open `url` in headless Chromium, wait until `ready` is true, return `script`'s value,
    the page's errors and requests, and a PNG screenshot (viewport, `clip_height` or full page)."""
    chrome = find_chromium()
    if chrome is None:
        raise FileNotFoundError("no chromium on PATH (apt-get install -y chromium)")
    profile = Path(tempfile.mkdtemp(prefix="vpt-chromium-"))
    proc = subprocess.Popen(
        [
            chrome,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=60) as r:
            targets = json.loads(r.read())
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            return _drive(
                _Session(ws), url, script, ready, width, height, clip_height, full_page, timeout
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _drive(
    s: _Session,
    url: str,
    script: str,
    ready: str,
    width: int,
    height: int,
    clip_height: int | None,
    full_page: bool,
    timeout: float,
) -> PageResult:
    for domain in ("Runtime", "Log", "Page", "Network"):
        s.call(f"{domain}.enable")
    s.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    s.call("Page.navigate", url=url)
    s.wait_event("Page.loadEventFired", timeout)
    deadline = time.monotonic() + timeout
    while not s.call("Runtime.evaluate", expression=ready, returnByValue=True)["result"].get(
        "value"
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"page not ready after {timeout}s: {ready}")
        time.sleep(0.2)
    time.sleep(0.5)  # let late console messages arrive
    value = s.call("Runtime.evaluate", expression=script, returnByValue=True)["result"]
    shot: dict[str, Any] = {"format": "png"}
    if full_page or clip_height:
        total = s.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
        h = min(total, clip_height) if clip_height else total
        shot.update(
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": h, "scale": 1},
        )
    png = base64.b64decode(s.call("Page.captureScreenshot", **shot)["data"])
    s.call("Runtime.evaluate", expression="1")  # flush pending events
    requests = [
        ev["params"]["request"]["url"]
        for ev in s.events
        if ev.get("method") == "Network.requestWillBeSent"
    ]
    return PageResult(value.get("value"), _errors(s.events), requests, png)


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.browser PAGE.html OUT.png [--height H]`: a palette PNG of the page's top
    (how docs/report.png is made from a phase-1 report)."""
    import argparse
    import io

    from PIL import Image

    parser = argparse.ArgumentParser(prog="python -m tests.browser")
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=1700, help="pixels from the top")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    result = render_page(
        args.page.resolve().as_uri(),
        "document.title",
        ready="document.readyState === 'complete' && document.querySelectorAll("
        "'.js-plotly-plot .main-svg').length > 0",
        width=args.width,
        clip_height=args.height,
    )
    if result.errors:
        print("\n".join(result.errors))
        return 1
    img = Image.open(io.BytesIO(result.screenshot)).convert("RGB")
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {img.size[0]}x{img.size[1]}, {args.out.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
