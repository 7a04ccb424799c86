"""A real headless Chromium, driven over the DevTools protocol, for the status page's tests.

Debian's `chromium` on a free loopback port; the protocol over a websocket (the `websockets`
package). Every console error, uncaught exception and Content-Security-Policy violation the
page causes is collected, so a test can assert there was none.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.servers import free_port, require_binary, wait_for


class Browser:
    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("chromium", "LOCK_MONITOR_TEST_CHROMIUM")
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.socket: ClientConnection | None = None
        self.problems: list[str] = []  # console errors, exceptions, CSP violations
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    def start(self) -> Browser:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--headless=new",
                "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-extensions",
                "--disable-sync",
                f"--user-data-dir={self.workdir}",
                "--remote-debugging-address=127.0.0.1",
                f"--remote-debugging-port={self.port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def attach(self, socket: ClientConnection) -> None:
        self.socket = socket
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def page_target(self) -> str | None:
        """The websocket URL of the page chromium opened, once it listens."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
            targets = json.load(r)
        pages = [t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"]
        return pages[0] if pages else None

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One protocol call; the events that arrive before its answer are kept."""
        assert self.socket is not None
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]  # type: ignore[no-any-return]
            self._on_event(message)

    def _on_event(self, message: dict[str, Any]) -> None:
        self._events.append(message)
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.problems.append(f"exception: {details.get('exception', {}).get('description')}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
            self.problems.append(f"console.{params['type']}: {params['args']}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            self.problems.append(f"log ({entry['source']}): {entry['text']}")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, width: int = 1280, height: int = 900, mobile: bool = False) -> None:
        """Load `url` in a viewport of that size and wait until it has loaded."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        self._events.clear()
        self.send("Page.navigate", url=url)
        wait_for(
            lambda: (
                self.evaluate("document.readyState") == "complete"
                and any(e.get("method") == "Page.loadEventFired" for e in self._events)
            ),
            what=f"{url} loaded",
        )

    def screenshot(self, path: Path) -> None:
        """The whole page as a PNG."""
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # its renderer and helper processes go with it
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def browser(workdir: Path) -> Iterator[Browser]:
    chromium = Browser(workdir).start()
    try:
        page = wait_for(chromium.page_target, timeout=30, what="chromium's DevTools endpoint")
        with connect(page, max_size=None, proxy=None, open_timeout=10) as socket:
            chromium.attach(socket)
            yield chromium
    finally:
        chromium.stop()
