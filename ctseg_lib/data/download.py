"""Downloading and safely unpacking a Medical Segmentation Decathlon task.

The MSD tars (Antonelli et al. 2022, http://medicaldecathlon.com) are mirrored by the AWS open-data
programme at the URLs MONAI's ``DecathlonDataset`` uses; the MD5 sums are the ones MONAI publishes
next to them.  Task03_Liver is ~28 GB, so the download must survive a dropped connection:

* bytes go to ``<name>.tar.part``; a rerun sends ``Range: bytes=<size>-`` (RFC 9110 §14) and
  appends.  A server that ignores Range answers ``200`` with the whole file: we restart from zero.
  ``416`` means our partial file is already as long as (or longer than) the file: we check it.
* the MD5 is computed while streaming; only a matching file is renamed ``.part`` → ``.tar``
  (atomic ``os.replace``), so a ``.tar`` on disk is always a verified one.  A mismatch deletes the
  ``.part`` and raises :class:`~ctseg_lib.errors.CTSegError`; nothing is extracted.

A tar is untrusted input: member names like ``../../.bashrc`` or ``/etc/cron.d/x``, links pointing
outside the target and device nodes are the classic attacks (CVE-2007-4559).  :func:`safe_extract`
refuses them explicitly *and* uses the ``data`` extraction filter of PEP 706 (Python ≥ 3.11.4).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import CTSegError
from ..tasks import get_task

_CHUNK = 1 << 20  # 1 MiB reads: large enough for throughput, small enough for a live progress bar


class _Interrupted(Exception):
    """The connection dropped mid-transfer; the ``.part`` file is consistent and resumable."""


def download_task(task: str, out: str | Path, url: str | None = None, md5: str | None = None,
                  keep_tar: bool = False, quiet: bool = False, retries: int = 3) -> Path:
    """Download, verify, extract and validate one MSD task; return the task folder.

    Args:
        task: ``"liver"`` (Task03_Liver) or ``"lung"`` (Task06_Lung).
        out: folder that receives ``Task03_Liver/`` (and the tar while it is needed).
        url: another mirror (default: the AWS open-data mirror).
        md5: expected MD5 hex digest (default: MONAI's published sum; ``"none"`` skips the check).
        keep_tar: keep the verified ``.tar`` after extraction.
        quiet: no progress bar.
        retries: automatic resumes after a dropped connection before giving up.

    Idempotent: an already extracted, valid task folder is returned without any network access.
    """
    from .msd import MSDDataset

    src = get_task(task)  # name, MSD folder, URL and MD5 (as published by MONAI's DecathlonDataset)
    out = Path(out)
    dest = out / src.msd_folder
    if dest.exists():
        MSDDataset(dest)  # raises a CTSegError naming dest/dataset.json if it is not a valid task
        return dest
    tar = download_file(url or src.url, out / f"{src.msd_folder}.tar", src.md5 if md5 is None else md5,
                        quiet=quiet, retries=retries)
    safe_extract(tar, dest, validate=MSDDataset)
    if not keep_tar:
        tar.unlink()
    return dest


def download_file(url: str, dest: str | Path, md5: str | None = None, quiet: bool = False,
                  retries: int = 3, timeout: float = 60.0, backoff_s: float = 2.0) -> Path:
    """Download ``url`` to ``dest`` with resume, MD5 check and an atomic final rename.

    ``md5=None`` or ``"none"`` disables the check.  An existing ``dest`` with the right MD5 is
    reused.  After ``retries`` failed resumes the ``.part`` file is kept and a :class:`CTSegError`
    tells the user to rerun the command, which continues where it stopped.
    """
    dest = Path(dest)
    want = _parse_md5(md5)
    if dest.exists():
        if want is None or _md5_file(dest) == want:
            return dest
        raise CTSegError(f"already exists but its MD5 is not {want}; delete it to download again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            digest = _fetch(url, part, quiet, timeout)
            break
        except _Interrupted as e:
            if attempt == retries:
                raise CTSegError(f"download interrupted ({e}); run the same command again to resume "
                                 f"from the partial file", part) from None
            time.sleep(backoff_s * attempt)
    if want is not None and digest != want:
        part.unlink()  # a corrupt file must never be extracted, nor resumed from
        raise CTSegError(f"MD5 mismatch: expected {want}, got {digest} (from {url}); the corrupt "
                         f"download was deleted", dest)
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, quiet: bool, timeout: float) -> str:
    """One HTTP attempt that appends to ``part``; returns the MD5 of the complete file."""
    from tqdm.auto import tqdm

    from ..progress import interactive

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CTSegError(f"only http:// and https:// URLs are supported, got {url!r}")
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "ctseg-download"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https only, checked below)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: .part is complete, or junk if longer
            total = _total_from_content_range(e.headers.get("Content-Range", ""))
            if total == offset:
                return _md5_file(part)
            part.unlink()
            raise _Interrupted(f"server refused to resume at byte {offset}; restarting") from None
        if e.code >= 500:  # a transient server error (503 Slow Down on S3): worth a retry
            raise _Interrupted(f"HTTP {e.code} {e.reason}") from None
        raise CTSegError(f"HTTP {e.code} {e.reason} for {url}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, socket.gaierror) or not isinstance(reason, OSError):
            raise CTSegError(f"cannot open {url}: {reason}") from None
        raise _Interrupted(f"{type(reason).__name__}: {reason}") from None  # refused, reset, timeout
    with resp:
        if resp.status == 206:
            if _start_from_content_range(resp.headers.get("Content-Range", "")) != offset:
                part.unlink()  # the server sent another range than the one asked for: start over
                raise _Interrupted("server answered a different byte range; restarting")
        elif offset:  # 200: the server ignored Range and sends everything from byte 0 again
            offset = 0
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None
        _check_disk_space(part.parent, (expected or 0) - offset)
        hasher = hashlib.md5(usedforsecurity=False)  # integrity check, not security (FIPS)
        if offset:
            _md5_file(part, hasher)
        got = offset
        # A terminal gets a redrawn bar; a log file (stderr not a tty) one line per 10 % (or GiB).
        tty = interactive()
        step = expected // 10 if expected else 1 << 30
        mark = got + step
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=quiet or not tty,
        ) as bar:
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    hasher.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
                    if not (quiet or tty) and got >= mark:
                        mark = got + step
                        of = f" of {expected / 2**20:,.0f} MiB" if expected else " MiB"
                        print(f"{part.name.removesuffix('.part')}: {got / 2**20:,.0f}{of}", file=sys.stderr,
                              flush=True)
            except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                raise _Interrupted(f"{type(e).__name__} after {got:,} bytes") from None
    # http.client returns b"" (no error) when the peer closes early: compare with Content-Length.
    if expected is not None and got < expected:
        raise _Interrupted(f"connection closed after {got:,} of {expected:,} bytes")
    return hasher.hexdigest()


def _parse_md5(md5: str | None) -> str | None:
    if md5 is None or md5.lower() == "none":
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise CTSegError(f"--md5 must be 32 hexadecimal digits, got {md5!r}")
    return md5.lower()


def _md5_file(path: Path, hasher: Any = None) -> str:
    h = hasher or hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _start_from_content_range(value: str) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    return int(m.group(1)) if m else None


def _total_from_content_range(value: str) -> int | None:
    m = re.match(r"bytes (?:\*|\d+-\d+)/(\d+)", value.strip())
    return int(m.group(1)) if m else None


def _check_disk_space(folder: Path, need: int) -> None:
    free = shutil.disk_usage(folder).free
    if need > free:
        raise CTSegError(f"not enough disk space: need {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free", folder)


# -- extraction ---------------------------------------------------------------------------------
def safe_extract(tar_path: str | Path, dest: str | Path, validate: Callable[[Path], object] | None = None) -> Path:
    """Extract ``tar_path`` into the new folder ``dest``, refusing anything that could escape it.

    If all members sit under one top-level folder (``Task03_Liver/...``) that folder *becomes*
    ``dest``; top-level macOS ``._*`` files are dropped.  Extraction happens in a temporary folder
    next to ``dest``; ``validate(tmp_folder)`` (e.g. :class:`~ctseg_lib.data.msd.MSDDataset`) runs
    there, and only then is it renamed to ``dest`` — an interrupted or refused extraction never
    leaves a half-filled ``dest``.

    Raises:
        CTSegError: ``dest`` exists; not a (complete) tar; a member with an absolute path, a ``..``
            component, a link leaving the archive, or a device/FIFO (the member is named).
    """
    tar_path, dest = Path(tar_path), Path(dest)
    if dest.exists():
        raise CTSegError("destination already exists; remove it or choose another folder", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        try:
            with tarfile.open(tar_path, "r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(m, tar_path)
                _check_disk_space(dest.parent, sum(m.size for m in members if m.isfile()))
                tf.extractall(tmp, members=members, filter="data")
        except tarfile.FilterError as e:  # the data filter caught something our checks missed
            raise CTSegError(f"unsafe member refused by the tar data filter: {e}", tar_path) from None
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise CTSegError(f"not a readable tar archive ({type(e).__name__}: {e})", tar_path) from None
        root = _single_top_folder(tmp)
        if validate is not None:
            try:
                validate(root)
            except CTSegError as e:  # re-raise naming the archive, not the soon-deleted temp folder
                msg = str(e).replace(str(root.resolve()), dest.name).replace(str(root), dest.name)
                raise CTSegError(f"extracted archive is not a valid dataset: {msg}", tar_path) from None
        os.rename(root, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _check_member(m: tarfile.TarInfo, tar_path: Path) -> None:
    name = m.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise CTSegError(f"member {name!r} has an absolute path", tar_path)
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise CTSegError(f"member {name!r} contains '..' (path traversal)", tar_path)
    if m.ischr() or m.isblk() or m.isfifo() or not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        raise CTSegError(f"member {name!r} is a device, FIFO or special file", tar_path)
    if m.issym() or m.islnk():
        # Symlink targets are relative to the link's folder; hardlink targets to the archive root.
        base = PurePosixPath(name).parent if m.issym() else PurePosixPath()
        target = m.linkname.replace("\\", "/")
        if target.startswith("/") or not _stays_inside(base / target):
            kind = "symlink" if m.issym() else "hardlink"
            raise CTSegError(f"member {name!r} is a {kind} to {m.linkname!r} outside the archive", tar_path)


def _stays_inside(p: PurePosixPath) -> bool:
    depth = 0
    for part in p.parts:
        depth += -1 if part == ".." else (0 if part in (".", "") else 1)
        if depth < 0:
            return False
    return True


def _single_top_folder(tmp: Path) -> Path:
    entries = [e for e in tmp.iterdir() if not e.name.startswith("._")]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return tmp

