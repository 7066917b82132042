"""Multi-process training: torchrun with 2 CPU (gloo) processes, only rank 0 writes files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ctseg_lib.checkpoint import build_model, load_checkpoint
from ctseg_lib.config import TrainConfig
from tests.conftest import write_msd

ROOT = Path(__file__).resolve().parents[1]

# Rank 1 must not write anything: every ctseg write starts with tempfile.mkstemp (atomic writes),
# so in rank 1 we make that (and os.replace) raise.  If rank 1 tried to write, training would fail.
WORKER = textwrap.dedent("""
    import os, sys, tempfile
    if os.environ["RANK"] != "0":
        def forbidden(*a, **k):
            raise RuntimeError("rank %s tried to write a file" % os.environ["RANK"])
        tempfile.mkstemp = forbidden
        os.replace = forbidden
    from ctseg_lib.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_torchrun_two_gloo_processes(tmp_path):
    data = write_msd(tmp_path / "Task99_Toy", n=5)
    cfg = TrainConfig.from_dict({"model": {"base_channels": 4, "depth": 2}, "epochs": 1, "batch_size": 2,
                                 "iterations_per_epoch": 3, "data": {"slice_size": [16, 16]}})
    cfg.save(tmp_path / "tiny.yaml")
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "worker.py"), "train", "--config", str(tmp_path / "tiny.yaml"), "--data", str(data),
           "--out", str(out), "--device", "cpu", "--quiet"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["best.pt", "last.pt", "config.yaml", "split.json", "history.csv", "history.json"])
    ck = load_checkpoint(out / "last.pt")
    assert ck["meta"]["world_size"] == 2 and ck["epoch"] == 1
    ref = build_model(cfg, 3).state_dict()  # what single-process training saves
    assert ck["model"].keys() == ref.keys()
    assert all(ck["model"][k].shape == ref[k].shape for k in ref)
    assert not any(k.startswith("module.") for k in ck["model"])  # saved unwrapped, loadable without DDP
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
