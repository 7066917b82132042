"""TrainConfig: YAML/JSON round trip and key-by-key validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctseg_lib.config import TrainConfig
from ctseg_lib.errors import CTSegError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_valid_and_roundtrip(tmp_path):
    cfg = TrainConfig()
    assert cfg.model.in_channels == 1 and cfg.model.size_divisor == 8
    for name in ("c.yaml", "c.json"):
        cfg.save(tmp_path / name)
        back = TrainConfig.from_file(tmp_path / name)
        assert back == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_partial_dict_keeps_defaults():
    cfg = TrainConfig.from_dict({"model": {"context": 2}, "optim": {"lr": 3}})
    assert cfg.model.in_channels == 5 and cfg.optim.lr == 3.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.depth == 4


def test_min_bottleneck_allows_the_original_projects_depth_7():
    """Depth 7 on 128 x 128 slices leaves a 2 x 2 bottleneck: refused by default, allowed when asked for."""
    cfg = TrainConfig.from_dict({"model": {"depth": 7, "min_bottleneck": 2},
                                 "data": {"slice_size": [128, 128], "patch_size": None}})
    assert cfg.model.size_divisor == 64 and 128 // cfg.model.size_divisor == 2


@pytest.mark.parametrize("d, key, words", [
    ({"optim": {"lr": "fast"}}, "optim.lr", "expected float, got str"),
    ({"optim": {"learning_rate": 0.1}}, "optim.learning_rate", "unknown key"),
    ({"epochz": 3}, "epochz", "unknown key"),
    ({"epochs": 2.5}, "epochs", "expected int"),
    ({"amp": "yes"}, "amp", "expected bool"),
    ({"model": 3}, "model", "expected a mapping"),
    ({"data": {"slice_size": [128, "a"]}}, "data.slice_size[1]", "expected int"),
    ({"optim": {"name": "rmsprop"}}, "optim.name", "must be one of"),
    ({"epochs": 0}, "epochs", ">= 1"),
    ({"data": {"fg_fraction": 1.5}}, "data.fg_fraction", "[0, 1]"),
    ({"model": {"depth": 6}, "data": {"slice_size": [64, 64]}}, "data.slice_size", "impossible"),
    ({"model": {"depth": 7}, "data": {"slice_size": [128, 128], "patch_size": None}}, "data.slice_size",
     "min_bottleneck=4"),
    ({"model": {"depth": 7, "min_bottleneck": 2}, "data": {"slice_size": [128, 96], "patch_size": None}},
     "data.slice_size", "at least 128"),
    ({"model": {"min_bottleneck": 0}}, "model.min_bottleneck", ">= 1"),
    ({"data": {"slice_size": [100, 128]}}, "data.slice_size", "multiple of"),
    ({"data": {"slice_size": [128]}}, "data.slice_size", "2 entries"),
    ({"model": {"spatial_dims": 3}}, "data.patch_size", "required"),
    ({"optim": {"lr": -1.0}}, "optim.lr", "> 0"),
    ({"data": {"fg_sampling": "case"}}, "data.fg_sampling", "'slice' or 'lesion'"),
    ({"model": {"spatial_dims": 3}, "data": {"patch_size": [32, 32, 32], "fg_sampling": "lesion"}},
     "data.fg_sampling", "2D / 2.5D only"),
])
def test_bad_values_name_the_key(d, key, words):
    with pytest.raises(CTSegError) as e:
        TrainConfig.from_dict(d)
    assert f"'{key}'" in str(e.value) and words in str(e.value)


def test_yaml_exponent_hint_and_file_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 1e-3\n")
    with pytest.raises(CTSegError, match=r"optim.lr.*1.0e-3"):
        TrainConfig.from_file(p)
    p.write_text("optim: [unclosed\n")
    with pytest.raises(CTSegError, match="cannot parse"):
        TrainConfig.from_file(p)
    with pytest.raises(CTSegError, match="not found"):
        TrainConfig.from_file(tmp_path / "missing.yaml")
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"optim": {"lr": "x"}}))
    with pytest.raises(CTSegError, match=str(j.name)):
        TrainConfig.from_file(j)
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    assert TrainConfig.from_file(empty) == TrainConfig()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    cfg = TrainConfig.from_file(path)
    assert cfg.data.task in ("liver", "lung")


def test_preprocessing_errors_are_config_errors():
    with pytest.raises(CTSegError, match=r"'data'.*normalization"):
        TrainConfig.from_dict({"data": {"normalization": "zscore"}})
    with pytest.raises(CTSegError, match=r"'data'.*unknown preprocessing key"):
        TrainConfig.from_dict({"data": {"preprocess": {"bogus": 1}}})
    p = TrainConfig.from_dict({"data": {"preprocess": {"crop_to_body": True}}}).data.preprocess_params()
    assert p.crop_to_body and p.slice_size == (128, 128)


def test_presets_load_by_name_and_by_checkout_path():
    from ctseg_lib.config import PRESETS, list_presets

    names = list_presets()
    assert {"liver_2d", "liver_25d", "lung_2d", "lung_25d", "lung_25d_book"} <= set(names)
    assert any(n.endswith("_gpu") for n in names)
    for n in names:  # every shipped config is valid
        assert TrainConfig.from_file(n).to_dict() == TrainConfig.from_file(PRESETS / f"{n}.yaml").to_dict()
    with pytest.raises(CTSegError, match="presets: "):
        TrainConfig.from_file("no_such_preset")


def test_with_changes_validates_dotted_keys():
    base = TrainConfig.from_file("liver_2d_book")
    c = base.with_changes({"model.context": 1, "name": "x", "loss.kwargs.batch_dice": False})
    assert c.model.context == 1 and c.model.in_channels == 3 and c.name == "x"
    assert c.loss.kwargs == {"batch_dice": False} and base.model.context == 0  # a copy
    with pytest.raises(CTSegError, match="model.kontext"):
        base.with_changes({"model.kontext": 1})
    with pytest.raises(CTSegError, match="model.depth"):
        base.with_changes({"model.depth": 0})


def test_presets_extend_presets(tmp_path):
    """``base:`` merges section by section; the child's keys win; the shipped 2.5D presets are their
    2D base plus ``model.context``; a loop and a bad base are one clear error."""
    from ctseg_lib.config import merge_configs

    assert merge_configs({"a": {"x": 1, "y": 2}, "b": [1]}, {"a": {"y": 3}, "b": [2]}) == {"a": {"x": 1, "y": 3},
                                                                                          "b": [2]}
    for child, parent in (("liver_25d", "liver_2d"), ("lung_25d_book", "lung_2d"), ("liver_2d_book", "liver_2d")):
        c, p = TrainConfig.from_file(child).to_dict(), TrainConfig.from_file(parent).to_dict()
        assert c["model"]["context"] == (1 if "25d" in child else 0) and c["name"] == child
        assert c["data"]["window"] == p["data"]["window"] and c["loss"] == p["loss"]
    liver_25d = TrainConfig.from_file("liver_25d").to_dict()
    liver_2d = TrainConfig.from_file("liver_2d").to_dict()
    liver_2d["model"]["context"], liver_2d["name"] = 1, "liver_25d"
    assert liver_25d == liver_2d  # differ in exactly the keys the file lists
    (tmp_path / "mine.yaml").write_text("base: liver_2d\nname: mine\noptim: {lr: 1.0e-4}\n")
    mine = TrainConfig.from_file(tmp_path / "mine.yaml")
    assert mine.optim.lr == 1e-4 and mine.optim.name == "adamw" and mine.data.patch_size == [96, 96]
    (tmp_path / "child.yaml").write_text("base: mine.yaml\nepochs: 3\n")  # relative to the file
    assert TrainConfig.from_file(tmp_path / "child.yaml").optim.lr == 1e-4
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(CTSegError, match="loop"):
        TrainConfig.from_file(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("base: no_such_preset\n")
    with pytest.raises(CTSegError, match="not found"):
        TrainConfig.from_file(tmp_path / "bad.yaml")


def test_loss_name_and_kwargs_checked_when_the_config_loads():
    with pytest.raises(CTSegError, match="'loss.name': unknown loss 'dcie'"):
        TrainConfig.from_dict({"loss": {"name": "dcie"}})
    with pytest.raises(CTSegError, match="'loss.kwargs'.*batch_dcie"):
        TrainConfig.from_dict({"loss": {"name": "dice_ce", "kwargs": {"batch_dcie": True}}})
    assert TrainConfig.from_dict({"loss": {"name": "tversky", "kwargs": {"alpha": 0.3, "beta": 0.7}}}).loss.name


def test_preset_records_its_postprocessing():
    assert TrainConfig.from_file("liver_2d").postprocess == ["lcc", "restrict"]
    assert TrainConfig.from_dict({}).postprocess == []
    assert TrainConfig.from_dict({"postprocess": ["lcc_fg", "min_size:30"]}).postprocess == ["lcc_fg", "min_size:30"]
    with pytest.raises(CTSegError, match="'postprocess'.*unknown postprocessing step 'lcc_foo'"):
        TrainConfig.from_dict({"postprocess": ["lcc_foo"]})


def test_lung_25d_is_lung_25d_book_with_five_documented_changes():
    """The shipped lung preset (``lung_25d_long`` until 2026-12-07) differs from ``lung_25d_book`` in exactly
    the keys its header explains: 3x the
    epochs with the same number of mining rounds, +-6 mm of context on 3 mm slices, lesion draws, no
    validation phantoms (so best.pt, saved every epoch without validation, is the last epoch), and the
    dot filter tuned to its own grid."""
    long, base = TrainConfig.from_file("lung_25d").to_dict(), TrainConfig.from_file("lung_25d_book").to_dict()
    from .test_chapter10 import _flat

    a, b = _flat(long), _flat(base)
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert changed == {"name", "epochs", "model.context", "data.hard_every", "data.fg_sampling",
                       "data.preprocess.target_spacing", "data.val_fraction", "model.dot_filter"}, changed
    # the filter's slice spacing is the grid's
    assert long["model"]["dot_voxel_mm"][2] == long["data"]["preprocess"]["target_spacing"][2]
    assert long["data"]["val_fraction"] == 0 and long["data"]["test_fraction"] == 0, "all phantoms train"
    assert long["epochs"] == 3 * base["epochs"]
    rounds = [len(range(c["data"]["hard_every"], c["epochs"], c["data"]["hard_every"])) for c in (long, base)]
    assert rounds[0] == rounds[1]
    z = long["data"]["preprocess"]["target_spacing"][2]
    assert long["model"]["context"] * z == 6.0 and long["data"]["preprocess"]["crop_to_body"]


def test_liver_2d_trains_on_every_phantom_and_the_book_presets_keep_their_split():
    """Since 2026-12-07 ``liver_2d`` trains on all the phantoms it is given (the README's fresh-pair
    comparison: with 0.2 / 0.2 it trained on 10 of 16), while the book's liver run and ``liver_real`` keep
    the split their chapters and measured numbers were made with (their resolved configs, and so the
    book's cached runs, must not move with the base preset)."""
    from .test_chapter10 import _flat

    liver = TrainConfig.from_file("liver_2d")
    assert liver.data.val_fraction == 0 and liver.data.test_fraction == 0
    book, real = TrainConfig.from_file("liver_2d_book"), TrainConfig.from_file("liver_real")
    assert (book.data.val_fraction, book.data.test_fraction) == (0.2, 0.2)
    assert (real.data.val_fraction, real.data.test_fraction) == (0.2, 0.0)
    a, b = _flat(TrainConfig.from_file("liver_25d").to_dict()), _flat(liver.to_dict())
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"name", "model.context"}
