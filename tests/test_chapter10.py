"""Chapter 10 (pitfalls) after issue 16, checked without executing it.

- section (h)'s "original pipeline" differs from the book's model in the four mistakes it names and
  nothing else (same budget: epochs, patches, optimiser, seed), and the keys it uses do what they say;
- every model of the chapter is tested on chapter 8's fresh phantoms (`held_out_cases`), not on the
  three cases of the training split.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat

from ctseg_lib.config import TrainConfig

from .test_book_rules import _python

ROOT = Path(__file__).resolve().parent.parent
CH10 = ROOT / "book" / "10_pitfalls.ipynb"
CELLS = {c.get("id"): c.source for c in nbformat.read(CH10, as_version=4).cells}


def _with_changes_literal(cell_id: str, target: str) -> dict:
    """The dict literal passed to ``base.with_changes(...)`` in the assignment to ``target``."""
    tree = ast.parse(_python(CELLS[cell_id]))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == target:
            call = node.value
            assert isinstance(call, ast.Call) and call.func.attr == "with_changes", ast.dump(call)
            return ast.literal_eval(call.args[0])
    raise AssertionError(f"cell {cell_id} assigns no {target}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("kwargs",):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_original_pipeline_differs_from_the_book_model_in_the_named_mistakes_only():
    changes = _with_changes_literal("c10-h-train", "original_cfg")
    base = TrainConfig.from_file("liver_2d_book")
    original = base.with_changes(changes)
    a, b = _flat(base.to_dict()), _flat(original.to_dict())
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differ == {"name", "data.normalization", "data.merge_labels", "data.fg_classes",
                      "data.preprocess.label_resize", "loss.name", "postprocess"}, differ
    assert original.data.normalization == "minmax"  # (a)
    assert original.data.merge_labels is True  # (b)
    assert original.data.preprocess_params().label_resize == "linear_uint8"  # (c)
    assert original.loss.name == "dice" and original.loss.kwargs == {"batch_dice": True}  # (e): soft Dice only
    assert original.postprocess == []
    assert original.data.preprocess_params().crop_to_body  # the body crop is the book's, not a mistake


def test_every_model_is_tested_on_chapter_8s_fresh_phantoms():
    ch8 = nbformat.read(ROOT / "book" / "08_liver.ipynb", as_version=4)
    assert any("FRESH_SEED = LIVER_TEST_SEED" in c.source for c in ch8.cells)  # the seed lives in ctseg_lib.notebook
    assert "test_ds, test_ids = held_out_cases(ds, split)" in CELLS["cell-12"]  # the same phantoms (default seed)
    assert "test = {cid: test_ds.load_case(cid) for cid in test_ids}" in CELLS["cell-14"]
    code = "\n".join(s for s in CELLS.values())
    assert 'split["test"]' not in code.replace('test_ds, test_ids = ds, split["test"]', "").replace(
        'liver_slices(split["test"][:2], 8)', ""), "a comparison still runs on the split's test cases"
    # (h) reuses (a)'s predictions of the book's model instead of predicting the same scans again
    assert 'preds["window", condition, cid]' in CELLS["c10-h-eval"]


def test_pitfall_seeds_script_trains_the_chapters_pipelines():
    """tools/pitfall_seeds.py measures, over seeds, the same pipelines the chapters train once."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pitfall_seeds", ROOT / "tools" / "pitfall_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    chapter = _with_changes_literal("c10-h-train", "original_cfg")
    script = mod.PIPELINES["original (a+b+c+e)"]
    assert {k: v for k, v in chapter.items() if k != "name"} == script
    base = TrainConfig.from_file("liver_2d_book")
    for changes in (*mod.PIPELINES.values(), *mod.CONTEXT.values()):
        base.with_changes(changes)  # every variant is a valid config
    assert mod.CONTEXT["2.5D (context 1)"] == {"model.context": 1}
    assert mod.PIPELINES["book"] == {} and mod.CONTEXT["book"] == {}
