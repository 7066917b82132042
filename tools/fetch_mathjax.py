"""Put a local copy of MathJax 3 next to the book so equations render offline.

Sphinx loads MathJax from a CDN by default; offline (and in the browser checks, which block every
non-local host) the equations then stay raw LaTeX.  MathJax 3.2.2 is published on PyPI inside the
``django-static-mathjax`` wheel, so plain ``pip download`` fetches it (no npm needed); we copy the
CHTML bundle, its fonts and the lazily loaded TeX extensions / menu into ``book/_assets/mathjax``.

Usage: ``python tools/fetch_mathjax.py book/_assets/mathjax``
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "django-static-mathjax==3.2.2.1"
PREFIX = "mathjax/static/mathjax/es5/"
KEEP = ("tex-mml-chtml.js", "output/chtml/fonts/woff-v2/", "input/tex/extensions/", "ui/", "a11y/")


def main(dest: str) -> int:
    out = Path(dest)
    if (out / "tex-mml-chtml.js").is_file():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, WHEEL],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        stage = Path(tmp) / "mathjax"
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                rel = name[len(PREFIX):] if name.startswith(PREFIX) else None
                if rel and any(rel.startswith(k) for k in KEEP) and not name.endswith("/"):
                    target = stage / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage), str(out))  # complete copy or nothing
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"MathJax 3.2.2 copied to {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "book/_assets/mathjax"))
