"""Trained weights that the repository ships for a preset (``samples/models/<preset>.pt``).

Some presets train for longer than a book build can afford: ``lung_25d`` (the library's lung recipe)
needs about 14 minutes of one CPU core, ``liver_real`` (the liver preset for real CT) about 6,
``lung_25d_book`` (chapter 9's recipe at the book's budget) about 5.  So that a chapter can show what
such a recipe does, on test scans generated at build time or on the real samples, the repository
carries one training run of it: a checkpoint made by ``ctseg train --config <preset>`` on the phantoms
of one ``ctseg synth`` command and stripped to what inference needs (weights, config, preprocessing
meta, the training history) by ``tools/ship_weights.py``, which also writes
``samples/models/<preset>.json`` (the commands, the SHA-256 of the file).  Phantom-trained only;
not for clinical use.  Like the real CT samples, the weights are *not* in the pip package:
:func:`weights_dir` finds them in the repository checkout.

One rule keeps shipped weights honest: they must have been trained with exactly the recipe the preset
file describes *today*.  :func:`load_pretrained` compares the checkpoint's config with the resolved
preset and refuses weights whose recipe differs (a preset edited after the weights were made), naming
the keys, instead of presenting an old recipe's network under the new recipe's name.

Example::

    from ctseg_lib.pretrained import load_pretrained
    model, cfg, meta = load_pretrained("lung_25d")      # eval() mode, on the CPU
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import TrainConfig
from .data.samples import checkout_candidates, find_checkout_folder
from .errors import CTSegError

#: Environment variable that overrides where shipped weights are looked for.
ENV_VAR = "CTSEG_WEIGHTS"


def weights_dir() -> Path:
    """The folder with the shipped weights: ``$CTSEG_WEIGHTS`` when set, else ``samples/models`` of the
    repository checkout this package was imported from, or of the current directory or a parent.

    Raises:
        CTSegError: no such folder (a pip-installed package ships no weights).
    """
    return find_checkout_folder(ENV_VAR, checkout_candidates("samples/models"), "shipped weights")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_differences(config: dict, preset: str) -> list[str]:
    """The resolved config keys in which ``config`` (a checkpoint's) differs from ``preset`` today,
    as ``"key: checkpoint -> preset"`` lines; ``name`` is not compared.  Empty = the same recipe."""
    a = _flat(TrainConfig.from_dict(config).to_dict())
    b = _flat(TrainConfig.from_file(preset).to_dict())
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k != "name" and a.get(k) != b.get(k)]


def training_seconds(history: list[dict]) -> float:
    """A run's training time: the sum of its epochs' ``time`` (s), as ``history.json`` records them."""
    return float(sum(float(r.get("time", 0.0)) for r in history))


def pretrained_path(preset: str) -> Path:
    """``<weights_dir>/<preset>.pt``.

    Raises:
        CTSegError: no weights are shipped for ``preset``.
    """
    path = weights_dir() / f"{preset}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.pt"))
        raise CTSegError(f"no shipped weights for preset {preset!r} (shipped: {', '.join(have) or 'none'})", path)
    return path


def provenance(preset: str) -> dict:
    """The ``<preset>.json`` written beside the weights by ``tools/ship_weights.py``: the training
    command, data seed, training seconds, source checkpoint and the SHA-256 of the ``.pt`` file."""
    path = pretrained_path(preset).with_suffix(".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CTSegError(f"unreadable provenance file ({type(e).__name__})", path) from None


def load_pretrained(preset: str, device: str | torch.device = "cpu"):
    """The shipped network for ``preset``, ready for :func:`~ctseg_lib.inference.predict_case`.

    Returns:
        ``(model, config, meta)`` as :func:`~ctseg_lib.checkpoint.load_model`: the model in ``eval()``
        mode, its :class:`~ctseg_lib.config.TrainConfig` (whose ``tta`` and ``postprocess`` are the
        preset's) and the meta dict (labels, preprocessing, training split).

    Raises:
        CTSegError: no weights for ``preset``, an unreadable file, or weights trained with a recipe
            that differs from the preset file (the differing keys are named).
    """
    ckpt, path = pretrained_checkpoint(preset)
    return model_from_checkpoint(ckpt, path, device)


def pretrained_checkpoint(preset: str) -> tuple[dict, Path]:
    """The shipped checkpoint of ``preset``, read once and checked, and its path.

    The dict has the keys of a training checkpoint (``model``, ``config``, ``meta``, ``epoch`` …);
    ``history`` is the whole training run's, one row per epoch, also the epochs after the saved one
    when validation chose an earlier epoch (``tools/ship_weights.py``).

    Raises:
        CTSegError: as :func:`load_pretrained`.
    """
    path = pretrained_path(preset)
    ckpt = load_checkpoint(path)
    diff = recipe_differences(ckpt["config"], preset)
    if diff:
        raise CTSegError(f"shipped weights were trained with another recipe than configs/{preset}.yaml "
                         f"({'; '.join(diff)}); retrain and re-ship them (tools/ship_weights.py)", path)
    return ckpt, path
