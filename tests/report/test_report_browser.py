"""Open report.html in headless Chromium, driven over the DevTools protocol (``--remote-debugging-pipe``).

The pipe needs no websocket library: JSON messages separated by NUL bytes on file descriptors 3 (to the
browser) and 4 (from it). The test records every request *the page* makes, every console message and
uncaught exception, counts the SVG charts plotly drew, and takes a screenshot.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = next(
    (
        p
        for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if p and Path(p).exists()
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); CI installs it"
)
TIMEOUT = 90.0


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, profile: Path) -> None:
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        # the browser reads commands on fd 3 and writes replies on fd 4: bash wires them up (dash
        # cannot redirect descriptors above 9)
        redirect = f'exec "$0" "$@" 3<&{to_child} 4>&{from_child}'
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--window-size=1280,2000",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            ["bash", "-c", redirect, CHROMIUM, *args],
            pass_fds=(to_child, from_child),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed the debugging pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send a command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """The first (kept or new) event named ``method``."""
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))
        return next(e for e in self.events if e.get("method") == method)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        os.close(self._r)
        os.close(self._w)


def visit(html: Path, profile: Path) -> tuple[list[dict], int, int, np.ndarray]:
    """Open a page; return (DevTools events, plotly svg count, figure count, screenshot RGB)."""
    browser = DevTools(profile)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Network", "Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable", session)
        browser.call("Page.navigate", session, url=html.as_uri())
        browser.wait_for("Page.loadEventFired")

        def count(selector: str) -> int:
            expression = f"document.querySelectorAll({selector!r}).length"
            return browser.call("Runtime.evaluate", session, expression=expression)["result"][
                "value"
            ]

        n_svg, n_figures = count(".js-plotly-plot svg.main-svg"), count(".figure")
        shot = browser.call("Page.captureScreenshot", session, format="png")["data"]
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot))).convert("RGB"))
        return browser.events, n_svg, n_figures, image
    finally:
        browser.close()


def requested(events: list[dict]) -> list[str]:
    """URLs the page asked for."""
    return [
        e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
    ]


def errors(events: list[dict]) -> list[dict]:
    """Uncaught exceptions, console errors and browser-logged errors of the page."""
    found = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    found += [
        e["params"]["entry"]
        for e in events
        if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
    ]
    found += [
        e["params"]
        for e in events
        if e.get("method") == "Runtime.consoleAPICalled"
        and e["params"]["type"] in ("error", "assert")
    ]
    return found


@pytest.fixture(scope="module")
def page(run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The report opened in Chromium."""
    return visit(run_dir / "report.html", tmp_path_factory.mktemp("chromium-profile"))


def test_the_probe_sees_network_requests_and_errors(tmp_path: Path) -> None:
    """Control: a page that fetches from the network and throws is caught by the same checks."""
    html = tmp_path / "bad.html"
    html.write_text(
        '<html><body><img src="http://127.0.0.1:9/x.png"><script>throw new Error("boom")</script>'
        "</body></html>"
    )
    events, *_ = visit(html, tmp_path / "profile")
    assert "http://127.0.0.1:9/x.png" in requested(events)
    assert any("boom" in json.dumps(e) for e in errors(events))


def test_page_requests_nothing_from_the_network(page) -> None:
    urls = requested(page[0])
    assert urls, "the page load itself was not recorded"
    assert [u for u in urls if not u.startswith(("file:", "data:", "blob:"))] == []


def test_page_has_no_console_errors(page) -> None:
    assert errors(page[0]) == []


def test_plotly_draws_every_figure(page) -> None:
    _, n_svg, n_plots, _ = page
    assert n_plots > 0
    assert n_svg >= n_plots  # plotly draws at least one svg.main-svg per figure


def test_screenshot_is_not_blank(page, run_dir: Path) -> None:
    image = page[3]
    Image.fromarray(image).save(run_dir / "screenshot.png")  # kept beside the report for a look
    assert image.shape[0] >= 1000 and image.shape[1] >= 1000
    assert image.std() > 20
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50
