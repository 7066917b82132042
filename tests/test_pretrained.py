"""Shipped weights (ctseg_lib.pretrained, tools/ship_weights.py): found, checked against the preset, honest."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ctseg_lib.checkpoint import load_checkpoint
from ctseg_lib.config import TrainConfig
from ctseg_lib.errors import CTSegError
from ctseg_lib.pretrained import (
    load_pretrained,
    pretrained_path,
    provenance,
    recipe_differences,
    weights_dir,
)

ROOT = Path(__file__).resolve().parents[1]


def _ship_module():
    spec = importlib.util.spec_from_file_location("ship_weights", ROOT / "tools" / "ship_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_weights_dir_is_the_repository_folder(monkeypatch):
    monkeypatch.delenv("CTSEG_WEIGHTS", raising=False)
    assert weights_dir() == ROOT / "samples" / "models"


def test_shipped_lung_25d_is_the_preset_and_runs():
    """The lung_25d weights load as the preset (its tta and postprocessing) and map a 5-slice 2.5D input,
    plus the dot filter's channel made inside the model, to 2 class scores per pixel."""
    model, cfg, meta = load_pretrained("lung_25d")
    assert cfg.name == "lung_25d"
    assert recipe_differences(cfg.to_dict(), "lung_25d") == []
    assert cfg.postprocess == TrainConfig.from_file("lung_25d").postprocess and cfg.tta
    assert meta["num_classes"] == 2 and not model.training
    x = torch.zeros(1, 2 * cfg.model.context + 1, 64, 48)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (1, 2, 64, 48)


def test_provenance_matches_the_file():
    """The JSON's SHA-256 is the .pt file's: a re-shipped file without its record fails here."""
    info = provenance("lung_25d")
    path = pretrained_path("lung_25d")
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["bytes"] == path.stat().st_size and info["preset"] == "lung_25d"
    assert info["epochs"] == TrainConfig.from_file("lung_25d").epochs
    assert "--cases 20" in info["data_command"]


def test_unknown_preset_names_what_is_shipped():
    with pytest.raises(CTSegError, match="no shipped weights for preset 'liver_2d'.*lung_25d"):
        pretrained_path("liver_2d")


def _full_checkpoint(tmp_path: Path, **config_changes) -> Path:
    """A training-style checkpoint (optimizer state included) of the shipped weights, config changed."""
    ck = load_checkpoint(pretrained_path("lung_25d"))
    cfg = TrainConfig.from_dict(ck["config"]).with_changes({"name": "my_run", **config_changes}).to_dict()
    full = {**ck, "config": cfg, "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": []}}
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    torch.save(full, path)
    return path


def test_recipe_differences_names_the_changed_key(tmp_path):
    ck = load_checkpoint(_full_checkpoint(tmp_path, epochs=40))
    assert recipe_differences(ck["config"], "lung_25d") == ["epochs: 40 -> 120"]


def test_load_pretrained_refuses_weights_of_another_recipe(tmp_path, monkeypatch):
    """Weights trained before the preset was edited are refused, with the key named."""
    ship = _ship_module()
    src = _full_checkpoint(tmp_path)
    out = tmp_path / "models"
    ship.ship(src, "lung_25d", "ctseg synth --task lung --cases 20 --seed 1", out)
    ck = load_checkpoint(out / "lung_25d.pt")
    ck["config"]["model"]["dot_filter"] = []  # as if configs/lung_25d.yaml had gained the filter later
    torch.save(ck, out / "lung_25d.pt")
    monkeypatch.setenv("CTSEG_WEIGHTS", str(out))
    with pytest.raises(CTSegError, match=r"another recipe.*model\.dot_filter: \[\] -> \[4\.0, 6\.0\]"):
        load_pretrained("lung_25d")


def test_ship_strips_training_state_and_keeps_the_weights(tmp_path):
    ship = _ship_module()
    src = _full_checkpoint(tmp_path)
    pt, js = ship.ship(src, "lung_25d", "ctseg synth --task lung --cases 20 --seed 1", tmp_path / "models")
    slim, full = load_checkpoint(pt), load_checkpoint(src)
    assert slim["optimizer"] is None and slim["rng"] is None and slim["config"]["name"] == "lung_25d"
    assert slim["model"].keys() == full["model"].keys()
    assert all(torch.equal(slim["model"][k], full["model"][k]) for k in full["model"])
    info = json.loads(js.read_text())
    assert info["trained_as"] == "my_run" and info["sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest()
    assert info["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_ship_refuses_a_checkpoint_of_another_recipe(tmp_path):
    ship = _ship_module()
    src = _full_checkpoint(tmp_path, **{"data.fg_sampling": "slice"})
    with pytest.raises(CTSegError, match=r"data\.fg_sampling: 'slice' -> 'lesion'"):
        ship.ship(src, "lung_25d", "x", tmp_path / "models")
    assert not (tmp_path / "models" / "lung_25d.pt").exists()


def test_weights_dir_errors_name_the_variable_and_the_place(monkeypatch, tmp_path):
    import ctseg_lib.pretrained as pretrained_mod

    monkeypatch.setenv("CTSEG_WEIGHTS", str(tmp_path / "missing"))
    with pytest.raises(CTSegError, match="CTSEG_WEIGHTS is set but is not a folder with the shipped weights") as e:
        weights_dir()
    assert e.value.path == tmp_path / "missing"
    monkeypatch.delenv("CTSEG_WEIGHTS")
    monkeypatch.setattr(pretrained_mod, "checkout_candidates", lambda rel: [tmp_path / rel])
    with pytest.raises(CTSegError, match=r"shipped weights not found: .*\(samples/models\), not in the pip package"):
        weights_dir()
