"""A page in real headless Chromium over the DevTools protocol (aiohttp's websocket client).

`render_page(path)` opens a local HTML file, waits until the page says its plots are drawn
(`data-plots-drawn` on <body>), and returns what a test checks: console errors and uncaught
exceptions, every request that left the machine or the file, what plotly.js drew in each plot,
and a full-page PNG screenshot. Chromium is Debian's package (`.ci/run` installs it); the flags
are those that work on a machine without a network (no background requests, a fresh profile).

    python -m tests.support.browser PAGE.html OUT.png   # a screenshot, as docs/report.png was made
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--hide-scrollbars", "--remote-debugging-port=0")
WIDTH = 1280

# Per plot div: how many traces plotly.js drew with real geometry (a line path with points, a bar
# with area), and the plot area's size on screen.
DRAWN_JS = """
(() => Object.fromEntries([...document.querySelectorAll('.plot')].map(div => {
  const lines = [...div.querySelectorAll('.scatterlayer .trace path.js-line, .scatterlayer .trace path.js-fill')]
    .filter(p => (p.getAttribute('d') || '').length > 2).length;
  const points = div.querySelectorAll('.scatterlayer .trace .points path').length;
  const bars = [...div.querySelectorAll('.barlayer .trace .point path')]
    .filter(p => { const b = p.getBBox(); return b.width > 0 && b.height > 0; }).length;
  const box = div.getBoundingClientRect();
  return [div.id, {lines, points, bars, svg: div.querySelectorAll('svg.main-svg').length,
                   width: box.width, height: box.height}];
})))()
"""


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, error log entries
    external_requests: list[str] = field(default_factory=list)  # anything but the page's own file and data:
    plots_drawn: int | None = None  # what the page reported once plotly.js finished
    plots: dict[str, dict[str, Any]] = field(default_factory=dict)
    screenshot: bytes = b""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def render_page(path: Path, timeout_s: float = 90.0) -> PageResult:
    binary = chromium()
    assert binary, "chromium is not installed"
    # Chromium's helper processes may still write to the profile as the browser exits: leftovers
    # in a temp folder are not the page's fault
    with tempfile.TemporaryDirectory(prefix="jobrl-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                 f"--window-size={WIDTH},900", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return asyncio.run(asyncio.wait_for(_drive(Path(profile), path.resolve(), proc), timeout_s))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _devtools_port(profile: Path, proc: subprocess.Popen) -> int:
    """Chromium writes the port it chose to DevToolsActivePort once it listens."""
    marker = profile / "DevToolsActivePort"
    while not marker.exists() or not marker.read_text().strip():
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode} before listening")
        await asyncio.sleep(0.05)
    return int(marker.read_text().split()[0])


async def _drive(profile: Path, page: Path, proc: subprocess.Popen) -> PageResult:
    port = await _devtools_port(profile, proc)
    result = PageResult()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        (target,) = [t for t in targets if t["type"] == "page"][:1]
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Session(ws, result, page.as_uri())
            reader = asyncio.create_task(cdp.read())
            try:
                for domain in ("Runtime", "Log", "Page", "Network"):
                    await cdp.call(f"{domain}.enable")
                await cdp.call("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False})
                await cdp.call("Page.navigate", {"url": page.as_uri()})
                drawn = await cdp.wait_for("document.body && document.body.getAttribute('data-plots-drawn')")
                result.plots_drawn = int(drawn)
                result.plots = await cdp.evaluate(DRAWN_JS)
                shot = await cdp.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
                result.screenshot = base64.b64decode(shot["data"])
            finally:
                reader.cancel()
    return result


class _Session:
    """Calls and events on one page's DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, result: PageResult, page_url: str) -> None:
        self.ws = ws
        self.result = result
        self.page_url = page_url
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}

    async def call(self, method: str, params: dict | None = None) -> dict:
        call_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        reply = await future
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in reply:
            raise AssertionError(f"evaluate failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str) -> Any:
        """The expression's value once it is truthy (the page's own signal, polled)."""
        while not (value := await self.evaluate(expression)):
            await asyncio.sleep(0.1)
        return value

    async def read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                future = self.pending.pop(data["id"], None)
                if future and not future.done():
                    future.set_result(data)
            else:
                self._event(data["method"], data.get("params", {}))

    def _event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.result.errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                             for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.result.errors.append("exception: " + str(details.get("exception", {}).get("description")
                                                          or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.result.errors.append("log: " + params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if url != self.page_url and not url.startswith(("data:", "blob:", "about:")):
                self.result.external_requests.append(url)


if __name__ == "__main__":
    page, out = Path(sys.argv[1]), Path(sys.argv[2])
    shot = render_page(page)
    out.write_bytes(shot.screenshot)
    print(json.dumps({"errors": shot.errors, "external": shot.external_requests, "plots": shot.plots,
                      "size": png_size(shot.screenshot)}, indent=1), file=sys.stderr)
    os._exit(0 if not shot.errors else 1)
