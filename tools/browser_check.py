"""Headless-Chromium check of pages that hold ctseg static viewers (works offline).

Usage::

    python tools/browser_check.py SITE_DIR [--page book/x.html ...] [--all-pages] [--screenshot DIR]

Serves SITE_DIR on 127.0.0.1 (random port), opens each given page (default: every ``.html`` that
contains a viewer; ``--all-pages``: every ``.html``) in headless Chromium with all DNS except
127.0.0.1 disabled, and checks:

* every viewer (``div.ctv``) finishes loading (``data-ready``) without ``data-error``;
* no viewer canvas is blank (a single colour);
* moving the slider, switching the window preset and toggling an overlay change the canvas pixels;
* the coronal and sagittal views draw non-blank images;
* the console has no SEVERE entry (none filtered: the theme's duplicate THEBE_JS_URL, its
  theme-mode warning and the favicon 404 are fixed at the source in ``_config.yml``);
* no request goes to a host other than 127.0.0.1 (read from Chromium's network log).

Exit status 0 = all good, 1 = problems (each printed on one line), 2 = chromium/chromedriver missing.
Needs Debian ``chromium`` + ``chromium-driver`` and ``selenium``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

#: Console messages not counted as errors: none (fix a message at its source rather than list it here).
IGNORED_CONSOLE: tuple[str, ...] = ()
LOCAL_HOSTS = ("127.0.0.1", "localhost")

# Returns, per viewer, per canvas: a hash of the pixels and whether more than one colour occurs.
_JS_CANVASES = """
return Array.from(document.querySelectorAll('div.ctv')).map(function (v) {
  return Array.from(v.querySelectorAll('canvas.ctv-canvas')).map(function (c) {
    var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, h = 2166136261, multi = false;
    for (var i = 0; i < d.length; i++) { h = Math.imul(h ^ d[i], 16777619) >>> 0; }
    for (var j = 4; j < d.length; j += 4)
      if (d[j] !== d[0] || d[j + 1] !== d[1] || d[j + 2] !== d[2]) { multi = true; break; }
    return {hash: h, multi: multi, w: c.width, h: c.height};
  });
});"""
_JS_STATE = """return Array.from(document.querySelectorAll('div.ctv')).map(function (v) {
  return {id: v.id, ready: v.dataset.ready || null, error: v.dataset.error || null}; });"""


def have_browser() -> bool:
    """True when chromium, chromedriver and selenium are all available."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return bool(shutil.which("chromium") or shutil.which("chromium-browser")) and bool(shutil.which("chromedriver"))


@contextlib.contextmanager
def serve(root: str | Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1:<free port> in a background thread; yield the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def chrome(width: int = 1280, height: int = 1000) -> Iterator[object]:
    """A headless, offline Chromium driven by selenium (fresh profile, removed afterwards)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ctseg-chromium-")
    opts = webdriver.ChromeOptions()
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        opts.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _canvases(driver) -> list[list[dict]]:
    return driver.execute_script(_JS_CANVASES)


def _changed(before: list[dict], after: list[dict]) -> bool:
    return any(b["hash"] != a["hash"] for b, a in zip(before, after))


def check_viewers(driver, timeout: float = 30.0) -> list[str]:
    """Check every viewer on the loaded page; return a list of problems (empty = fine)."""
    problems: list[str] = []
    deadline = time.time() + timeout
    while True:
        states = driver.execute_script(_JS_STATE)
        if all(s["ready"] or s["error"] for s in states) or time.time() > deadline:
            break
        time.sleep(0.1)
    for s in states:
        if s["error"]:
            problems.append(f"viewer {s['id']}: error {s['error']}")
        elif not s["ready"]:
            problems.append(f"viewer {s['id']}: did not finish loading in {timeout:.0f} s")
    if problems:
        return problems
    roots = driver.find_elements("css selector", "div.ctv")
    for vi, (root, canv) in enumerate(zip(roots, _canvases(driver))):
        name = f"viewer {vi + 1} ({root.get_attribute('id')})"
        for ci, c in enumerate(canv):
            if not c["multi"]:
                problems.append(f"{name}: canvas {ci + 1} ({c['w']}x{c['h']}) is blank (one colour)")
        problems += _interact(driver, root, vi, name)
    return problems


def _interact(driver, root, vi: int, name: str) -> list[str]:
    problems = []

    def state() -> list[dict]:
        return _canvases(driver)[vi]

    start = state()
    boxes = root.find_elements("css selector", ".ctv-chk input")
    if boxes:  # the viewer opens on the slice with the most foreground, so an overlay is visible
        driver.execute_script("arguments[0].click()", boxes[0])
        if not _changed(start, state()):
            problems.append(f"{name}: toggling overlay {boxes[0].find_element('xpath', '..').text!r} "
                            "did not change the image")
        driver.execute_script("arguments[0].click()", boxes[0])
    # switch to a window preset other than the one shown (a lung viewer opens on the lung window)
    win = [b for b in root.find_elements("css selector", ".ctv-btn")
           if b.text in ("lung", "bone") and "ctv-on" not in (b.get_attribute("class") or "")]
    if win:
        before = state()
        driver.execute_script("arguments[0].click()", win[0])
        if not _changed(before, state()):
            problems.append(f"{name}: switching to the {win[0].text} window did not change the image")
    for view in ("coronal", "sagittal", "axial"):  # reformats: drawn, not blank
        btn = [b for b in root.find_elements("css selector", ".ctv-btn") if b.text == view]
        if btn:
            driver.execute_script("arguments[0].click()", btn[0])
            if root.get_attribute("data-orient") != view or not all(c["multi"] for c in state()):
                problems.append(f"{name}: {view} view not shown or blank")
    slider = root.find_element("css selector", "input.ctv-slider")
    lo, hi, val = (int(slider.get_attribute(k)) for k in ("min", "max", "value"))
    if hi > lo:
        before = state()
        new = lo if val - lo > hi - val else hi
        driver.execute_script("arguments[0].value = arguments[1];"
                              "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", slider, new)
        after = state()
        if not _changed(before, after):
            problems.append(f"{name}: moving the slider {val} → {new} did not change the image")
        if root.get_attribute("data-slice") != str(new):
            problems.append(f"{name}: slider at {new} but viewer shows slice {root.get_attribute('data-slice')}")
        for ci, c in enumerate(after):
            if not c["multi"]:
                problems.append(f"{name}: canvas {ci + 1} blank after moving the slider")
    return problems


def console_problems(driver) -> list[str]:
    """SEVERE console entries (minus the known theme noise) and requests to non-local hosts."""
    problems = []
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE" and not any(s in entry.get("message", "") for s in IGNORED_CONSOLE):
            problems.append(f"console: {entry['message'][:300]}")
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            p = urlparse(url)
            if p.scheme in ("http", "https", "ws", "wss") and p.hostname not in LOCAL_HOSTS:
                problems.append(f"request to a non-local host: {url[:200]}")
    return problems


def check_page(driver, url: str, screenshot: Path | None = None, timeout: float = 30.0) -> list[str]:
    """Load ``url`` and run all checks; optionally save a screenshot."""
    driver.get_log("browser"), driver.get_log("performance")  # drop entries of earlier pages
    driver.get(url)
    problems = check_viewers(driver, timeout)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
    return problems + console_problems(driver)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", help="folder to serve (e.g. _build/html)")
    ap.add_argument("--page", action="append", default=[], help="page relative to SITE (repeatable)")
    ap.add_argument("--all-pages", action="store_true", help="check every .html page, not only viewer pages")
    ap.add_argument("--screenshot", type=Path, help="save one PNG per page into this folder")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a viewer may take to load (default 30)")
    args = ap.parse_args(argv)
    site = Path(args.site)
    if not site.is_dir():
        print(f"browser_check: {site}: not a folder", file=sys.stderr)
        return 1
    if not have_browser():
        print("browser_check: chromium, chromedriver or selenium missing", file=sys.stderr)
        return 2
    pages = args.page or sorted(
        p.relative_to(site).as_posix() for p in site.rglob("*.html")
        if args.all_pages or 'class="ctv"' in p.read_text(encoding="utf-8", errors="replace"))
    if not pages:
        print(f"browser_check: no pages to check under {site}")
        return 0
    failed = 0
    with serve(site) as base, chrome() as driver:
        for page in pages:
            if not (site / page).is_file():
                print(f"browser_check: {page}: no such page")
                failed += 1
                continue
            shot = args.screenshot / (page.replace("/", "_") + ".png") if args.screenshot else None
            problems = check_page(driver, base + page, shot, args.timeout)
            n = len(driver.find_elements("css selector", "div.ctv"))
            for p in problems:
                print(f"browser_check: {page}: {p}")
            print(f"browser_check: {page}: {n} viewer(s), {'OK' if not problems else f'{len(problems)} problem(s)'}")
            failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
