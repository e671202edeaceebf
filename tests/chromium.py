"""A headless Chromium driven over the DevTools protocol, for tests that look at a page.

Debian's ``chromium`` (``scripts/chromium`` installs it; ``make test`` runs that)
started with ``--remote-debugging-port=0``; its page is driven with a few CDP
commands over a websocket (aiohttp's client: a dependency of MLflow, so no
package of its own). Nothing is downloaded: no Playwright or Selenium browser.

    with Browser(tmp_path) as browser:
        browser.open(url)
        browser.wait_for("document.title.startsWith('Runs')", timeout_s=60)
        browser.screenshot(tmp_path / "page.png")
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import httpx

from cfexp.childproc import kill_group

CHROMIUM = "chromium"


def chromium_path() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        raise AssertionError("chromium is not installed: run scripts/chromium (make test does)")
    return found


class Browser:
    """One headless Chromium with one page; every call blocks until Chromium answered."""

    def __init__(self, profile_dir: Path, width: int = 1600, height: int = 1000) -> None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its renderers and helpers stop with it (kill_group)
        )
        self._loop = asyncio.new_event_loop()
        self._next_id = 0
        try:
            port = self._devtools_port()
            self._run(self._connect(port))
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout_s: float = 60) -> int:
        """Chromium prints ``DevTools listening on ws://127.0.0.1:PORT/...`` on stderr when it is ready."""
        assert self.process.stderr is not None
        found: list[int] = []
        lines: list[str] = []

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                lines.append(line)
                if not found and line.startswith("DevTools listening on ws://"):
                    found.append(int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]))
            # Chromium's stderr is read to its end, so a full pipe never blocks it.

        self._reader = threading.Thread(target=read, name="chromium-stderr", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while not found and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.1)
        if not found:
            raise AssertionError(f"chromium did not start its DevTools server; its output:\n{''.join(lines)[-2000:]}")
        return found[0]

    async def _connect(self, port: int) -> None:
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(coroutine)

    async def _call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        await self._ws.send_str(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:  # events arrive in between: skip them
            message = json.loads((await self._ws.receive()).data)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message["result"])

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools protocol command; its result."""
        return dict(self._run(self._call(method, **params)))

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float) -> Any:
        """Poll until ``expression`` is truthy; its value (AssertionError with the page's text on timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        text = self.evaluate("document.body ? document.body.innerText : ''") or ""
        raise AssertionError(f"the page never showed `{expression}` within {timeout_s} s; it shows:\n{text[:3000]}")

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText") or "")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if getattr(self, "_session", None) is not None:
            self._run(self._ws.close())
            self._run(self._session.close())
            self._session = None
        kill_group(self.process.pid)
        self.process.wait()
        if getattr(self, "_reader", None) is not None:
            self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self._loop.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
