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


SHIPPED = ("lung_25d", "lung_25d_book", "liver_real")


@pytest.mark.parametrize("preset", SHIPPED)
def test_provenance_matches_the_file(preset):
    """The JSON's SHA-256 is the .pt file's: a re-shipped file without its record fails here; the run
    trained the preset's epochs, and the file's history is that whole run."""
    info = provenance(preset)
    path = pretrained_path(preset)
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["bytes"] == path.stat().st_size and info["preset"] == preset
    assert info["epochs"] == TrainConfig.from_file(preset).epochs
    task = TrainConfig.from_file(preset).data.task
    assert info["data_command"].startswith(f"ctseg synth --task {task} --cases ")
    ck = load_checkpoint(path)
    assert [r["epoch"] for r in ck["history"]] == list(range(1, info["epochs"] + 1))
    assert 1 <= ck["epoch"] == info.get("checkpoint_epoch", info["epochs"]) <= info["epochs"]
    assert abs(sum(r["time"] for r in ck["history"]) - info["training_seconds"]) < 0.1


@pytest.mark.parametrize("preset", SHIPPED)
def test_pretrained_run_is_the_shipped_network_as_a_chapter_uses_it(preset):
    """``notebook.pretrained_run``: the checked weights, their whole training history and its time."""
    from ctseg_lib.notebook import pretrained_run

    run = pretrained_run(preset)
    info = provenance(preset)
    assert run.config.name == preset and not run.model.training
    assert recipe_differences(run.config.to_dict(), preset) == []
    assert len(run.history) == info["epochs"] and run.out_dir == pretrained_path(preset).parent
    assert abs(run.train_seconds - info["training_seconds"]) < 0.1
    assert run.epoch == info.get("checkpoint_epoch", info["epochs"]), "Run.epoch: the epoch of the shipped weights"
    assert run.meta["split"]["train"], "the training cases are recorded"


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


@pytest.mark.parametrize("loader", ["load_pretrained", "pretrained_run"])
def test_load_pretrained_refuses_weights_of_another_recipe(tmp_path, monkeypatch, loader):
    """Weights trained before the preset was edited are refused, with the key named: by
    ``load_pretrained`` and by the chapters' ``notebook.pretrained_run`` alike."""
    from ctseg_lib.notebook import pretrained_run

    ship = _ship_module()
    src = _full_checkpoint(tmp_path)
    out = tmp_path / "models"
    ship.ship(src, "lung_25d", "ctseg synth --task lung --cases 20 --seed 1", out)
    ck = load_checkpoint(out / "lung_25d.pt")
    ck["config"]["model"]["dot_filter"] = []  # as if configs/lung_25d.yaml had gained the filter later
    torch.save(ck, out / "lung_25d.pt")
    monkeypatch.setenv("CTSEG_WEIGHTS", str(out))
    load = {"load_pretrained": load_pretrained, "pretrained_run": pretrained_run}[loader]
    with pytest.raises(CTSegError, match=r"another recipe.*model\.dot_filter: \[\] -> \[4\.0, 6\.0\]"):
        load("lung_25d")


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


def test_ship_keeps_the_whole_runs_history_when_validation_saved_an_earlier_epoch(tmp_path):
    """best.pt of epoch 2 holds 2 history rows; the run trained 4: the shipped history and training time
    are the run's (``history.json`` beside the checkpoint), the weights stay epoch 2's."""
    ship = _ship_module()
    src = _full_checkpoint(tmp_path)
    run = [{"epoch": e, "train_loss": 1.0 / e, "time": 10.0} for e in range(1, 5)]
    ck = load_checkpoint(src)
    torch.save({**ck, "epoch": 2, "history": run[:2]}, src)
    (src.parent / "history.json").write_text(json.dumps(run))
    pt, js = ship.ship(src, "lung_25d", "x", tmp_path / "models")
    slim, info = load_checkpoint(pt), json.loads(js.read_text())
    assert slim["history"] == run and slim["epoch"] == 2
    assert info["epochs"] == 4 and info["checkpoint_epoch"] == 2 and info["training_seconds"] == 40.0
    # a history.json of another run (it does not continue the checkpoint's) is not taken
    (src.parent / "history.json").write_text(json.dumps([{"epoch": 1, "train_loss": 9.0, "time": 1.0}] + run[1:]))
    pt, js = ship.ship(src, "lung_25d", "x", tmp_path / "models2")
    assert load_checkpoint(pt)["history"] == run[:2] and json.loads(js.read_text())["epochs"] == 2


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
