"""The training configuration: one dataclass, loaded from YAML/JSON, validated key by key.

A config file is the *complete* recipe of a run (model, data, loss, optimiser, schedule,
augmentation, ...), and it is saved next to every checkpoint so a result can be reproduced.
Validation is strict on purpose: a typo such as ``learning_rate:`` instead of ``lr:`` would otherwise
be silently ignored and the run would use the default.  Every problem raises
:class:`~ctseg_lib.errors.CTSegError` naming the dotted key, e.g.
``config key 'optim.lr': expected float, got str``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CTSegError
from .io import write_text_atomic

#: Folder of the shipped configs (CPU-sized for phantoms; ``*_gpu`` for real MSD on a GPU).
PRESETS = Path(__file__).resolve().parent / "configs"


def list_presets() -> list[str]:
    """Names of the shipped configs, e.g. ``["liver_2d", "liver_25d", ...]``."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


@dataclass
class ModelConfig:
    """U-Net architecture (see :class:`ctseg_lib.models.unet.UNet`).

    ``context`` is the 2.5D neighbourhood k: the network sees slices ``z-k .. z+k`` as
    ``2k+1`` input channels (k=0 is plain 2D).  ``depth`` counts resolution levels, so the input
    is downsampled ``depth-1`` times and spatial sizes must be divisible by ``2**(depth-1)``.
    ``min_bottleneck`` is the smallest side (voxels) the deepest feature map may have: 4, nnU-Net's
    minimum (Isensee et al. 2021), unless an experiment needs deeper networks on small inputs (chapter
    8's depth sweep: depth 7 on 128 × 128 slices, a 2 × 2 bottleneck).
    ``dot_filter``: blob radii (mm) of a fixed 3D dot-enhancement filter whose response is appended to
    the 2.5D input as one more channel (:class:`ctseg_lib.models.dot_filter.DotFilter`; empty = off;
    needs ``context >= 1``); ``dot_voxel_mm`` the (row, column, slice) spacing it assumes, mm.
    """

    spatial_dims: int = 2
    context: int = 0
    base_channels: int = 16
    depth: int = 4
    norm: str = "batch"
    dropout: float = 0.0
    upsample: str = "transpose"
    deep_supervision: bool = False
    min_bottleneck: int = 4
    dot_filter: list[float] = field(default_factory=list)
    dot_voxel_mm: list[float] = field(default_factory=lambda: [2.0, 2.0, 3.0])

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1

    @property
    def size_divisor(self) -> int:
        return 2 ** (self.depth - 1)


@dataclass
class DataConfig:
    """Dataset, preprocessing and sampling.

    Preprocessing keys (``target_spacing`` in mm, ``normalization`` "window" | "nnunet"/"ct" | "minmax",
    ``window`` preset name or ``[level, width]`` in HU, ``slice_size`` in voxels) are passed to
    :class:`ctseg_lib.preprocessing.PreprocessParams`; ``preprocess`` holds any further keys
    for it verbatim.  ``fg_fraction`` is the share of training slices/patches forced to contain
    foreground (nnU-Net oversamples foreground to 33 %); ``negative_keep`` the share of slices
    without foreground kept per epoch; ``fg_sampling`` "slice" | "lesion" how the forced samples are
    drawn (:class:`ctseg_lib.datasets.SliceDataset`; 2D / 2.5D only).  ``hard_fraction``: share of
    the not-forced samples centred on the model's own false-positive lesions on the training cases,
    re-mined every ``hard_every`` epochs (:mod:`ctseg_lib.hard_negatives`; 0 = off; 2D / 2.5D only).
    ``paste_prob``: share of training samples that get one training lesion pasted in (copy-paste
    augmentation, :mod:`ctseg_lib.lesion_paste`; 0 = off; 2D / 2.5D only).  ``synth_prob``: share of
    training samples that get one synthetic lesion (:mod:`ctseg_lib.lesion_synth`; 0 = off; 2D / 2.5D only).
    ``patch_size``: 3D patch, or for a 2D model an in-plane ``[X, Y]`` patch cut from each (resized or native) slice.
    ``max_cases``: use only the first N labelled cases of dataset.json before splitting — a quick
    run on a subset of real MSD.  ``merge_labels``: train on one "foreground" class (every label
    > 0 merged, e.g. liver and tumour), the course project's pitfall kept to measure it (chapter 10).
    """

    task: str = "liver"
    target_spacing: list[float] | None = None
    normalization: str = "window"
    window: str | list[float] | None = "abdomen"
    slice_size: list[int] | None = field(default_factory=lambda: [128, 128])
    patch_size: list[int] | None = None
    preprocess: dict = field(default_factory=dict)
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    fg_fraction: float = 0.5
    negative_keep: float = 0.1
    fg_classes: list[int] | None = None
    fg_sampling: str = "slice"
    hard_fraction: float = 0.0
    hard_every: int = 5
    paste_prob: float = 0.0
    synth_prob: float = 0.0
    max_cases: int | None = None
    merge_labels: bool = False

    def preprocess_params(self):
        """The :class:`~ctseg_lib.preprocessing.PreprocessParams` these keys describe."""
        from .preprocessing import PreprocessParams

        keys = {"target_spacing": self.target_spacing, "normalization": self.normalization,
                "window": self.window, "slice_size": self.slice_size}
        return PreprocessParams.from_dict({**keys, **self.preprocess})


@dataclass
class LossConfig:
    """Loss name for :func:`ctseg_lib.losses.build_loss` plus its keyword arguments."""

    name: str = "dice_ce"
    kwargs: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """``adam``, ``adamw`` or ``sgd`` (Nesterov momentum, as in nnU-Net: lr 1e-2, momentum 0.99)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.99


@dataclass
class ScheduleConfig:
    """Learning-rate schedule per optimiser step: ``constant``, ``cosine`` or ``poly``
    (``(1 - t)**power``, nnU-Net uses 0.9), after a linear warm-up of ``warmup_epochs``."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    power: float = 0.9


@dataclass
class AugmentConfig:
    """Random augmentation applied on the (N, C, H, W[, D]) training tensors."""

    enabled: bool = True
    flip_prob: float = 0.5
    flip_axes: list[int] = field(default_factory=lambda: [0, 1])
    rotate_deg: float = 15.0
    scale_range: list[float] = field(default_factory=lambda: [0.85, 1.15])
    affine_prob: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise_std: float = 0.02
    intensity_prob: float = 0.3


@dataclass
class TrainConfig:
    """Everything that defines a training run.  ``iterations_per_epoch=None`` means one full pass
    over the training slices per epoch.  ``amp``: mixed-precision training -- float16 on CUDA, bfloat16
    on a CPU with native bfloat16 (``ctseg_lib.training.autocast_dtype``; ``CTSEG_CPU_BF16=0`` keeps
    the CPU in float32)."""

    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 10
    iterations_per_epoch: int | None = None
    batch_size: int = 16
    val_batch_size: int = 32
    amp: bool = True
    grad_clip: float | None = 12.0
    seed: int = 0
    ensemble: int = 1  # > 1: that many networks, seeds seed, seed+1, ..., softmax averaged (models.ensemble)
    val_every: int = 1
    num_workers: int = 0
    #: the recipe's recommended postprocessing (``ctseg_lib.postprocessing``: ``lcc``, ``lcc_fg``,
    #: ``restrict``, ``min_size:<mm³>``, ``lung_fields``), measured with it; ``ctseg predict`` applies it unless
    #: ``--postprocess`` says otherwise (``--postprocess none``: the raw prediction).
    postprocess: list[str] = field(default_factory=list)
    #: whether the recipe predicts with test-time mirroring (:func:`ctseg_lib.inference.softmax_tta`),
    #: measured with it; ``ctseg predict`` follows it unless ``--tta`` / ``--no-tta`` is given.
    tta: bool = False

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain nested dict (JSON/YAML-safe, also ``torch.load(weights_only=True)``-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str | Path | None = None) -> TrainConfig:
        """Build and validate a config; missing keys take their defaults."""
        cfg = _build(cls, d, "", source)
        validate(cfg, source)
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Load ``.yaml``/``.yml``/``.json``, or a shipped preset by name (``"liver_2d"``).

        A file may start from another one with ``base: <preset name or path>`` and list only what
        differs (nnU-Net's presets that extend presets): sections are merged key by key, the file's
        own values win.  The presets live in the package (``ctseg_lib/configs``, also reachable as
        ``configs/`` in a checkout), so they exist after ``pip install`` too — e.g. in Colab.
        """
        path = _resolve_config_path(path)
        return cls.from_dict(load_config_dict(path), source=path)

    def with_changes(self, changes: dict[str, Any]) -> TrainConfig:
        """A validated copy with dotted keys changed: ``cfg.with_changes({"model.context": 1})``.

        Experiments that differ from a baseline in exactly the keys listed are easy to read and
        to check; an unknown key raises :class:`CTSegError` naming it.
        """
        d = self.to_dict()
        for key, value in changes.items():
            *parents, leaf = key.split(".")
            node = d
            for p in parents:
                if not isinstance(node.get(p), dict):
                    raise CTSegError(f"config key {key!r}: {p!r} is not a section")
                node = node[p]
            if leaf not in node and not (parents and parents[-1] in ("preprocess", "kwargs")):
                raise CTSegError(f"config key {key!r} does not exist")
            node[leaf] = value
        return TrainConfig.from_dict(d)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (or JSON if the suffix is ``.json``), atomically."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        else:
            import yaml

            write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


# -- files and presets that extend presets -------------------------------------------------------
def _resolve_config_path(path: str | Path, relative_to: Path | None = None) -> Path:
    """A config file path, or the shipped preset called ``path`` (``"liver_2d"``)."""
    path = Path(path)
    if relative_to is not None and not path.is_absolute() and (relative_to / path).is_file():
        path = relative_to / path
    if not path.is_file() and path.parent == Path(".") and (PRESETS / f"{path.stem}.yaml").is_file():
        path = PRESETS / f"{path.stem}.yaml"
    if not path.is_file():
        raise CTSegError(f"config file not found (presets: {', '.join(list_presets())})", path)
    return path


def _read_mapping(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            d = json.loads(text)
        else:
            import yaml

            d = yaml.safe_load(text)  # safe_load: a config never constructs Python objects
    except Exception as e:  # yaml.YAMLError / JSONDecodeError
        raise CTSegError(f"cannot parse config ({type(e).__name__}: {e})", path) from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise CTSegError(f"config key '<top level>': expected a mapping, got {_tname(d)}", path)
    return d


def merge_configs(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied: nested sections merged key by key, other values replaced.

    ``loss.kwargs`` and ``data.preprocess`` are merged too; write ``kwargs: {}`` ... to keep the
    base's, or list every key you want.  Lists (sizes) are replaced whole.
    """
    out = dict(base)
    for k, v in changes.items():
        out[k] = merge_configs(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config_dict(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The config mapping of a file with its ``base:`` chain resolved (not yet validated)."""
    path = _resolve_config_path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path.resolve()))
        raise CTSegError(f"config key 'base': presets extend each other in a loop ({chain})", path)
    d = _read_mapping(path)
    base = d.pop("base", None)
    if base is None:
        return d
    if not isinstance(base, str):
        raise CTSegError(f"config key 'base': expected a preset name or file path, got {_tname(base)}", path)
    parent = load_config_dict(_resolve_config_path(base, relative_to=path.parent), (*_seen, path.resolve()))
    return merge_configs(parent, d)


# -- generic, type-hint driven validation --------------------------------------------------------
def _fail(key: str, msg: str, source: str | Path | None) -> CTSegError:
    return CTSegError(f"config key '{key}': {msg}", source)


def _tname(x: Any) -> str:
    return type(x).__name__


def _convert(value: Any, hint: Any, key: str, source: str | Path | None) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, source)
            except CTSegError as e:
                # A list value failing inside the list arm: its message names the bad item.
                if len(args) == 2 or (isinstance(value, list) and typing.get_origin(a) is list):
                    raise
                errors.append(e)
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise _fail(key, f"expected {names}, got {_tname(value)} {value!r}", source)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise _fail(key, f"expected a list, got {_tname(value)}", source)
        return [_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if hint is dict:
        if not isinstance(value, dict):
            raise _fail(key, f"expected a mapping, got {_tname(value)}", source)
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(key, f"expected bool, got {_tname(value)}", source)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, f"expected int, got {_tname(value)}", source)
        return value
    if hint is float:
        # PyYAML (YAML 1.1) reads ``1e-3`` as a *string*; it needs ``1.0e-3``.  We do not guess
        # numbers from text (that would also accept typos), we say what to write instead.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, f"expected float, got {_tname(value)}"
                        + (" (in YAML write 1.0e-3, not 1e-3)" if isinstance(value, str) else ""), source)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _fail(key, f"expected str, got {_tname(value)}", source)
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # pragma: no cover - a bug here


def _build(cls: type, d: Any, prefix: str, source: str | Path | None) -> Any:
    section = prefix.rstrip(".") or "<top level>"
    if not isinstance(d, dict):
        raise _fail(section, f"expected a mapping, got {_tname(d)}", source)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise _fail(prefix + str(unknown[0]), f"unknown key (allowed in '{section}': {sorted(names)})", source)
    kwargs = {k: _convert(v, hints[k], prefix + k, source) for k, v in d.items()}
    return cls(**kwargs)


_CHOICES = {
    "model.spatial_dims": (2, 3), "model.norm": ("batch", "instance"),
    "model.upsample": ("transpose", "interp"),
    "optim.name": ("adam", "adamw", "sgd"), "schedule.name": ("constant", "cosine", "poly"),
}


def _get(cfg: TrainConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: TrainConfig, source: str | Path | None = None) -> None:
    """Check value ranges and sizes that are impossible for the network."""
    for key, allowed in _CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise _fail(key, f"must be one of {list(allowed)}, got {_get(cfg, key)!r}", source)
    positive = ("epochs", "batch_size", "val_batch_size", "val_every", "model.base_channels", "model.depth",
                "model.min_bottleneck", "ensemble")
    for key in positive:
        if _get(cfg, key) < 1:
            raise _fail(key, f"must be >= 1, got {_get(cfg, key)}", source)
    for key in ("iterations_per_epoch", "data.max_cases"):
        if _get(cfg, key) is not None and _get(cfg, key) < 1:
            raise _fail(key, "must be >= 1 or null", source)
    if cfg.optim.lr <= 0:
        raise _fail("optim.lr", f"must be > 0, got {cfg.optim.lr}", source)
    if cfg.model.context < 0 or (cfg.model.spatial_dims == 3 and cfg.model.context):
        raise _fail("model.context", "must be >= 0 (and 0 for 3D models)", source)
    m = cfg.model
    if m.dot_filter and (m.spatial_dims != 2 or m.context < 1 or min(m.dot_filter) <= 0
                         or len(m.dot_voxel_mm) != 3 or min(m.dot_voxel_mm) <= 0):
        raise _fail("model.dot_filter", "needs a 2.5D model (spatial_dims 2, context >= 1), radii > 0 mm and "
                    "3 positive model.dot_voxel_mm", source)
    if cfg.num_workers < 0:
        raise _fail("num_workers", "must be >= 0", source)
    for key in ("model.dropout", "data.fg_fraction", "data.negative_keep", "data.hard_fraction", "data.paste_prob",
                "data.synth_prob", "augment.flip_prob", "augment.affine_prob", "augment.intensity_prob"):
        if not 0.0 <= _get(cfg, key) <= 1.0:
            raise _fail(key, f"must be in [0, 1], got {_get(cfg, key)}", source)
    d = cfg.data
    if d.fg_sampling not in ("slice", "lesion") or (d.fg_sampling == "lesion" and cfg.model.spatial_dims == 3):
        raise _fail("data.fg_sampling", f"must be 'slice' or 'lesion' (2D / 2.5D only), got {cfg.data.fg_sampling!r}",
                    source)
    if not isinstance(d.hard_every, int) or d.hard_every < 1:
        raise _fail("data.hard_every", f"must be an integer >= 1 (epochs between minings), got {d.hard_every!r}",
                    source)
    for key, what in (("data.hard_fraction", "hard-negative mining"), ("data.paste_prob", "lesion copy-paste"),
                      ("data.synth_prob", "lesion synthesis")):
        if _get(cfg, key) > 0 and cfg.model.spatial_dims == 3:  # SliceDataset features: no 3D PatchDataset twin
            raise _fail(key, f"{what} is for 2D / 2.5D models only (set 0 for 3D)", source)
    if not isinstance(d.merge_labels, bool):
        raise _fail("data.merge_labels", f"must be true or false, got {d.merge_labels!r}", source)
    if d.merge_labels and (d.fg_classes not in (None, [1]) or "restrict" in cfg.postprocess):
        raise _fail("data.merge_labels", "leaves one foreground class (1): data.fg_classes must be null or [1] "
                    "and postprocess cannot 'restrict'", source)
    if cfg.data.val_fraction < 0 or cfg.data.test_fraction < 0 or cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise _fail("data.val_fraction", "val_fraction + test_fraction must be in [0, 1)", source)
    if cfg.data.target_spacing is not None and (len(cfg.data.target_spacing) != 3
                                                or min(cfg.data.target_spacing) <= 0):
        raise _fail("data.target_spacing", "must be 3 positive numbers (mm) or null", source)
    # Sizes: the U-Net halves the resolution depth-1 times, so each side must be divisible by
    # 2**(depth-1) and the bottleneck must keep at least model.min_bottleneck voxels (4: nnU-Net's minimum).
    dims = cfg.model.spatial_dims
    # A 2D model trains on whole slices (slice_size, or native size when null) or, when
    # patch_size has 2 entries, on in-plane patches of them (nnU-Net's 2D configuration).
    key = "data.patch_size" if dims == 3 or cfg.data.patch_size else "data.slice_size"
    size = _get(cfg, key)
    if size is None:
        raise _fail(key, f"is required for a {dims}D model" + (" (or data.patch_size)" if dims == 2 else ""), source)
    if len(size) != dims:
        raise _fail(key, f"must have {dims} entries for a {dims}D model, got {size}", source)
    div, low = cfg.model.size_divisor, cfg.model.min_bottleneck
    for s in size:
        if s % div or s // div < low:
            raise _fail(key, f"size {s} is impossible for model.depth={cfg.model.depth}: each side must "
                        f"be a multiple of 2**(depth-1)={div} and at least {low * div} "
                        f"(model.min_bottleneck={low} voxels at the bottleneck)", source)
    try:
        cfg.data.preprocess_params()
    except CTSegError as e:
        raise _fail("data", str(e), source) from None
    _validate_loss(cfg, source)
    from .postprocessing import parse_steps

    try:
        parse_steps(cfg.postprocess)
    except ValueError as e:
        raise _fail("postprocess", str(e), source) from None


def _validate_loss(cfg: TrainConfig, source: str | Path | None) -> None:
    """The loss name exists and accepts ``loss.kwargs`` — checked when the config loads (by building
    the loss once, a cheap module), not as a raw ``TypeError`` after minutes of preprocessing."""
    from .losses import LOSSES

    if cfg.loss.name not in LOSSES:
        raise _fail("loss.name", f"unknown loss {cfg.loss.name!r}; choose from {sorted(LOSSES)}", source)
    try:
        LOSSES[cfg.loss.name](**cfg.loss.kwargs)
    except (TypeError, ValueError, CTSegError) as e:
        raise _fail("loss.kwargs", f"not valid for loss {cfg.loss.name!r}: {e}", source) from None
