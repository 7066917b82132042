"""The house rules of ARCHITECTURE.md, checked: private names stay private, the trainer stays readable,
and one task registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = sorted((ROOT / "ctseg_lib").rglob("*.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", LIB, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_private_name_of_another(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [f"line {n.lineno}: from {n.module} import {a.name}" for n in ast.walk(tree)
           if isinstance(n, ast.ImportFrom) and n.module != "__future__"
           for a in n.names if a.name.startswith("_") and not a.name.startswith("__")]
    # module._name where `module` is an imported ctseg_lib module
    imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and (n.level > 0 or (n.module or "").startswith("ctseg_lib")) for a in n.names}
    imported |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names if a.name.startswith("ctseg_lib")}
    bad += [f"line {n.lineno}: {n.value.id}.{n.attr}" for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in imported
            and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert not bad, f"{_module_name(path)} uses private names of other modules: {bad}"


@pytest.mark.parametrize("name", ["training.py", "datasets.py"])
def test_trainer_and_sampler_functions_are_short(name):
    """A chapter shows these functions whole: none over 60 lines (issue 14)."""
    tree = ast.parse((ROOT / "ctseg_lib" / name).read_text(encoding="utf-8"))
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_training_defines_no_dataset_of_its_own():
    """One sampling pipeline: train() draws from the chapter-3 datasets (no Dataset subclass here)."""
    from torch.utils.data import Dataset

    import ctseg_lib.training as T

    own = [n for n, v in vars(T).items() if isinstance(v, type) and issubclass(v, Dataset)
           and v.__module__ == T.__name__]
    assert not own
    assert not hasattr(T, "epoch_index") and not hasattr(T, "Samples")


def test_task_knowledge_lives_in_the_registry():
    """MSD folder names and label maps appear only in tasks.py (and docs/comments), not as literals."""
    offenders = []
    for path in LIB:
        if path.name == "tasks.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings \
                    and n.value in ("Task03_Liver", "Task06_Lung", "a90ec6c4aa7f6a3d087205e23d4e6397"):
                offenders.append(f"{_module_name(path)}:{n.lineno} {n.value!r}")
    assert not offenders, offenders
