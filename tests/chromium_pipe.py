"""Headless Chromium driven over the DevTools protocol through a pipe: no websocket, no new dependency.

``--remote-debugging-pipe`` makes Chromium read commands from file descriptor 3 and write replies and
events to descriptor 4, each message JSON ending in a NUL byte. Through it a test can ask what a
page-level ``--dump-dom`` cannot: which platform fonts drew a node's text (``CSS.getPlatformFontsForNode``),
where boxes lie (``Runtime.evaluate`` from outside the page, so the pages stay script-free), what the
console logged, and a screenshot of one region.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Event methods that count as a console error on a page.
_ERROR_EVENTS = ("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded")


class ChromiumPipe:
    """One headless Chromium with one page, attached over the DevTools pipe.

    Args:
        binary: The chromium executable.
        profile: A fresh user-data folder.
        env: Environment for Chromium (e.g. ``FONTCONFIG_FILE`` to restrict its fonts).
        size: Viewport width and height in CSS pixels.
    """

    def __init__(
        self,
        binary: str,
        profile: Path,
        env: Mapping[str, str] | None = None,
        size: tuple[int, int] = (1200, 900),
    ) -> None:
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # Above 9 (bash takes such numbers; dash does not), so `3<&N 4>&M` never overwrites an end to copy.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome)]
        for fd in (to_chrome, from_chrome):
            os.close(fd)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
        flags += ["--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-pipe"]
        profile.mkdir(parents=True, exist_ok=True)
        self._log = profile / "chromium.log"  # a file, not a pipe nobody reads while the page loads
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", f'exec "$0" "$@" 3<&{ends[0]} 4>&{ends[1]}', binary, *flags, "about:blank"],
                pass_fds=ends,
                env=dict(env) if env is not None else None,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        for fd in ends:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "DOM", "CSS"):
            self.call(f"{domain}.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=size[0],
            height=size[1],
            deviceScaleFactor=1,
            mobile=False,
        )

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("chromium did not answer over the DevTools pipe")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe: {self.stderr()[-2000:]}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(
        self, method: str, session: bool = False, timeout: float = 60.0, **params: Any
    ) -> dict[str, Any]:
        """Send one command (to the page's session with ``session``) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        """The first event ``method`` seen so far or arriving within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((e for e in self.events if e.get("method") == method), None)
            if found is not None:
                self.events.remove(found)
                return found
            self.events.append(self._message(deadline))

    def open(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Errors the page raised or logged since it was opened (exceptions, console.error, failed loads)."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method not in _ERROR_EVENTS:
                continue
            if method == "Runtime.consoleAPICalled" and params.get("type") not in ("error", "assert"):
                continue
            if method == "Log.entryAdded" and params.get("entry", {}).get("level") != "error":
                continue
            out.append(json.dumps(params)[:500])
        return out

    def fonts(self, selector: str) -> list[list[dict[str, Any]]]:
        """Per element matching ``selector``: the platform fonts that drew its own text, with glyph counts."""
        root = self.call("DOM.getDocument", session=True, depth=0)["root"]["nodeId"]
        nodes = self.call("DOM.querySelectorAll", session=True, nodeId=root, selector=selector)["nodeIds"]
        return [self.call("CSS.getPlatformFontsForNode", session=True, nodeId=n)["fonts"] for n in nodes]

    def screenshot(self, path: Path, clip: Mapping[str, float]) -> Path:
        """A PNG of the page region ``clip`` (x, y, width, height in CSS pixels)."""
        data = self.call(
            "Page.captureScreenshot",
            session=True,
            format="png",
            captureBeyondViewport=True,
            clip={**clip, "scale": 1},
        )["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def stderr(self) -> str:
        """What Chromium wrote to stderr so far."""
        return self._log.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)
