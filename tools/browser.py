"""Headless Chromium over the DevTools protocol: open a local HTML page, ask the browser which images loaded and
where every link points, and take a full-page screenshot. Used by the report tests and tools/report_screenshots.py.

The browser binds 127.0.0.1 on a free port, gets a throwaway profile, and is always stopped.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlparse

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# What the page itself reports: every <img> (did it decode?), every <a href>, <iframe src>, stylesheet and script.
_INVENTORY_JS = """(() => ({
  images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  frames: Array.from(document.querySelectorAll('iframe[src]')).map(f => f.src),
  assets: Array.from(document.querySelectorAll('link[href],script[src]')).map(e => e.href || e.src),
  height: Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0),
  title: document.title,
}))()"""


def find_chromium() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chromium:
    """`with Chromium() as b: b.inventory(path); b.screenshot(path, png)`."""

    def __init__(self, binary: str | None = None, width: int = 1280, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("no Chromium binary found (install it: apt-get install -y chromium)")
        self.width, self.timeout = width, timeout
        self._ids = itertools.count(1)
        self._events: list[dict] = []

    def __enter__(self) -> Self:
        import websocket

        self.profile = tempfile.mkdtemp(prefix="tailsynth-chromium-")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--allow-file-access-from-files",
             f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
             f"--remote-debugging-port={self.port}", "--remote-allow-origins=*", f"--window-size={self.width},900",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            target = self._page_target()
            self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=self.timeout)
            self._call("Page.enable")
            self._call("Runtime.enable")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _page_target(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if pages:
                    return pages[0]
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.binary} did not open its DevTools port {self.port}")
            time.sleep(0.2)

    def _call(self, method: str, **params) -> dict:
        mid = next(self._ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._events.append(msg)  # an event (e.g. Page.loadEventFired) that `open` waits for
        raise TimeoutError(f"{method}: no answer within {self.timeout} s")

    def open(self, page: str | Path) -> None:
        """Navigate to a local file and wait for its load event (images and frames included)."""
        url = Path(page).resolve().as_uri()
        self._events = []
        self._call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: no load event within {self.timeout} s")
            self._events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str):
        res = self._call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def inventory(self, page: str | Path) -> dict:
        self.open(page)
        return self.evaluate(_INVENTORY_JS)

    def screenshot(self, page: str | Path, png: str | Path, max_height: int = 8000) -> Path:
        """Full-page PNG of PAGE (cut at MAX_HEIGHT px)."""
        inv = self.inventory(page)
        height = int(min(max(inv["height"], 300), max_height))
        self._call("Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1,
                   mobile=False)
        time.sleep(0.3)  # let layout settle at the new size
        data = self._call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        self._call("Emulation.clearDeviceMetricsOverride")
        png = Path(png)
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(base64.b64decode(data))
        return png


def broken_references(inv: dict, external_links_ok: bool = False) -> list[str]:
    """Images that did not decode, links/frames/assets to local files that do not exist, and anything that needs
    the network (a report must render offline). EXTERNAL_LINKS_OK lets plain <a href> links to the web pass (third-
    party pages such as Evidently's carry a "made with Plotly" link); external frames and assets never pass."""
    bad = [f"image {i['src']} did not load" for i in inv["images"] if not i["ok"]]
    for kind in ("links", "frames", "assets"):
        for ref in inv[kind]:
            u = urlparse(ref)
            if u.scheme == "file":
                if not Path(unquote(u.path)).exists():
                    bad.append(f"{kind[:-1]} {ref} points at a missing file")
            elif u.scheme in ("http", "https"):
                if not (kind == "links" and external_links_ok):
                    bad.append(f"{kind[:-1]} {ref} needs the network")
            elif u.scheme not in ("about", "data", "javascript", "mailto"):
                bad.append(f"{kind[:-1]} {ref}: unexpected scheme")
    return bad


def local_pages(inv: dict) -> list[Path]:
    """The local HTML pages a page links to or frames (to check them in turn)."""
    out = []
    for ref in inv["links"] + inv["frames"]:
        u = urlparse(ref)
        if u.scheme == "file" and u.path.endswith(".html"):
            out.append(Path(unquote(u.path)))
    return out
