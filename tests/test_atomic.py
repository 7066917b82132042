"""Atomic writes under SIGKILL: the destination is always the complete old or complete new file.

A forked child process rewrites one destination in a loop, alternating two versions, through the
ctseg_lib.io helpers; the parent SIGKILLs it at a random moment, then hashes the destination.  A
plain ``open(dest, "wb")`` fails this test (a truncated file is visible), see
``test_the_kill_harness_detects_non_atomic_writes``.

A random delay cannot prove that a kill landed *inside* a write, so the ``*_mid_write_*`` tests make the
child pause at a known point (after part of the data; after all of it, just before the rename) and tell
the parent through a pipe; the parent checks that the new data sits in a temporary file, then kills it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ctseg_lib.data.nifti import save_nifti
from ctseg_lib.errors import CTSegError
from ctseg_lib.io import atomic_path, atomic_write, ensure_not_inside, write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[1]

def _write(kind: str, dest: Path, k: int) -> None:
    """Write version ``k`` ∈ {0, 1} of a ``kind`` file; each version is deterministic (hashable)."""
    if kind == "npy":  # 20 MB numpy array through atomic_write
        with atomic_write(dest, "wb") as f:
            np.save(f, np.full(5_000_000, k + 1, np.float32))
    elif kind == "path":  # 12 MB through atomic_path, the way torch.save(model, path) is called
        with atomic_path(dest) as tmp:
            tmp.write_bytes(bytes([65 + k]) * 12_000_000)
    elif kind == "nifti":  # 2 MB int16 volume through save_nifti (.nii.gz)
        vol = ((np.arange(1_000_000) + 7 * k) % 1000).astype(np.int16).reshape(100, 100, 100)
        save_nifti(dest, vol, np.eye(4))
    elif kind == "json":  # ~0.4 MB JSON through write_json_atomic
        write_json_atomic(dest, {"version": k, "values": list(range(k, 50_000 + k))})
    elif kind == "naive":  # NOT atomic: shows that the harness does catch partial files
        with open(dest, "wb") as f:
            for _ in range(40):
                f.write(bytes([65 + k]) * 500_000)
                f.flush()
                os.fsync(f.fileno())


def _spawn_writer(kind: str, dest: Path) -> int:
    """Fork a child that rewrites ``dest`` forever, alternating versions 1, 0, 1, ...

    fork (not a fresh interpreter) so the child starts writing at once: a new Python with numpy
    takes ~0.5 s here, which would make 20+ trials cost 15 s.
    """
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            k = 1
            while True:
                _write(kind, dest, k)
                k = 1 - k
        finally:
            os._exit(1)
    return pid


TRIALS = {"npy": 6, "path": 6, "nifti": 5, "json": 5}  # 22 kills in total


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _kill_trials(tmp_path: Path, kind: str, n: int, rng: random.Random, suffix: str) -> dict:
    """Run ``n`` kill trials; return counts. Asserts old-or-new after every kill."""
    refs = {}
    for k in (0, 1):
        ref = tmp_path / f"ref{k}{suffix}"
        _write(kind, ref, k)
        refs[_sha(ref)] = k
    assert len(refs) == 2, "the two versions must differ"
    dest = tmp_path / f"dest{suffix}"
    _write(kind, dest, 0)
    stats = {"trials": 0, "old": 0, "new": 0, "tmp_left": 0}
    for _ in range(n):
        pid = _spawn_writer(kind, dest)
        time.sleep(rng.uniform(0.005, 0.25))  # lands before, during or between writes
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        h = _sha(dest)
        assert h in refs, f"{kind}: destination is neither the old nor the new version after SIGKILL"
        stats["trials"] += 1
        stats["new" if refs[h] == 1 else "old"] += 1
        stats["tmp_left"] += bool(list(tmp_path.glob(f".tmp-dest{suffix}-*")))
        _write(kind, dest, 0)  # the next write works despite any leftover .tmp-* debris
        assert refs[_sha(dest)] == 0
    return stats


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="kill tests need os.fork (POSIX)")


@pytest.mark.slow  # 22 random kills, ~6 s; the *_mid_write_* tests below are the fast, deterministic ones
@needs_fork
@pytest.mark.parametrize("kind, suffix", [("npy", ".npy"), ("path", ".pt"), ("nifti", ".nii.gz"), ("json", ".json")])
def test_sigkill_during_write_leaves_old_or_new(tmp_path, kind, suffix):
    stats = _kill_trials(tmp_path, kind, TRIALS[kind], random.Random(hash(kind) % 1000), suffix)
    assert stats["trials"] == TRIALS[kind] == stats["old"] + stats["new"]
    print(f"\n{kind}: {stats}")


@pytest.mark.slow
@needs_fork
def test_the_kill_harness_detects_non_atomic_writes(tmp_path):
    # Same harness, plain open(): some kill must expose a partial file, else the harness proves nothing.
    with pytest.raises(AssertionError, match="neither the old nor the new"):
        for seed in range(6):
            _kill_trials(tmp_path, "naive", 2, random.Random(seed), ".bin")



# -- kills that provably land mid-write ----------------------------------------------------------------
# The random-delay harness above cannot tell whether a kill hit a write or the gap between two writes.
# Here the child pauses at a known point *inside* a write and tells the parent through a pipe; the parent
# checks that the new data is sitting in a temporary file at that moment, then kills the child.
def _pause_and_signal(w: int) -> None:
    os.write(w, b"!")
    time.sleep(600)  # the parent kills us here


def _paused_child(kind: str, dest: Path, where: str, w: int) -> None:
    """Child body: start writing version 1 of ``kind`` and pause ``where`` ("mid-data" | "before-rename")."""
    if where == "before-rename":  # all new bytes are in the temp file; the os.replace has not happened
        os.fsync = lambda fd: _pause_and_signal(w)  # only in this forked child
        _write(kind, dest, 1)
    elif kind == "npy":  # part of the data written through atomic_write
        with atomic_write(dest, "wb") as f:
            f.write(b"\x93NUMPY partial" * 50_000)
            f.flush()
            _pause_and_signal(w)
    else:  # "path": part of the data written to atomic_path's temp path
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"B" * 3_000_000)
            _pause_and_signal(w)


def _kill_paused_writer(tmp_path: Path, kind: str, dest: Path, where: str, sig: int) -> list[Path]:
    """Fork a writer, wait until it is paused inside the write, send ``sig``; return the temp files left."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            # Python's Ctrl-C handler, even when the test run was started with SIGINT ignored (a
            # background job of a non-interactive shell: `cmd &`), so that SIGINT raises in the child
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _paused_child(kind, dest, where, w)
        finally:
            os._exit(1)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 60)
        assert ready and os.read(r, 1) == b"!", f"{kind}: the writer never reached the pause point"
        during = list(tmp_path.glob(f".tmp-{dest.name}-*"))
        assert len(during) == 1 and during[0].stat().st_size > 0, "the kill would not land mid-write"
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # never leave a paused child behind
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(r)
    os.kill(pid, sig)
    _, status = os.waitpid(pid, 0)
    if sig == signal.SIGKILL:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return list(tmp_path.glob(f".tmp-{dest.name}-*"))


PAUSES = [("npy", ".npy", "mid-data"), ("path", ".pt", "mid-data"), ("npy", ".npy", "before-rename"),
          ("path", ".pt", "before-rename"), ("nifti", ".nii.gz", "before-rename"), ("json", ".json", "before-rename")]


@needs_fork
@pytest.mark.parametrize("kind, suffix, where", PAUSES)
@pytest.mark.parametrize("existed", [True, False], ids=["old-file", "no-file"])
def test_sigkill_mid_write_leaves_old_file_or_nothing(tmp_path, kind, suffix, where, existed):
    dest = tmp_path / f"dest{suffix}"
    ref = tmp_path / f"ref{suffix}"
    _write(kind, ref, 1)
    if existed:
        _write(kind, dest, 0)
        old = _sha(dest)
    debris = _kill_paused_writer(tmp_path, kind, dest, where, signal.SIGKILL)
    if existed:
        assert _sha(dest) == old, f"{kind}: killed {where}, the destination is not the old file"
    else:
        assert not dest.exists(), f"{kind}: killed {where}, a destination appeared"
    assert len(debris) == 1  # SIGKILL leaves the temp file (nothing can run); it is never the destination
    _write(kind, dest, 1)  # the next write works despite the debris and leaves no temp file of its own
    assert _sha(dest) == _sha(ref) and list(tmp_path.glob(f".tmp-{dest.name}-*")) == debris


@needs_fork
@pytest.mark.parametrize("kind, suffix, where", [PAUSES[0], PAUSES[1], PAUSES[5]])
def test_ctrl_c_mid_write_keeps_old_file_and_removes_the_temp_file(tmp_path, kind, suffix, where):
    """SIGINT (Ctrl-C) raises KeyboardInterrupt inside the write: the helpers clean up after themselves."""
    dest = tmp_path / f"dest{suffix}"
    _write(kind, dest, 0)
    old = _sha(dest)
    assert _kill_paused_writer(tmp_path, kind, dest, where, signal.SIGINT) == []
    assert _sha(dest) == old


@needs_fork
def test_the_paused_harness_detects_non_atomic_writes(tmp_path):
    """Paused at its first fsync, a plain ``open(dest, "wb")`` writer has already truncated the old file."""
    dest = tmp_path / "dest.bin"
    _write("naive", dest, 0)
    old = _sha(dest)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.fsync = lambda fd: _pause_and_signal(w)
            _write("naive", dest, 1)
        finally:
            os._exit(1)
    os.close(w)
    try:
        assert select.select([r], [], [], 60)[0] and os.read(r, 1) == b"!"
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert _sha(dest) != old and dest.stat().st_size == 500_000  # a partial file is visible

def test_exception_inside_atomic_write_keeps_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "ckpt.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(dest) as f:
        f.write(b"half of the new")
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.bin"]


def test_leftover_temp_files_do_not_break_writes(tmp_path):
    (tmp_path / ".tmp-x.json-abc123").write_text("{garbage")  # debris of an earlier kill
    (tmp_path / ".tmp-x.json-abc123.json").write_text("{garbage")
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_ensure_not_inside_refuses_source_folder(tmp_path):
    src = tmp_path / "Task03_Liver"
    (src / "imagesTr").mkdir(parents=True)
    for bad in (src, src / "preds", src / "imagesTr" / ".." / "x", tmp_path / "link" / "out"):
        if "link" in str(bad):
            (tmp_path / "link").symlink_to(src)
        with pytest.raises(CTSegError, match="refusing to write predictions inside the source folder"):
            ensure_not_inside(bad, src, what="predictions")
    ensure_not_inside(tmp_path / "out", src)
    ensure_not_inside(tmp_path / "Task03_Liver_preds", src)  # a sibling with a common prefix is fine


# -- regression tests for io.py fixes ------------------------------------------------------------------
def test_regression_written_files_get_umask_permissions_not_0600(tmp_path):
    # mkstemp creates 0600 files, so every "atomic" file used to be unreadable by group/others and
    # replacing a 0644 file silently turned it into 0600.
    old = os.umask(0o022)
    try:
        os.umask(old)
        expected = 0o666 & ~old
        write_text_atomic(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.nii.gz") as tmp:
            tmp.write_bytes(b"x")
        for name in ("a.txt", "b.nii.gz"):
            assert (tmp_path / name).stat().st_mode & 0o777 == expected, name
    finally:
        os.umask(old)


def test_regression_text_is_utf8_whatever_the_locale(tmp_path):
    # write_text_atomic promised UTF-8 but used the locale encoding: under LANG=C it raised
    # UnicodeEncodeError on "µ" or "≥".
    code = ("import sys; from ctseg_lib.io import write_text_atomic, write_json_atomic; "
            "write_text_atomic(sys.argv[1], 'spacing 0.7 \\u00b5m, Dice \\u2265 0.9'); "
            "write_json_atomic(sys.argv[2], {'\\u00b5': '\\u2265'})")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
           "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "ascii"}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.txt"), str(tmp_path / "t.json")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "t.txt").read_bytes() == "spacing 0.7 µm, Dice ≥ 0.9".encode()
    assert json.loads((tmp_path / "t.json").read_text(encoding="utf-8")) == {"µ": "≥"}


def test_numpy_roundtrip_through_atomic_write(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    with atomic_write(tmp_path / "a.npy") as f:
        np.save(f, arr)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), arr)


_LOCKER = """
import sys, time
from pathlib import Path
from ctseg_lib.io import file_lock
log, name, hold = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
with file_lock(log.with_suffix('.lock')):
    with open(log, 'a') as f:
        f.write(name + ' in\\n')
    time.sleep(hold)
    with open(log, 'a') as f:
        f.write(name + ' out\\n')
"""


@pytest.mark.slow  # the first process holds the lock for 1 s on purpose
def test_file_lock_serialises_two_processes(tmp_path):
    """The second process enters only after the first left (what parallel chapters rely on)."""
    log = tmp_path / "log.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen([sys.executable, "-c", _LOCKER, str(log), "A", "1.0"], env=env)
    deadline = time.time() + 60
    while not (log.exists() and "A in" in log.read_text()):  # A holds the lock now
        assert time.time() < deadline and first.poll() is None, "first process never took the lock"
        time.sleep(0.02)
    second = subprocess.run([sys.executable, "-c", _LOCKER, str(log), "B", "0"], env=env, timeout=60)
    assert first.wait(timeout=60) == 0 and second.returncode == 0
    assert log.read_text().split("\n")[:4] == ["A in", "A out", "B in", "B out"]


def test_file_lock_is_released_when_the_holder_dies(tmp_path):
    """A killed build must not leave a lock that blocks the next one."""
    log = tmp_path / "log.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", _LOCKER, str(log), "A", "600"], env=env)
    deadline = time.time() + 60
    while not (log.exists() and "A in" in log.read_text()):
        assert time.time() < deadline and holder.poll() is None, "holder never took the lock"
        time.sleep(0.02)
    holder.kill()
    holder.wait()
    second = subprocess.run([sys.executable, "-c", _LOCKER, str(log), "B", "0"], env=env, timeout=60)
    assert second.returncode == 0 and log.read_text().split("\n")[:3] == ["A in", "B in", "B out"]
