"""Write a chapter notebook from a percent-format script (authoring aid; the .ipynb is the source
that gets committed, without outputs).

    python tools/py2nb.py chapter.py book/01_ct_basics.ipynb

Cells start with ``# %%`` (code) or ``# %% [markdown]`` (markdown: every line starts with ``# ``).
Tags: ``# %% tags=["hide-input"]``.  The standard install cell (tagged ``remove-cell`` so the
rendered page stays clean; Colab shows it) is prepended automatically.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]

INSTALL_CELL = f'''# Colab / Binder / fresh environment: install ctseg_lib from the book's repository if it is missing.
# (Loose version bounds: this never downgrades the torch or numpy that Colab already has.)
import importlib.util

if importlib.util.find_spec("ctseg_lib") is None:
    %pip install --quiet "ctseg-lib @ git+{REPO_URL}"'''


def convert(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(INSTALL_CELL, metadata={"tags": ["remove-cell"]}))
    chunks = re.split(r"^# %%(.*)$", text, flags=re.M)
    for header, body in zip(chunks[1::2], chunks[2::2]):
        tags = []
        m = re.search(r"tags=(\[.*?\])", header)
        if m:
            tags = json.loads(m.group(1))
        body = body.strip("\n")
        if "[markdown]" in header:
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines()]
            cell = nbformat.v4.new_markdown_cell("\n".join(lines).strip("\n"))
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i}"
    return nb


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    nbformat.write(convert(src.read_text()), dst)
    print(f"wrote {dst}")
