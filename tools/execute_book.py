"""Execute the book's chapters two at a time into the cache that ``jupyter-book build`` reads.

    python tools/execute_book.py            # what `make book` runs before `jupyter-book build`
    python tools/execute_book.py --jobs 1   # one chapter at a time, every core for it

Why: jupyter-book (myst-nb) executes chapters one after the other.  Much of a chapter is
single-threaded Python — NIfTI I/O, metrics, distance transforms, plotting, starting a kernel — so
one chapter never keeps two cores busy: a second torch thread makes its training ~1.5× faster and
the rest not at all.  Two chapters at a time with one thread each do keep both cores busy: on the
2-core build machine all chapters took 620 s instead of 1,037 s (2026-11-27), and 717 s instead of
1,059 s in a cold build on the 2-core AMD CI machine kind (2026-12-08, ``benchmarks/book_times.json``).

How: each notebook is executed exactly as myst-nb's ``execute_notebooks: cache`` mode does it
(``jupyter_cache.executors.utils.single_nb_execution``, kernel working directory = the chapter's
folder, the timeout of ``_config.yml``, errors not allowed) and stored in the same jupyter-cache,
keyed on the code of its cells.  ``jupyter-book build`` then finds every chapter in the cache and
only renders.  A chapter already cached (its code unchanged) is not run again.  A failing chapter
stops the script with its traceback; nothing half-executed is cached.

Chapters that load a model another chapter trains start after it (``AFTER``).  They would be
correct in any order — ``ctseg_lib.notebook.train_cached`` holds a file lock, so a second chapter
waits for the run instead of training it twice — but a waiting chapter would hold a worker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from check_site import toc_files  # noqa: E402

#: chapter -> the chapters it starts after: those that train the models it loads (the shared
#: liver_2d_book run of 06_training; 12_real_ct also loads 09_lung's short lung model).  Started
#: before them, a chapter would wait for the run on the file lock, holding a worker.  (12_real_ct
#: started after 10_pitfalls until 2026-12-08, when 09_lung took longest; since 09_lung evaluates
#: shipped weights instead of training its recipe it finishes first, and 12_real_ct, started after
#: 10_pitfalls, ran alone at the end of a cold build for 204 s.)
AFTER: dict[str, tuple[str, ...]] = {
    "07_inference": ("06_training",), "08_liver": ("06_training",), "10_pitfalls": ("06_training",),
    "11_going_further": ("06_training",), "12_real_ct": ("06_training", "09_lung")}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def chapters(root: Path = ROOT) -> list[Path]:
    """The executable chapters (``.ipynb``) of ``_toc.yml``, in book order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    return [root / f"{f}.ipynb" for f in toc_files(toc) if (root / f"{f}.ipynb").is_file()]


def expected_seconds(root: Path = ROOT) -> dict[str, float]:
    """Cold execution times recorded by the last measured build (for the schedule only)."""
    try:
        times = json.loads((root / "benchmarks" / "book_times.json").read_text())
        return times["book_build"]["parallel"]["chapters_s"]
    except (OSError, KeyError, ValueError):
        return {}


def _execute(path: str, timeout: int, threads: int | None) -> tuple[str, object, float, str | None]:
    """Worker process: execute one notebook in its folder; returns (path, notebook, seconds, error)."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    if threads:  # read by torch / numpy when the kernel imports them
        os.environ.update({v: str(threads) for v in THREAD_VARS})
    nb = nbformat.read(path, as_version=4)
    res = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False,
                              meta_override=True)
    return path, nb, res.time, res.exc_string if res.err is not None else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="chapters executed at once (default: 2, or 1 on a 1-core machine)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the book (folder with _toc.yml, _config.yml)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="the jupyter-cache folder (default, as jupyter-book: ROOT/_build/.jupyter_cache)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    cache_dir = args.cache or root / "_build" / ".jupyter_cache"

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    timeout = int(config.get("execute", {}).get("timeout", 1200))
    jobs = max(1, args.jobs)
    # One chapter at a time keeps torch's default (every core); n at a time share the cores.
    threads = None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)
    cache = get_cache(str(cache_dir))

    todo: dict[str, Path] = {}
    for p in chapters(root):
        try:
            cache.match_cache_notebook(nbformat.read(p, as_version=4))
        except KeyError:
            todo[p.stem] = p
    print(f"execute_book: {len(todo)} chapter(s) to execute, {jobs} at a time"
          + (f", {threads} thread(s) each" if threads else "") + (": " + ", ".join(todo) if todo else ""))
    if not todo:
        return 0
    cost = expected_seconds(root)
    running: dict[Future, str] = {}
    seconds_of: dict[str, float] = {}
    failed: list[str] = []
    t_start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        while (todo and not failed) or running:
            waiting = set(todo) | set(running.values())
            ready = [n for n in todo if not waiting & set(AFTER.get(n, ()))]
            for name in sorted(ready, key=lambda n: -cost.get(n, 60.0))[:jobs - len(running)]:
                if failed:
                    break
                running[pool.submit(_execute, str(todo.pop(name)), timeout, threads)] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                name = running.pop(fut)
                path, nb, seconds, error = fut.result()
                if error is not None:
                    failed.append(name)
                    print(f"execute_book: {path} FAILED after {seconds:.0f} s:\n{error}", file=sys.stderr)
                    continue
                record = cache.add_nb_to_project(path)
                cache.cache_notebook_bundle(CacheBundleIn(nb, record.uri, data={"execution_seconds": seconds}),
                                            check_validity=False, overwrite=True)
                seconds_of[name] = seconds
                print(f"execute_book: {name} executed in {seconds:.0f} s "
                      f"({time.perf_counter() - t_start:.0f} s since start)", flush=True)
    if failed:
        print(f"execute_book: failed: {', '.join(failed)}; not run: {', '.join(todo) or 'none'}", file=sys.stderr)
        return 1
    total = time.perf_counter() - t_start
    print(f"execute_book: {len(seconds_of)} chapter(s) in {total:.0f} s")
    from ctseg_lib.io import write_json_atomic  # the timings, for benchmarks/book_times.json

    write_json_atomic(cache_dir.parent / "execute_book.json",
                      {"jobs": jobs, "threads_per_chapter": threads, "wall_s": round(total, 1),
                       "chapters_s": {n: round(t, 1) for n, t in seconds_of.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
