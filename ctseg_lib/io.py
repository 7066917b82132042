"""Atomic file writing: a file is either the old version or the complete new one, never half.

Every file ctseg writes (checkpoints, caches, predictions, CSVs, downloads) goes through
:func:`atomic_write`: the data is written to a temporary file in the *same directory*, flushed and
``fsync``-ed, then moved over the destination with :func:`os.replace`, which POSIX guarantees to be
atomic within one file system.  A crash or ``SIGKILL`` at any moment therefore leaves either the
previous file or the new one; the only debris is a ``.tmp-*`` file that the next write ignores.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import CTSegError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: mkstemp creates 0600 files; a written file should get the usual 0666 & ~umask like open() gives.
#: Read once at import: os.umask can only be queried by setting it, which is racy in threads.
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", suffix: str = "") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success move it over ``path`` atomically.

    ``suffix`` is appended to the temporary name (nibabel and numpy pick formats by extension).
    If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix=suffix, dir=path.parent)
    try:
        # Text is always UTF-8 (not the locale's encoding, which is ASCII under LANG=C).
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            os.chmod(tmp, _FILE_MODE)  # os.chmod, not fchmod: the latter is missing on Windows < 3.13
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary *path* (for libraries that want a filename, e.g. ``torch.save``, nibabel).

    The caller writes to the yielded path; on success it is moved over ``path`` atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix=suffix or _suffixes(path), dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def ensure_not_inside(out: str | Path, protected: str | Path, what: str = "output") -> None:
    """Refuse to write ``out`` inside ``protected`` (e.g. predictions into the source dataset)."""
    out_r, prot_r = Path(out).resolve(), Path(protected).resolve()
    if out_r == prot_r or prot_r in out_r.parents:
        raise CTSegError(f"refusing to write {what} inside the source folder {prot_r}", out)


def _suffixes(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


def _fsync_dir(d: Path) -> None:
    # Make the rename itself durable (POSIX); harmless no-op where directories cannot be opened.
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` (created if missing) for the ``with`` block.

    Used where two processes could build the same thing at once — the book executes two chapters in
    parallel (``tools/execute_book.py``) and both may ask for the same phantoms or the same model.
    The second process waits, then finds the finished result.  POSIX ``flock``; the lock is released
    when the process dies, so a killed build never leaves a stale lock.  Where ``fcntl`` does not
    exist (Windows) this is a no-op: a single process needs no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
