"""Screenshots of a web page in headless Chromium (checks the web viewer renders on a machine without a display
or GPU): ``python -m occnet_ros.viewer.screenshot URL OUT.png [--wait S]``.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages, each ended
by a NUL byte, commands on the child's fd 3, answers on its fd 4), so nothing beyond the standard library is
needed. WebGL runs on the CPU through SwiftShader (:data:`CHROMIUM_FLAGS`); the Rerun viewer then draws with its
WebGL (GLES) backend and shows a "Software rasterizer" note.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
"""Programs tried, in order, on PATH."""

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage", "--mute-audio")
"""Headless Chromium 150 (Debian 12) rendered the Rerun web viewer with these: ``--use-angle=swiftshader``
and ``--enable-unsafe-swiftshader`` give WebGL2 on the CPU; ``--no-sandbox`` is needed as root;
``--disable-dev-shm-usage`` avoids a small /dev/shm in containers."""


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or did not answer (the message says which)."""


def find_browser() -> str | None:
    """Path of the first of :data:`BROWSERS` on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless Chromium with one page; use as a context manager (the browser is ended on exit).
    ``log_path``: where the browser's own output goes (default: discarded)."""

    def __init__(self, width: int = 1280, height: int = 800, browser: str | None = None,
                 log_path: Path | None = None):
        path = browser or find_browser()
        if path is None:
            raise BrowserError(f"no Chromium found on PATH (tried {', '.join(BROWSERS)}); on Debian as root: "
                               "apt-get install -y chromium (or `make browser`)")
        self._profile = tempfile.TemporaryDirectory(prefix="occnet_chromium_")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        log = open(log_path, "wb") if log_path is not None else None

        def child_fds():  # the DevTools pipe is fds 3 (commands) and 4 (answers) in the browser
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [path, *CHROMIUM_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}",
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if log is not None:
            log.close()
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self.console: list[str] = []
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable", session=True)
            self.call("Runtime.enable", session=True)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 30.0) -> dict:
        """Send one DevTools command and wait for its result (raises :class:`BrowserError`)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self._session
        try:
            os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        except OSError as e:
            raise BrowserError(f"Chromium is not answering ({method}): {e}") from e
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("method") == "Runtime.consoleAPICalled":
                    self.console.append(" ".join(str(a.get("value", "")) for a in reply["params"].get("args", [])))
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise BrowserError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = end - time.monotonic()
            ready, _, _ = select.select([self._res_r], [], [], max(left, 0.0))
            if not ready:
                raise BrowserError(f"no answer to {method} within {timeout:.0f} s")
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (code {self.proc.poll()}) during {method}")
            self._buf += chunk

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Navigate to ``url`` and wait until its document has loaded (the page's session answers again once
        the navigation moved it to a new renderer)."""
        self.call("Page.navigate", {"url": url}, session=True)
        end = time.monotonic() + timeout
        while True:
            try:
                state = self.call("Runtime.evaluate", {"expression": "document.readyState", "returnByValue": True},
                                  session=True)
                if state.get("result", {}).get("value") == "complete":
                    return
            except BrowserError as e:
                if "Not attached" not in str(e) or time.monotonic() > end:
                    raise
            if time.monotonic() > end:
                raise BrowserError(f"{url} did not load within {timeout:.0f} s")
            time.sleep(0.2)

    def screenshot(self) -> np.ndarray:
        """The page as (H, W, 3) uint8 RGB."""
        from PIL import Image

        data = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"}, session=True,
                                          timeout=60.0)["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def screenshot_until(url: str, until: Callable[[np.ndarray], bool], timeout: float, period: float = 2.0,
                     browser: HeadlessChromium | None = None) -> tuple[np.ndarray, bool]:
    """Open ``url`` and take screenshots every ``period`` s until ``until(image)`` holds or ``timeout`` s pass
    -> (last image, whether it held)."""
    own = browser is None
    b = browser or HeadlessChromium()
    try:
        b.open(url)
        end = time.monotonic() + timeout
        while True:
            image = b.screenshot()
            if until(image):
                return image, True
            if time.monotonic() > end:
                return image, False
            time.sleep(period)
    finally:
        if own:
            b.close()


def main(argv: list[str] | None = None) -> int:
    """Save a screenshot of a page after ``--wait`` seconds; exit code 2 without Chromium."""
    p = argparse.ArgumentParser(prog="python -m occnet_ros.viewer.screenshot", description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("out", type=Path, help="PNG file to write")
    p.add_argument("--wait", type=float, default=20.0, help="seconds to let the page load and draw")
    args = p.parse_args(argv)
    from PIL import Image

    try:
        image, _ = screenshot_until(args.url, lambda _: False, timeout=args.wait, period=args.wait)
    except BrowserError as e:
        print(f"screenshot: {e}", file=sys.stderr)
        return 2
    Image.fromarray(image).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
