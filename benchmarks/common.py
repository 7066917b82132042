"""Timing helpers shared by the benchmarks: alternation, medians, ratios, memory, machine info.

Method (the performance chapter explains it):

* ctseg and MONAI run **in the same process on identical inputs**, interleaved A B A B ... (the
  order is rotated every round), so slow drifts of a shared machine (other jobs, turbo, thermal)
  hit both sides equally instead of whichever ran second.
* Every measurement is repeated and the **median** is reported: robust to the odd run that was
  pre-empted by another process.
* The headline number is the **ratio** ``MONAI time / ctseg time`` (≥ 1 means ctseg is at least as
  fast).  Absolute seconds depend on the machine and its load; the ratio of two things measured
  side by side transfers much better between machines.
* Outputs are compared too (:func:`check`): a faster implementation that computes something else
  is not faster.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# ctseg against MONAI is a comparison of algorithms in float32: MONAI's networks run in float32, so
# ctseg's CPU bfloat16 inference (ctseg_lib.inference.cpu_bf16) is off here unless asked for;
# benchmarks/bench_bf16.py measures bfloat16 itself.
os.environ.setdefault("CTSEG_CPU_BF16", "0")


class AgreementError(AssertionError):
    """ctseg and MONAI outputs differ by more than the stated tolerance."""


def check(name: str, value: float, tol: float) -> float:
    """Raise :class:`AgreementError` unless ``|value| <= tol`` (``value`` is a difference)."""
    if not abs(value) <= tol:  # also catches NaN
        raise AgreementError(f"{name}: |difference| = {abs(value):.3g} exceeds the tolerance {tol:.3g}")
    return float(value)


def alternate(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every function ``warmup`` times (untimed) then ``repeats`` rounds of A B, B A, A B ...

    Returns ``{name: [seconds per run]}`` (wall clock, ``time.perf_counter``).
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:  # Linux: pages of resident memory
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_delta(fn: Callable[[], Any], interval: float = 0.005) -> tuple[Any, int]:
    """Run ``fn`` and return ``(result, peak RSS increase in bytes)`` sampled every ``interval`` s.

    ``tracemalloc`` does not see torch's allocator, and ``getrusage`` only gives the process-wide
    peak (monotonic), so a sampling thread is the simple way to attribute a peak to one call.
    Memory freed by an earlier call but kept by the allocator can hide part of the increase, so
    treat it as an estimate (good to ~10 %).
    """
    base = peak = _rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        done.set()
        t.join()
    return out, max(peak, _rss_bytes()) - base


def matmul_ceiling(n: int = 2048, repeats: int = 5) -> float:
    """Median fp32 ``torch.mm`` throughput (GFLOP/s) of two ``n×n`` matrices: the practical peak.

    A convolution network cannot beat a large GEMM on the same cores, so achieved / ceiling says
    how much of the machine a training step uses.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / median(ts) / 1e9


def choose_threads(threads: int | None = None) -> int:
    """Set and return torch's intra-op thread count.

    ``None``: 1 thread when the machine is oversubscribed (1-minute load average ≥ number of cores),
    else torch's default.  On a shared 2-core machine running other jobs, OpenMP threads that wait
    for each other at every operator made a small training step 6-10× *slower* with 2 threads than
    with 1 (measured: 0.16 s vs 1-2 s), and ``torch.stack`` of a batch 25× slower.
    """
    if threads is None:
        cores = os.cpu_count() or 1
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = 1 if load >= cores else torch.get_num_threads()
    torch.set_num_threads(int(threads))
    return int(threads)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import monai
    import numpy

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_1min": round(load, 2), "torch": torch.__version__, "monai": monai.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


@dataclass
class Result:
    """One row of the benchmark table."""

    name: str
    ctseg_s: float  # median seconds (or per-unit time, see ``unit``)
    monai_s: float
    agreement: str  # e.g. "max |Δ| = 3e-07"
    unit: str = "s"
    size: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """MONAI time / ctseg time (≥ 1: ctseg at least as fast)."""
        return self.monai_s / self.ctseg_s if self.ctseg_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), ratio=self.ratio)


def from_times(name: str, times: dict[str, list[float]], agreement: str, ctseg: str = "ctseg",
               monai: str = "monai", size: str = "", **extra: Any) -> Result:
    """A :class:`Result` from :func:`alternate` output (keeps every run in ``extra['runs']``)."""
    runs = {k: [round(v, 5) for v in vs] for k, vs in times.items()}
    return Result(name, median(times[ctseg]), median(times[monai]), agreement, size=size,
                  extra=dict(extra, runs=runs))


def markdown_table(results: list[Result]) -> str:
    """One markdown table: benchmark, size, ctseg, MONAI, ratio, agreement."""
    lines = ["| benchmark | size | ctseg (s) | MONAI (s) | ratio MONAI/ctseg | agreement |",
             "|---|---|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.size} | {r.ctseg_s:.4g} | {r.monai_s:.4g} | {r.ratio:.2f} | {r.agreement} |")
    return "\n".join(lines)
