"""``ctseg download``: fetch, verify and unpack an MSD task (Task03_Liver or Task06_Lung).

Example::

    ctseg download --task lung --out data/          # -> data/Task06_Lung/
    ctseg download --task liver --out data/ --keep-tar

Rerunning after an interruption resumes the partial ``.tar.part`` file (HTTP Range request).
"""

from __future__ import annotations

import argparse

from ..tasks import TASKS, task_names

HELP = "download, MD5-check and safely extract an MSD task (liver or lung)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=task_names(),
                   help=", ".join(f"{t.name} = {t.msd_folder} (~{t.size_gb:g} GB)" for t in TASKS.values()))
    p.add_argument("--out", required=True, metavar="DIR", help="folder that receives Task0X_Name/")
    p.add_argument("--url", default=None, help="another mirror of the same tar (http/https)")
    p.add_argument("--md5", default=None,
                   help="expected MD5 (default: the sum MONAI publishes for the task; 'none' skips the check)")
    p.add_argument("--keep-tar", action="store_true", help="keep the verified .tar after extraction")
    p.add_argument("--retries", type=int, default=3, help="automatic resumes after a dropped connection")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.download import download_task

    dest = download_task(args.task, args.out, url=args.url, md5=args.md5, keep_tar=args.keep_tar,
                         quiet=args.quiet, retries=max(0, args.retries))
    print(dest)
    return 0
