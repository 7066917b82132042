"""Book hygiene: notebooks committed without outputs, every chapter has learning goals and
exercises, the toc lists every chapter, and the install cell really installs the package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
sys.path.insert(0, str(ROOT / "tools"))
from check_site import toc_files  # noqa: E402


def test_there_are_chapters():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_output_free(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell has outputs (clear them before committing)"
            assert cell.execution_count is None, f"{path.name}: a cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_structure(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and "remove-cell" in first.metadata.get("tags", [])
    assert CONFIG["repository"]["url"] in first.source, "install cell must use the repository URL of _config.yml"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert re.search(r"learning goals", text, re.I), f"{path.name}: no learning goals"
    assert "```{exercise}" in text or "````{exercise}" in text, f"{path.name}: no exercises"
    assert "{solution}" in text, f"{path.name}: exercises without solutions"
    heading = next(c.source for c in nb.cells if c.cell_type == "markdown")
    heading = re.sub(r"^\s*\([\w-]+\)=\s*\n", "", heading)  # the chapter's label line, for {numref}/{ref}
    assert heading.lstrip().startswith("# "), f"{path.name}: first markdown cell must be the title"


def test_toc_lists_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = set(toc_files(toc))
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in listed, f"{nb.name} is not in _toc.yml"
    for f in listed:
        assert list(ROOT.glob(f + ".*")), f"_toc.yml lists {f} but no such file"


def _install_spec(source: str) -> str:
    m = re.search(r'%pip install --quiet "(ctseg-lib @ git\+[^"]+)"', source)
    assert m, "install cell must %pip install ctseg-lib from git"
    return m.group(1)


@pytest.mark.slow
def test_install_cell_works_in_a_clean_venv(tmp_path):
    """Install the package the way the first cell does, with the local checkout instead of git.

    The clean venv sees the project's dependencies (already installed here) through a .pth file,
    so nothing is downloaded, but ctseg_lib itself must come from the install.
    """
    spec = _install_spec(nbformat.read(NOTEBOOKS[0], as_version=4).cells[0].source)
    name = spec.split("@")[0].strip()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    (Path(site) / "deps.pth").write_text(deps + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_NO_INDEX"] = "1"
    # build from a copy so the checkout gets no build/ or egg-info debris
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "_build", ".git", "_data", "build", "*.egg-info"))
    subprocess.run([str(vpy), "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
                    f"{name} @ file://{src}"], check=True, env=env, cwd=tmp_path)
    out = subprocess.run([str(vpy), "-c", "import ctseg_lib, ctseg_lib.data; print(ctseg_lib.__file__)"],
                         check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert str(venv) in out, f"ctseg_lib imported from {out!r}, not from the clean venv"


def test_parallel_executor_knows_every_chapter_and_its_dependencies():
    """tools/execute_book.py runs what _toc.yml lists; its AFTER table names real chapters."""
    import execute_book

    stems = [p.stem for p in execute_book.chapters()]
    assert stems == [Path(f).name for f in toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
                     if (ROOT / f"{f}.ipynb").is_file()]
    assert set(execute_book.AFTER) | {d for deps in execute_book.AFTER.values() for d in deps} <= set(stems)
    # Recorded times only order the schedule (a chapter without one is assumed to take 60 s), so a new
    # chapter needs none; a recorded time for a chapter that no longer exists is stale.
    assert set(execute_book.expected_seconds()) <= set(stems), "book_times.json names a removed chapter"
    # every chapter that loads the shared book model comes after the chapter that trains it (directly
    # or through the chapters it starts after)
    def after_chain(stem: str) -> set[str]:
        seen, todo = set(), list(execute_book.AFTER.get(stem, ()))
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo += execute_book.AFTER.get(s, ())
        assert stem not in seen, f"{stem} waits for itself"
        return seen

    for stem in stems:
        source = "".join(c.source for c in nbformat.read(ROOT / "book" / f"{stem}.ipynb", 4).cells)
        if "liver_2d_book" in source and stem != "06_training":
            assert "06_training" in after_chain(stem), stem
        # a chapter that loads one of chapter 9's short lung runs starts after chapter 9
        if re.search(r"lung_short_25d|lung_cfg, lung_root", source) and stem != "09_lung":
            assert "09_lung" in after_chain(stem), stem


def test_parallel_executor_matches_myst_nb_execution_settings():
    """The notebooks it caches must be found by jupyter-book: cache mode, same cache folder."""
    assert CONFIG["execute"]["execute_notebooks"] == "cache"
    assert "cache" not in CONFIG["execute"], "execute_book.py writes to the default _build/.jupyter_cache"
    assert "tools/execute_book.py" in (ROOT / "Makefile").read_text()


def _tiny_book(root: Path, b_source: str) -> None:
    (root / "book").mkdir(parents=True, exist_ok=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/a\n  - file: book/b\n")
    (root / "_config.yml").write_text("execute:\n  execute_notebooks: cache\n  timeout: 120\n")
    for name, src in (("a", "print('chapter a', 6 * 7)"), ("b", b_source)):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, root / "book" / f"{name}.ipynb")


def test_parallel_executor_fails_on_a_broken_chapter_and_caches_only_good_ones(tmp_path, capsys):
    """A cell error fails the run with the notebook named; what succeeded is cached (and found by
    the same hash jupyter-book uses), what failed is not; the next run executes only the fixed one."""
    import execute_book
    from jupyter_cache import get_cache

    _tiny_book(tmp_path, "raise ValueError('broken on purpose')")
    assert execute_book.main(["--root", str(tmp_path), "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "b.ipynb FAILED" in err and "broken on purpose" in err
    cache = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    a = nbformat.read(tmp_path / "book" / "a.ipynb", 4)
    b = nbformat.read(tmp_path / "book" / "b.ipynb", 4)
    record = cache.match_cache_notebook(a)  # what myst-nb's cache mode looks up
    assert "chapter a 42" in cache.get_cache_bundle(record.pk).nb.cells[0].outputs[0]["text"]
    with pytest.raises(KeyError):
        cache.match_cache_notebook(b)

    _tiny_book(tmp_path, "print('fixed')")
    assert execute_book.main(["--root", str(tmp_path), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 chapter(s) to execute" in out and ": b" in out  # a came from the cache
    cache.match_cache_notebook(nbformat.read(tmp_path / "book" / "b.ipynb", 4))
    times = yaml.safe_load((tmp_path / "_build" / "execute_book.json").read_text())
    assert set(times["chapters_s"]) == {"b"} and times["jobs"] == 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapters_that_read_repository_files_fetch_them_on_colab(path):
    """``pip install git+...`` brings the package, not ``samples/``: a chapter that loads the real CT
    samples or shipped weights must, in its install cell, clone the repository where they are missing and
    point the loader at the clone (chapter 12 did not, until 2026-12-07)."""
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells[1:] if c.cell_type == "code")
    first = nb.cells[0].source
    needs = {"CTSEG_SAMPLES": (("load_sample(",), "list_samples()", "/tmp/ctseg-book/samples/realct"),
             "CTSEG_WEIGHTS": (("load_pretrained(", "pretrained_run("), "weights_dir()",
                               "/tmp/ctseg-book/samples/models")}
    for var, (calls, probe, folder) in needs.items():
        if any(call in code for call in calls):
            assert f"git clone --quiet --depth 1 {CONFIG['repository']['url']} /tmp/ctseg-book" in first, path.name
            assert probe in first and f'os.environ["{var}"] = "{folder}"' in first, (path.name, var)
