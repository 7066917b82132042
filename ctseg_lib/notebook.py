"""Helpers every chapter's setup cell uses: device report, sizes, and the one data switch.

The book runs on synthetic phantoms by default (no download possible at build time).  Set the
environment variable ``CTSEG_DATA`` to a folder that holds the real MSD task folders
(``$CTSEG_DATA/Task03_Liver``, ``$CTSEG_DATA/Task06_Lung``) and the same chapters run on real CT;
:func:`get_dataset` is the only place that decides.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CTSegError
from .tasks import get_task

#: Where phantoms are generated for the book (ignored by git).
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "book" / "_data"


@dataclass
class Setup:
    """What a chapter needs to know about where it runs."""

    device: str  # "cuda", "mps" or "cpu"
    gpu: bool
    real_data: bool
    data_root: Path  # folder that holds the datasets (phantoms or CTSEG_DATA)

    def scale(self, cpu: int, gpu: int) -> int:
        """Pick a size: ``cpu`` on a CPU, ``gpu`` when a GPU is present (epochs, widths, ...)."""
        return gpu if self.gpu else cpu


def detect_device() -> str:
    """``"cuda"`` > ``"mps"`` > ``"cpu"``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def setup_chapter(title: str, cpu_minutes: float, gpu_minutes: float | None = None) -> Setup:
    """Print where the chapter runs and how long it will take; return a :class:`Setup`."""
    import torch

    device = detect_device()
    gpu = device != "cpu"
    env = os.environ.get("CTSEG_DATA")
    real = bool(env)
    root = Path(env) if env else DEFAULT_CACHE
    what = torch.cuda.get_device_name(0) if device == "cuda" else device.upper()
    minutes = gpu_minutes if (gpu and gpu_minutes is not None) else cpu_minutes
    print(f"{title}: running on {what} (torch {torch.__version__}, {torch.get_num_threads()} CPU threads)")
    print(f"data: {'real MSD from CTSEG_DATA=' + str(root) if real else 'synthetic CT phantoms'}; "
          f"expected run time ≈ {minutes:g} min")
    if not gpu:
        print("no GPU: sizes and epochs are CPU-sized (a GPU is 10–50× faster for training)")
    return Setup(device=device, gpu=gpu, real_data=real, data_root=root)


def get_dataset(task: str, cases: int = 12, test_cases: int = 2, seed: int = 0,
                root: str | Path | None = None, **synth_kwargs: object) -> Path:
    """Return an MSD-layout folder for ``task`` ("liver" or "lung").

    With ``CTSEG_DATA`` set, that is ``$CTSEG_DATA/Task03_Liver`` (or ``Task06_Lung``) and nothing
    is generated.  Otherwise phantoms are generated once into
    ``book/_data/<task>_<cases>_<test_cases>_<seed>_g<generator version>``
    and reused (a marker file is written last, so an interrupted generation is redone).
    """
    folder = get_task(task).msd_folder  # raises for an unknown task
    env = os.environ.get("CTSEG_DATA")
    if env and root is None:
        path = Path(env) / folder
        if not (path / "dataset.json").is_file():
            raise CTSegError(f"CTSEG_DATA is set but {folder}/dataset.json is missing "
                             f"(run: ctseg download --task {task} --out {env})", path)
        return path
    from .data.synthetic import GENERATOR_VERSION, write_dataset

    base = Path(root) if root is not None else DEFAULT_CACHE
    extra = "".join(f"_{k}{v}" for k, v in sorted(synth_kwargs.items()))
    # the generator version in the name: a newer generator never reuses phantoms of an older one
    path = base / f"{task}_{cases}_{test_cases}_{seed}_g{GENERATOR_VERSION}{extra}"
    marker = path / ".complete"
    if marker.exists():
        return path
    from .io import file_lock

    with file_lock(base / f".{path.name}.lock"):  # another chapter may be generating it right now
        if not marker.exists():
            t0 = time.perf_counter()
            write_dataset(task, path, cases=cases, seed=seed, test_cases=test_cases, overwrite=True,
                          **synth_kwargs)
            marker.write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return path


#: Generator seed of the liver chapters' fresh test phantoms: chapters 8, 10 and 11 test on the same scans.
LIVER_TEST_SEED = 808


def held_out_cases(ds, split: dict, task: str = "liver", seed: int = LIVER_TEST_SEED, cases: int = 8):
    """The scans a chapter tests on, as ``(MSDDataset, case ids)``: ``cases`` fresh phantoms of ``task``
    from generator ``seed`` (no run trains on them; :func:`get_dataset` generates them once), or, with
    ``CTSEG_DATA`` set, where real patients cannot be drawn afresh, the held-out ``split["test"]`` cases
    of the training dataset ``ds``."""
    if os.environ.get("CTSEG_DATA"):
        return ds, list(split["test"])
    from .data.msd import MSDDataset

    fresh = MSDDataset(get_dataset(task, cases=cases, test_cases=0, seed=seed))
    return fresh, list(fresh.case_ids)


@dataclass
class Run:
    """A finished training run as the chapters use it."""

    model: object  # torch.nn.Module, in eval mode, on the CPU
    config: object  # TrainConfig
    meta: dict  # labels, split, preprocessing (from the checkpoint)
    history: list[dict]
    out_dir: Path
    train_seconds: float
    epoch: int = 0  # the epoch whose weights ``model`` holds (1-based; 0 = unknown)


def pretrained_run(preset: str) -> Run:
    """The weights the repository ships for ``preset`` (:mod:`ctseg_lib.pretrained`) as a :class:`Run`.

    For a recipe whose training a book build cannot afford: the chapter evaluates the shipped network
    of one command-line run of the preset, checked to be today's recipe.  ``history`` is that run's
    (every epoch), ``train_seconds`` its training time (the sum of its epochs), ``out_dir`` the folder
    of the weights.
    """
    from .checkpoint import model_from_checkpoint
    from .pretrained import pretrained_checkpoint, training_seconds

    ckpt, path = pretrained_checkpoint(preset)
    model, config, meta = model_from_checkpoint(ckpt, path)
    history = list(ckpt.get("history", []))
    return Run(model, config, meta, history, path.parent, training_seconds(history), int(ckpt["epoch"]))


def train_cached(cfg: object, data_root: str | Path, name: str, quiet: bool = True,
                 device: str | None = None, checkpoint: str = "best") -> Run:
    """Train ``cfg`` on ``data_root`` once; later calls with the same config and data reuse the run.

    The run folder is ``book/_data/runs/<name>-<hash>``, the hash covering the whole config and
    the dataset path, so changing any hyper-parameter trains anew.  ``done.json`` is written last:
    an interrupted run is retrained, never half-reused.  (A cold build of the book — an empty
    ``book/_data`` — trains everything.)  ``checkpoint``: ``"best"`` (the epoch validation chose,
    ``best.pt``) or ``"last"`` (the final epoch, ``last.pt``); the same run serves both.
    """
    import hashlib
    import json

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .io import file_lock, write_json_atomic
    from .training import train, training_precision

    if checkpoint not in ("best", "last"):  # before any training: a typo must not cost a run
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    # the precision is part of the key: float32 and bfloat16 training give different networks
    precision = training_precision(cfg, device or detect_device())
    key = hashlib.sha256(json.dumps([cfg.to_dict(), str(Path(data_root).resolve()), precision],
                                    sort_keys=True, default=str).encode()).hexdigest()[:10]
    out = DEFAULT_CACHE / "runs" / f"{name}-{key}"
    done = out / "done.json"
    if not done.exists():
        # Chapters executed in parallel may ask for the same run: one trains, the other waits.
        with file_lock(out.parent / f".{out.name}.lock"):
            if not done.exists():
                t0 = time.perf_counter()
                # cases preprocessed once per parameter set and shared by all runs (CaseCache)
                train(cfg, data_root, out, quiet=quiet, device=device, cache_dir=DEFAULT_CACHE / "cache")
                write_json_atomic(done, {"train_seconds": round(time.perf_counter() - t0, 1)})
    info = json.loads(done.read_text())
    path = out / f"{checkpoint}.pt"
    ckpt = load_checkpoint(path)
    model, config, meta = model_from_checkpoint(ckpt, path)
    history = json.loads((out / "history.json").read_text())
    model.eval()
    return Run(model, config, meta, history, out, float(info["train_seconds"]), int(ckpt["epoch"]))
