"""Smoke tests of benchmarks/: the helpers, the agreement checks, and each benchmark on tiny sizes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("monai")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
from common import AgreementError, Result, alternate, check, markdown_table  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread (as the benchmarks choose on a busy machine), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_check_accepts_within_tolerance_and_rejects_outside_and_nan():
    assert check("x", 5e-5, 1e-4) == 5e-5
    assert check("x", -1e-4, 1e-4) == -1e-4
    with pytest.raises(AgreementError, match="x: .*exceeds"):
        check("x", 2e-4, 1e-4)
    with pytest.raises(AgreementError):
        check("x", float("nan"), 1.0)


def test_alternate_interleaves_and_counts_runs():
    calls = []
    times = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then AB, BA, AB
    assert [len(v) for v in times.values()] == [3, 3]


def test_ratio_and_table():
    r = Result("x", ctseg_s=2.0, monai_s=3.0, agreement="ok", size="tiny")
    assert r.ratio == 1.5 and r.to_dict()["ratio"] == 1.5
    table = markdown_table([r])
    assert table.splitlines()[2] == "| x | tiny | 2 | 3 | 1.50 | ok |"


def test_peak_rss_sees_an_allocation():
    import numpy as np

    _, delta = common.peak_rss_delta(lambda: np.ones(40 * 2**20 // 8).sum())  # 40 MiB touched
    assert delta > 20 * 2**20


@pytest.mark.slow  # ~3 s: builds and steps four U-Nets
def test_train_tiny(monkeypatch):
    import bench_train

    monkeypatch.setattr(bench_train, "sizes", lambda q: {"batch": 2, "side": 32, "base": 4, "depth": 5,
                                                         "repeats": 1})
    monkeypatch.setattr(bench_train, "matmul_ceiling", lambda n: 1.0)
    rows = bench_train.run(quick=True)
    assert [r.name for r in rows] == ["train step 2D vs monai_basic", "train step 2D vs monai_unet",
                                      "train step 2.5D vs monai_basic"]
    e = rows[0].extra
    assert set(e["gflop_per_step"]) == {"ctseg", "monai_basic", "monai_unet", "ctseg_cl"}
    # BasicUNet keeps 2·base channels in its last up-sampling: a few more parameters than ctseg.
    assert 0 < e["params"]["monai_basic"] - e["params"]["ctseg"] < 0.02 * e["params"]["ctseg"]
    assert all(r.ctseg_s > 0 and r.monai_s > 0 for r in rows)


def test_sliding_window_tiny_agrees_and_detects_a_difference(monkeypatch):
    import bench_sliding_window as bsw

    tiny = {"shape": (32, 32, 24), "roi": (16, 16, 16), "base": 2, "depth": 2, "sw_batch": 4, "repeats": 1}
    monkeypatch.setattr(bsw, "sizes", lambda q: tiny)
    (row,) = bsw.run(quick=True)
    assert row.extra["max_abs_diff_same_map"] <= 1e-4
    assert row.extra["max_abs_diff_monai_map"] > 1e-4  # MONAI's clamped map really differs
    # A wrong weighting in ctseg must trip the agreement check.
    import ctseg_lib.inference as inf

    real = inf.sliding_window_inference
    monkeypatch.setattr(inf, "sliding_window_inference", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(AgreementError, match="sliding window"):
        bsw.run(quick=True)


def test_metrics_tiny_agree_and_detect_a_difference(monkeypatch):
    import bench_metrics

    monkeypatch.setattr(bench_metrics, "sizes", lambda q: {"shape": (40, 40, 16), "repeats": 1})
    rows = bench_metrics.run(quick=True)
    assert [r.name for r in rows] == ["metric Dice", "metric HD95", "metric NSD@2mm"]
    assert abs(rows[0].extra["ctseg_value"] - rows[0].extra["monai_value"]) <= 1e-6
    import ctseg_lib.metrics as m

    monkeypatch.setattr(m, "dice", lambda p, g: 0.5)
    with pytest.raises(AgreementError, match="Dice"):
        bench_metrics.run(quick=True)


def test_data_tiny(monkeypatch, tmp_path):
    import bench_data

    monkeypatch.setattr(bench_data, "sizes", lambda q: {"shape": (48, 40, 12), "repeats": 1, "batches": 1})
    rows = bench_data.run(quick=True, workdir=tmp_path)
    assert rows[0].ratio > 0 and "mean |Δ|" in rows[0].agreement
    assert rows[1].extra["slices_per_s"] > 0
    assert (tmp_path / "Task99_Bench_48x40x12" / "dataset.json").is_file()


def test_book_times(tmp_path):
    import bench_book

    assert bench_book.read_times(tmp_path / "missing.json") is None
    (tmp_path / "t.json").write_text(json.dumps({"build_cold_s": 800}))
    assert bench_book.read_times(tmp_path / "t.json") == {"build_cold_s": 800}


def test_run_writes_json_and_prints_one_table(monkeypatch, tmp_path, capsys):
    import run

    fake = Result("fake", 1.0, 2.0, "ok", size="s")
    monkeypatch.setattr(run, "BENCHMARKS", {"fake": lambda quick: [fake]})
    assert run.main(["--quick", "--threads", "1", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("| benchmark |") == 1 and "| fake | s | 1 | 2 | 2.00 | ok |" in out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"][0]["ratio"] == 2.0 and saved["info"]["quick"] is True


def test_layout_tiny_agrees():
    import bench_layout

    r = bench_layout.run(threads=1, repeats=1, shape=(32, 24, 4))
    assert r["max_abs_diff"] <= 1e-4 and r["nchw_s"] > 0 and r["nhwc_s"] > 0


def test_refusal_benchmark_refuses_every_file():
    import bench_refusal

    times = bench_refusal.run(repeats=1)
    assert set(times) == {"huge1.nii", "huge1.nii.gz", "huge2.nii.gz"} and all(t > 0 for t in times.values())


def test_bench_bf16_training_steps_both_precisions_and_restores_the_switch(monkeypatch):
    import os

    import bench_bf16

    monkeypatch.setenv("CTSEG_CPU_BF16", "0")
    seen = []
    real = bench_bf16.training_step

    def spy(run, x, y):
        from ctseg_lib.training import autocast_dtype

        seen.append(autocast_dtype(run.cfg, run.device))
        return real(run, x, y)

    monkeypatch.setattr(bench_bf16, "training_step", spy)
    r = bench_bf16.run_train(1, repeats=1, steps=1, batch=2, side=16)
    assert {"fp32_step_s", "bf16_step_s", "speedup", "loss_fp32", "loss_bf16"} <= r.keys()
    assert r["speedup"] > 0 and all(map(lambda v: v == v, (r["loss_fp32"], r["loss_bf16"])))
    import torch

    assert set(seen) == {None, torch.bfloat16}, "both precisions were timed"
    assert os.environ["CTSEG_CPU_BF16"] == "0"
