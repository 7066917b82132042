# Two commands do everything on a fresh machine with Python 3.11: `make test` and `make book`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test book lint clean venv bench

venv: $(STAMP)

# Install torch first, pinned to the CPU wheel, so nothing can pull a CUDA build.
$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check ctseg_lib tests benchmarks
	$(PY) -m pytest

# --all + -W: every chapter is executed (via the jupyter-cache) and any cell error or warning fails the build.
MATHJAX := book/_assets/mathjax/tex-mml-chtml.js

# MathJax served from the book itself (offline reading; see tools/fetch_mathjax.py).
$(MATHJAX): | $(STAMP)
	$(PY) tools/fetch_mathjax.py book/_assets/mathjax

book: $(STAMP) $(MATHJAX)
	$(VENV)/bin/jupyter-book build . --all -W --keep-going
	$(PY) tools/check_site.py _build/html

bench: $(STAMP)
	$(PY) -m pip install -q -r requirements-bench.txt
	$(PY) benchmarks/run.py

clean:
	rm -rf _build
