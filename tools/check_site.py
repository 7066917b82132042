"""Check a built book: every page of _toc.yml exists in the HTML output, and no page shows a
cell error.  Usage: ``python tools/check_site.py _build/html``.  With chromium available it also
runs the headless-browser checks of ``tools/browser_check.py`` on the pages that hold viewers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files(toc: dict) -> list[str]:
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for e in entries:
            if "file" in e:
                files.append(e["file"])
            for key in ("chapters", "sections", "parts"):
                if key in e:
                    walk(e[key])

    walk(toc.get("parts", []) + toc.get("chapters", []))
    return files


def broken_links(html: Path) -> list[str]:
    """Internal links (href/src to files of the site) that point to nothing."""
    import re
    from urllib.parse import unquote, urlparse

    bad = []
    for page in html.rglob("*.html"):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        for ref in re.findall(r'(?:href|src)="([^"#?]+)', page.read_text(encoding="utf-8", errors="replace")):
            u = urlparse(ref)
            if u.scheme or u.netloc or ref.startswith(("data:", "mailto:", "javascript:")):
                continue
            target = (html / unquote(u.path).lstrip("/")) if ref.startswith("/") else (page.parent / unquote(u.path))
            if not target.exists():
                bad.append(f"{page.relative_to(html)}: broken internal link {ref}")
    return bad


def main(site: str) -> int:
    html = Path(site)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    problems = []
    pages = []
    for f in toc_files(toc):
        page = html / (f + ".html")
        pages.append(page)
        if not page.is_file():
            problems.append(f"missing page for {f}: {page}")
            continue
        text = page.read_text(encoding="utf-8")
        for bad in ("Traceback (most recent call last)", "cell_execution_error", "nb-error"):
            if bad in text:
                problems.append(f"{page}: contains {bad!r}")
    problems += broken_links(html)
    built = {p.relative_to(html).with_suffix("").as_posix() for p in html.glob("book/**/*.html")}
    extra = built - set(toc_files(toc))
    if extra:
        problems.append(f"pages built but not in _toc.yml: {sorted(extra)}")
    for p in problems:
        print("check_site:", p)
    if problems:
        return 1
    size = sum(p.stat().st_size for p in pages if p.is_file())
    print(f"check_site: {len(pages)} pages match _toc.yml ({size / 1e6:.1f} MB of HTML)")
    browser = ROOT / "tools" / "browser_check.py"
    have_browser = shutil.which("chromium") and shutil.which("chromedriver")
    if browser.is_file() and (have_browser or os.environ.get("CTSEG_REQUIRE_BROWSER") == "1"):
        return subprocess.call([sys.executable, str(browser), str(html)])
    print("check_site: chromium not found, browser checks skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
