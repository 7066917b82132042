"""The MSD downloader against a local HTTP server (no internet): resume, MD5, safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ctseg_lib.cli import main
from ctseg_lib.data.download import download_file, download_task, safe_extract
from ctseg_lib.data.msd import MSDDataset
from ctseg_lib.data.nifti import save_nifti
from ctseg_lib.errors import CTSegError
from ctseg_lib.tasks import TASKS

JUNK = b"\x00\x05\x16\x07Mac OS X        \x00\x02"


# -- a tiny MSD tar and a Range-capable HTTP server --------------------------------------------------
def make_msd_tar(tmp: Path, folder: str = "Task03_Liver") -> bytes:
    """2 tiny liver cases + dataset.json + macOS ``._*`` junk, tarred under ``folder/``."""
    root = tmp / "src" / folder
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    training = []
    for i in range(2):
        rng = np.random.default_rng(i)
        save_nifti(root / "imagesTr" / f"liver_{i}.nii.gz", rng.integers(-1000, 400, (8, 8, 4)).astype(np.int16), aff)
        lab = np.zeros((8, 8, 4), np.uint8)
        lab[2:5, 2:5, 1:3] = 1
        lab[3, 3, 2] = 2
        save_nifti(root / "labelsTr" / f"liver_{i}.nii.gz", lab, aff)
        training.append({"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"})
    (root / "imagesTr" / "._liver_0.nii.gz").write_bytes(JUNK)
    (root / "._dataset.json").write_bytes(JUNK)
    meta = {"name": "LiTS", "labels": {"0": "background", "1": "liver", "2": "cancer"},
            "modality": {"0": "CT"}, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(root, arcname=folder)
        info = tarfile.TarInfo(f"._{folder}")  # top-level resource fork, as in the real tar
        info.size = len(JUNK)
        tf.addfile(info, io.BytesIO(JUNK))
    return buf.getvalue()


class Server:
    """Serves ``data`` at ``/x.tar``; records Range headers and bytes sent.

    ``cut_after``: the first response is cut (connection closed) after that many body bytes.
    ``ignore_range``: always answer 200 with the full body, like some proxies do.
    """

    def __init__(self, data: bytes, cut_after: int | None = None, ignore_range: bool = False,
                 first_status: int | None = None):
        self.data, self.cut_after, self.ignore_range = data, cut_after, ignore_range
        self.first_status = first_status  # e.g. 503: answer the first request with this error
        self.ranges: list[str | None] = []
        self.sent: list[int] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                if self.path != "/x.tar":
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                srv.ranges.append(rng)
                if srv.first_status is not None:
                    code, srv.first_status = srv.first_status, None
                    self.send_error(code)
                    return
                start, total = 0, len(srv.data)
                if rng and not srv.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= total:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{total}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                else:
                    self.send_response(200)
                body = srv.data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if srv.cut_after is not None:
                    body, srv.cut_after = body[: srv.cut_after], None
                self.wfile.write(body)
                srv.sent.append(len(body))
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/x.tar"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tar_bytes(tmp_path_factory) -> bytes:
    return make_msd_tar(tmp_path_factory.mktemp("tar"))


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


# -- download + extraction ---------------------------------------------------------------------------
def test_defaults_are_the_monai_mirror():
    assert TASKS["liver"].url == "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task03_Liver.tar"
    assert TASKS["lung"].url.endswith("/Task06_Lung.tar") and TASKS["lung"].md5 == "8afd997733c7fc0432f71255ba4e52dc"
    assert TASKS["liver"].md5 == "a90ec6c4aa7f6a3d087205e23d4e6397"


def test_full_download_verify_extract_validate(tmp_path, tar_bytes):
    with Server(tar_bytes) as s:
        dest = download_task("liver", tmp_path / "data", url=s.url, md5=md5(tar_bytes), quiet=True)
    assert dest == tmp_path / "data" / "Task03_Liver"
    ds = MSDDataset(dest)
    assert ds.case_ids == ["liver_0", "liver_1"]
    assert (dest / "imagesTr" / "._liver_0.nii.gz").read_bytes() == JUNK  # junk present, tolerated
    img, lab = ds.load_case("liver_1")
    assert img.array.shape == (8, 8, 4) and int(lab.array.max()) == 2
    # tar deleted, no .part, no temp folders, top-level ._ junk dropped
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["Task03_Liver"]
    assert s.ranges == [None]


def test_second_run_is_a_no_op_and_keep_tar(tmp_path, tar_bytes):
    with Server(tar_bytes) as s:
        download_task("liver", tmp_path, url=s.url, md5=md5(tar_bytes), quiet=True, keep_tar=True)
        assert (tmp_path / "Task03_Liver.tar").read_bytes() == tar_bytes
        download_task("liver", tmp_path, url=s.url, md5=md5(tar_bytes), quiet=True)
    assert len(s.ranges) == 1  # already extracted: no second request


def test_interrupted_then_resume_fetches_only_the_rest(tmp_path, tar_bytes):
    n = 5000
    with Server(tar_bytes, cut_after=n) as s:
        with pytest.raises(CTSegError, match=r"interrupted.*5,000 of .*run the same command again"):
            download_file(s.url, tmp_path / "t.tar", md5(tar_bytes), quiet=True, retries=0)
        part = tmp_path / "t.tar.part"
        assert part.read_bytes() == tar_bytes[:n] and not (tmp_path / "t.tar").exists()
        out = download_file(s.url, tmp_path / "t.tar", md5(tar_bytes), quiet=True, retries=0)
    assert out.read_bytes() == tar_bytes and not part.exists()
    assert s.ranges == [None, f"bytes={n}-"]
    assert s.sent == [n, len(tar_bytes) - n]


def test_automatic_retry_resumes_within_one_call_with_progress_bar(tmp_path, tar_bytes, capsys):
    with Server(tar_bytes, cut_after=777) as s:
        download_file(s.url, tmp_path / "t.tar", md5(tar_bytes), quiet=False, retries=2, backoff_s=0)
    assert (tmp_path / "t.tar").read_bytes() == tar_bytes
    assert s.ranges == [None, "bytes=777-"]
    assert "t.tar" in capsys.readouterr().err  # tqdm bar (desc = file name) on stderr


def test_server_error_503_is_retried_404_is_not(tmp_path, tar_bytes):
    with Server(tar_bytes, first_status=503) as s:
        with pytest.raises(CTSegError, match=r"t.tar.part: download interrupted \(HTTP 503"):
            download_file(s.url, tmp_path / "t.tar", md5(tar_bytes), quiet=True, retries=0)
        s.first_status = 503
        download_file(s.url, tmp_path / "t.tar", md5(tar_bytes), quiet=True, retries=1, backoff_s=0)
        s.first_status = 404
        with pytest.raises(CTSegError, match="HTTP 404"):
            download_file(s.url, tmp_path / "u.tar", md5(tar_bytes), quiet=True, retries=3, backoff_s=0)
    assert (tmp_path / "t.tar").read_bytes() == tar_bytes
    assert len(s.ranges) == 4  # 503, 503, 200, 404 (no retry after a 404)


def test_existing_invalid_task_folder_is_reported_not_overwritten(tmp_path):
    (tmp_path / "Task06_Lung").mkdir()
    with pytest.raises(CTSegError, match=r"Task06_Lung/dataset.json: dataset.json is missing"):
        download_task("lung", tmp_path, url="http://127.0.0.1:9/never-contacted.tar")


def test_server_ignoring_range_restarts_from_zero(tmp_path, tar_bytes):
    (tmp_path / "t.tar.part").write_bytes(b"garbage-that-is-not-the-file")
    with Server(tar_bytes, ignore_range=True) as s:
        download_file(s.url, tmp_path / "t.tar", md5(tar_bytes), quiet=True)
    assert (tmp_path / "t.tar").read_bytes() == tar_bytes
    assert s.ranges == ["bytes=28-"] and s.sent == [len(tar_bytes)]


def test_416_complete_part_is_verified_and_too_long_part_restarts(tmp_path, tar_bytes):
    (tmp_path / "a.tar.part").write_bytes(tar_bytes)  # complete already: 416, then MD5 check only
    (tmp_path / "b.tar.part").write_bytes(tar_bytes + b"extra")  # longer than the file: restart
    with Server(tar_bytes) as s:
        download_file(s.url, tmp_path / "a.tar", md5(tar_bytes), quiet=True)
        download_file(s.url, tmp_path / "b.tar", md5(tar_bytes), quiet=True, backoff_s=0)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes() == tar_bytes
    assert s.ranges == [f"bytes={len(tar_bytes)}-", f"bytes={len(tar_bytes) + 5}-", None]


def test_wrong_md5_fails_clearly_and_extracts_nothing(tmp_path, tar_bytes):
    with Server(tar_bytes) as s, pytest.raises(CTSegError, match=r"Task03_Liver.tar: MD5 mismatch: expected 0{32}"):
        download_task("liver", tmp_path, url=s.url, md5="0" * 32, quiet=True)
    assert list(tmp_path.iterdir()) == []  # no tar, no .part, no extracted folder


def test_bad_md5_argument_and_http_errors(tmp_path, tar_bytes):
    with pytest.raises(CTSegError, match="32 hexadecimal"):
        download_file("http://127.0.0.1:9/x.tar", tmp_path / "t.tar", md5="abc")
    with pytest.raises(CTSegError, match="only http"):
        download_file("ftp://example.org/x.tar", tmp_path / "t.tar")
    with Server(tar_bytes) as s, pytest.raises(CTSegError, match="HTTP 404"):
        download_file(s.url.replace("x.tar", "missing.tar"), tmp_path / "t.tar")
    with pytest.raises(CTSegError, match="unknown task"):
        download_task("brain", tmp_path)


def test_existing_tar_with_wrong_md5_is_not_overwritten(tmp_path):
    (tmp_path / "t.tar").write_bytes(b"user file")
    with pytest.raises(CTSegError, match="already exists but its MD5"):
        download_file("http://127.0.0.1:9/x.tar", tmp_path / "t.tar", md5="0" * 32)
    assert (tmp_path / "t.tar").read_bytes() == b"user file"


def test_cli_success_and_one_line_error(tmp_path, tar_bytes, capsys):
    with Server(tar_bytes) as s:
        assert main(["download", "--task", "liver", "--out", str(tmp_path), "--url", s.url,
                     "--md5", md5(tar_bytes), "-q"]) == 0
        assert capsys.readouterr().out.strip() == str(tmp_path / "Task03_Liver")
        rc = main(["download", "--task", "lung", "--out", str(tmp_path / "o"), "--url", s.url, "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("ctseg download: error: ") and "MD5 mismatch" in err
    assert not (tmp_path / "o" / "Task06_Lung").exists()


def test_cli_subprocess_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ctseg_lib", "download", "--task", "lung", "--out", str(tmp_path),
                        "--url", "ftp://nowhere/x.tar"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "only http:// and https:// URLs" in r.stderr


# -- safe extraction ---------------------------------------------------------------------------------
def _tar_with(tmp: Path, *members: tarfile.TarInfo) -> Path:
    p = tmp / "evil.tar"
    with tarfile.open(p, "w") as tf:
        ok = tarfile.TarInfo("Task/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        for m in members:
            tf.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return p


def _info(name: str, type_=tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.size = type_, linkname, size
    return t


@pytest.mark.parametrize(
    "member, message",
    [
        (_info("../evil", size=1), r"'../evil' contains '\.\.'"),
        (_info("Task/../../evil", size=1), r"'Task/../../evil' contains '\.\.'"),
        (_info("/abs/evil", size=1), r"'/abs/evil' has an absolute path"),
        (_info("Task/passwd", tarfile.SYMTYPE, "/etc/passwd"), r"'Task/passwd' is a symlink to '/etc/passwd'"),
        (_info("Task/up", tarfile.SYMTYPE, "../../outside"), r"'Task/up' is a symlink"),
        (_info("Task/hl", tarfile.LNKTYPE, "/etc/passwd"), r"'Task/hl' is a hardlink"),
        (_info("Task/hl2", tarfile.LNKTYPE, "Task/../../x"), r"'Task/hl2' is a hardlink"),
        (_info("Task/null", tarfile.CHRTYPE), r"'Task/null' is a device"),
        (_info("Task/sda", tarfile.BLKTYPE), r"'Task/sda' is a device"),
        (_info("Task/fifo", tarfile.FIFOTYPE), r"'Task/fifo' is a device, FIFO"),
    ],
)
def test_malicious_members_are_refused(tmp_path, member, message):
    tar = _tar_with(tmp_path, member)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CTSegError, match=message) as e:
        safe_extract(tar, tmp_path / "out" / "Task")
    assert "evil.tar" in str(e.value)
    assert not (tmp_path / "out" / "Task").exists() and list((tmp_path / "out").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [*before, "out"]
    assert not (tmp_path.parent / "evil").exists() and not Path("/abs/evil").exists()


def test_inner_links_are_allowed_and_single_top_folder_becomes_dest(tmp_path):
    tar = _tar_with(tmp_path, _info("Task/link", tarfile.SYMTYPE, "ok.txt"),
                    _info("Task/hard", tarfile.LNKTYPE, "Task/ok.txt"))
    dest = safe_extract(tar, tmp_path / "out" / "MyTask")
    assert (dest / "link").read_bytes() == (dest / "hard").read_bytes() == b"ok"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["MyTask"]


def test_truncated_or_non_tar_and_existing_dest(tmp_path, tar_bytes):
    (tmp_path / "cut.tar").write_bytes(tar_bytes[: len(tar_bytes) // 2])
    with pytest.raises(CTSegError, match="cut.tar: not a readable tar"):
        safe_extract(tmp_path / "cut.tar", tmp_path / "out" / "T")
    (tmp_path / "no.tar").write_bytes(b"hello" * 100)
    with pytest.raises(CTSegError, match="no.tar: not a readable tar"):
        safe_extract(tmp_path / "no.tar", tmp_path / "out" / "T")
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "out" / "T").mkdir()
    with pytest.raises(CTSegError, match="already exists"):
        safe_extract(tmp_path / "no.tar", tmp_path / "out" / "T")


def test_invalid_dataset_in_tar_is_not_moved_into_place(tmp_path):
    p = tmp_path / "x.tar"
    with tarfile.open(p, "w") as tf:
        tf.addfile(_info("Task03_Liver/dataset.json", size=1), io.BytesIO(b"{"))
    with pytest.raises(CTSegError, match=r"x.tar: extracted archive is not a valid dataset: .*invalid JSON"):
        safe_extract(p, tmp_path / "out" / "Task03_Liver", validate=MSDDataset)
    assert list((tmp_path / "out").iterdir()) == []
