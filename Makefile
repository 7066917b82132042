# Two commands do everything on a fresh machine with Python 3.11: `make test` and `make book`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test book lint clean venv bench mutate

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
	$(VENV)/bin/ruff check ctseg_lib tests benchmarks tools
	$(PY) -m pytest

# Chapters are executed first, two at a time, into the jupyter-cache (tools/execute_book.py: a failing
# cell stops here); then --all + -W renders every page from that cache, and any warning fails the build.
MATHJAX := book/_assets/mathjax/tex-mml-chtml.js

# MathJax served from the book itself (offline reading; see tools/fetch_mathjax.py).
$(MATHJAX): | $(STAMP)
	$(PY) tools/fetch_mathjax.py book/_assets/mathjax

book: $(STAMP) $(MATHJAX)
	$(PY) tools/execute_book.py
	$(VENV)/bin/jupyter-book build . --all -W --keep-going
	$(PY) tools/check_site.py _build/html

# Mutation testing (tools/mutate.py): plant each listed bug alone in a temporary copy, run the tests of
# its module, print killed/survived and the mutation score (~3 min on 2 cores).  Not part of `make test`.
mutate: $(STAMP)
	$(PY) tools/mutate.py

bench: $(STAMP)
	$(PY) -m pip install -q -r requirements-bench.txt
	$(PY) benchmarks/run.py

# The jupyter-cache keys a chapter on its own cells only: after changing ctseg_lib, clean first.
clean:
	rm -rf _build book/_data
