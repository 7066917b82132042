"""The book's rules (issue 17, issue 14 item 3), checked on the committed notebooks without running them.

- the toc numbers the chapters and lists the glossary;
- every chapter has a label, learning goals, an estimated time, a "Think!" prompt, a Summary and Exercises;
- every exercise is task (+ hint) → checking cell → solution, and its check names plausible wrong
  answers (``check(..., wrong=[...])``; ``check`` itself fails the build if one of them would pass);
- numbers in the prose that a computation produces are glued (``{glue:text}``), not typed;
- chapters use only public ``ctseg_lib`` names that exist, and define no function another chapter defines;
- no hand-typed "chapter N" (cross-references are ``{numref}`` / ``{doc}``; ``-W`` catches broken ones).
"""

from __future__ import annotations

import ast
import importlib
import re
from collections import defaultdict
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from ctseg_lib.exercises import _matches, check

ROOT = Path(__file__).resolve().parent.parent
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CHAPTERS = [p for p in NOTEBOOKS if re.match(r"\d\d_", p.name)]


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _python(source: str) -> str:
    """A code cell as parseable Python: IPython magics and shell lines commented out."""
    return "\n".join(line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def _assigned(sources: list[str], *names: str):
    """The value node of the first top-level ``NAME = ...`` (one name) or ``A, B = ...`` (several) in the
    code cells ``sources``; for the chapter tests that read a chapter's constants without executing it."""
    import ast

    for source in sources:
        for node in ast.parse(_python(source)).body:
            if not isinstance(node, ast.Assign):
                continue
            for t in node.targets:
                got = [getattr(e, "id", None) for e in t.elts] if isinstance(t, ast.Tuple) else [getattr(t, "id", None)]
                if got == list(names):
                    return node.value
    raise AssertionError(f"no code cell assigns {', '.join(names)}")


# ---------------------------------------------------------------------------------------------- toc
def test_toc_numbers_every_chapter_and_lists_the_glossary():
    parts = TOC["parts"]
    files = {f: part for part in parts for f in (c["file"] for c in part["chapters"])}
    for path in CHAPTERS:
        part = files.get(f"book/{path.stem}")
        assert part is not None, f"{path.name} is not in _toc.yml"
        assert part.get("numbered") is True, f"the toc part of {path.name} ({part['caption']}) is not numbered"
    assert "book/glossary" in files and (ROOT / "book" / "glossary.md").is_file()
    assert "book/bibliography" in files
    assert not files["book/glossary"].get("numbered") and not files["book/bibliography"].get("numbered")


def test_glossary_defines_the_core_terms():
    text = (ROOT / "book" / "glossary.md").read_text()
    assert "```{glossary}" in text
    for term in ("Hounsfield unit", "window", "spacing", "affine", "RAS", "Dice", "IoU", "HD95", "NSD",
                 "2.5D", "patch", "foreground oversampling", "tumour"):
        assert re.search(rf"^{re.escape(term)}", text, re.M | re.I), f"glossary lacks {term!r}"


# -------------------------------------------------------------------------------- chapter structure
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_has_goals_time_think_summary_exercises(path):
    nb = _read(path)
    text = _markdown(nb)
    title = next(c.source for c in nb.cells if c.cell_type == "markdown").lstrip()
    assert re.match(r"\(([\w-]+)\)=\s*\n# ", title), f"{path.name}: the title needs a label line `(name)=` above it"
    assert re.search(r"learning goals", text, re.I), f"{path.name}: no learning goals"
    assert re.search(r"estimated time", text, re.I), f"{path.name}: no estimated time (CPU / GPU) in the prose"
    assert re.search(r"\*\*Think!\*\*|Think!", text), f"{path.name}: no 'Think!' prompt"
    assert re.search(r"^## Summary\b", text, re.M), f"{path.name}: no '## Summary' section"
    assert re.search(r"^## Exercises\b", text, re.M), f"{path.name}: no '## Exercises' section"


CHAPTER_N = re.compile(r"\b[Cc]hapters? \d")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_hand_typed_chapter_numbers(path):
    """Cross-references go through {numref}/{doc}: inserting a chapter must not break them."""
    bad = [line.strip() for line in _strip_code_and_math(_markdown(_read(path))).splitlines()
           if CHAPTER_N.search(line)]
    assert not bad, f"{path.name}: typed chapter numbers (use {{doc}} or {{numref}}): {bad[:5]}"


# ------------------------------------------------------------------------------------------ exercises
EXERCISE = re.compile(r"^(`{3,})\{exercise\}", re.M)
LABEL = re.compile(r":label:\s*(\S+)")


def _check_calls(source: str) -> list[ast.Call]:
    tree = ast.parse(_python(source))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == "check"]


def _exercises(nb):
    """(label, index of the exercise cell) for every exercise of a notebook."""
    out = []
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and EXERCISE.search(c.source):
            assert len(EXERCISE.findall(c.source)) == 1, "one exercise per markdown cell"
            m = LABEL.search(c.source[EXERCISE.search(c.source).start():])
            out.append((m.group(1) if m else None, i))
    return out


TARGET = re.compile(r"^\(([\w-]+)\)=\s*$", re.M)


def _book_labels() -> list[tuple[str, str]]:
    """``(label, file name)`` of every ``(name)=`` target and exercise ``:label:`` of the book."""
    out = []
    for path in NOTEBOOKS:
        nb = _read(path)
        out += [(t, path.name) for t in TARGET.findall(_markdown(nb))]
        out += [(label, path.name) for label, _ in _exercises(nb) if label]
    for path in sorted((ROOT / "book").glob("*.md")):
        out += [(t, path.name) for t in TARGET.findall(path.read_text(encoding="utf-8"))]
    return out


def test_labels_are_unique_and_exercise_labels_carry_their_chapter_number():
    """Sphinx reports a duplicate label only as a warning at the end of a 15-minute build (which -W
    fails). Regression: the performance appendix kept its chapter-12 exercise labels when the
    real-CT chapter became chapter 12."""
    labels = _book_labels()
    assert len(labels) > 20  # the scan finds the chapter titles and the exercises
    files = defaultdict(list)
    for label, name in labels:
        files[label].append(name)
    dup = {k: v for k, v in files.items() if len(v) > 1}
    assert not dup, f"duplicate labels: {dup}"
    for label, name in labels:
        m = re.fullmatch(r"ch(\d+)-ex\d+", label)
        assert not m or name.startswith(f"{int(m.group(1)):02d}_"), f"{label} in {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_are_task_hint_check_solution(path):
    nb = _read(path)
    exercises = _exercises(nb)
    assert exercises, f"{path.name}: no exercises"
    for label, i in exercises:
        assert label, f"{path.name} cell {i}: exercise without :label:"
        cell = nb.cells[i].source
        assert "{hint}" in cell[EXERCISE.search(cell).start():], f"{path.name} {label}: no hint after the task"
        assert "{solution}" not in cell, f"{path.name} {label}: the solution must come after the checking cell"
        assert i + 2 < len(nb.cells), f"{path.name} {label}: no checking cell and solution after the task"
        chk, sol = nb.cells[i + 1], nb.cells[i + 2]
        assert chk.cell_type == "code" and "answer = ..." in chk.source, \
            f"{path.name} {label}: the cell after the task must be the checking cell (`answer = ...`, check(...))"
        calls = _check_calls(chk.source)
        assert calls, f"{path.name} {label}: the checking cell calls no check(...)"
        for call in calls:
            wrong = next((k.value for k in call.keywords if k.arg == "wrong"), None)
            assert isinstance(wrong, ast.List | ast.Tuple) and wrong.elts, \
                f"{path.name} {label}: check(...) needs wrong=[plausible wrong answers]"
        assert sol.cell_type == "markdown" and re.search(rf"\{{solution\}}\s+{re.escape(label)}\b", sol.source), \
            f"{path.name} {label}: the cell after the checking cell must be its {{solution}}"
        assert ":class: dropdown" in sol.source, f"{path.name} {label}: the solution must be a dropdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_literal_checks_reject_their_wrong_answers(path):
    """Where expected and wrong answers are literals, the comparison rejects every wrong one here too
    (the others are verified by ``check`` itself each time the book is built)."""
    for c in _read(path).cells:
        if c.cell_type != "code" or "check(" not in c.source:
            continue
        for call in _check_calls(c.source):
            kw = {k.arg: k.value for k in call.keywords}
            try:
                expected = ast.literal_eval(call.args[1]) if len(call.args) > 1 else None
                wrong = ast.literal_eval(kw["wrong"]) if "wrong" in kw else []
                rtol = ast.literal_eval(kw["rtol"]) if "rtol" in kw else 1e-3
                atol = ast.literal_eval(kw["atol"]) if "atol" in kw else 0.0
            except (ValueError, TypeError, SyntaxError):
                continue
            if expected is None or "test" in kw:
                continue
            for w in wrong:
                assert not _matches(w, expected, rtol, atol, None), f"{path.name}: {w!r} passes the check"


def test_check_rejects_zero_for_a_tiny_answer():
    """Regression (07 exercise 1): the old default atol=1e-6 accepted 0 for an answer of 1.9e-7."""
    with pytest.raises(AssertionError):
        check(0.0, 1.9e-7)
    assert check(1.9e-7 * (1 + 1e-4), 1.9e-7) is True
    assert check(np.array([1.0, 2.0]), [1.0, 2.0]) is True


def test_check_refuses_to_accept_a_listed_wrong_answer(capsys):
    with pytest.raises(ValueError, match="accepts the wrong answer"):
        check(..., 100.0, rtol=0.5, wrong=[60.0])
    assert check(..., 100.0, wrong=[60.0, 0]) is None  # not attempted, wrong answers rejected
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ValueError):
        check(True, test=lambda a: True, wrong=[False])
    assert check({"a"}, {"a"}, wrong=[{"a", "b"}, set()]) is True


# ----------------------------------------------------------------------------------- computed numbers
MATH_BLOCK = re.compile(r"\$\$.*?\$\$", re.S)
MATH_INLINE = re.compile(r"\$[^$\n]+\$")
ROLE = re.compile(r"\{[\w:-]+\}`[^`]*`")  # {glue:text}`x:.3f`, {math}`...`, {cite}`...`
CODE_SPAN = re.compile(r"`[^`\n]*`")
OPTION = re.compile(r"^:[\w-]+:.*$", re.M)
# a decimal (0.93, 1.5×) or a percentage (12 %, 99.9%), not part of a word or version-like token (2.5D)
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+(?![\w.])(?:\s?%)?|\s?%)")

#: Typed numbers that are constants, not results (each is removed before the scan). Published results are
#: allowed in any line that carries a {cite}; anything else that is computed must be glued.
ALLOWED = [
    "CC-BY-SA 4.0", "CC BY-SA 4.0", "YAML 1.1", "MONAI](https://monai.io) 1.6",
    "0.6–0.9 mm", "0.6–1 mm", "0.7–0.8 mm",   # typical CT pixel sizes (constants of the field)
    "99.9 % of the voxels are background", "99.9 % is background", "0.1 % are tumour", "0.1 % tumour",
    "0.1 % everywhere", "0.1 % prevalence",     # the chosen prevalence of chapter 5's toy example
    "worst 5 %", "0.5 is the usual choice", "overlap 0.5",
    "only 10 % of the empty ones", "1.5 mm isotropic", "0.5 and 99.5 percentiles", "LeakyReLU(0.01)",
    "μ = 0.240 /cm", "μ_water = 0.193 /cm", "μ_air = 0.0002 /cm", "[0.5, 0.73]",
    "20 % of empty slices kept", "±20 % in quick mode", "near 100 %", "10–30 % faster",
]


def _drop_code_fences(text: str) -> str:
    """Blank the lines of code fences (```python ... ```), keep directives (```{exercise} ... ```)."""
    out, directives, code = [], [], None
    for line in text.splitlines():
        m = re.match(r"^(`{3,})(.*)$", line.strip())
        if code is not None:  # inside a code fence: drop, until its closing fence
            if m and m.group(1) == code and not m.group(2).strip():
                code = None
            out.append("")
        elif m and m.group(2).strip().startswith("{"):  # a directive opens
            directives.append(m.group(1))
            out.append("")
        elif m and not m.group(2).strip() and directives and directives[-1] == m.group(1):  # a directive closes
            directives.pop()
            out.append("")
        elif m:  # a code fence opens
            code = m.group(1)
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def _strip_code_and_math(text: str) -> str:
    text = _drop_code_fences(text)
    for pattern in (MATH_BLOCK, MATH_INLINE, ROLE, CODE_SPAN, OPTION):
        text = pattern.sub(" ", text)
    return text


def typed_numbers(source: str, allowed: list[str] = ALLOWED) -> list[str]:
    """Result-like numbers typed in a markdown cell (see the module docstring)."""
    text = source
    for phrase in allowed:
        text = text.replace(phrase, " ")
    text = "\n".join("" if "{cite" in line else line for line in text.splitlines())  # published, with source
    return [m.group(0) for m in NUMBER.finditer(_strip_code_and_math(text))]


def test_typed_number_scanner():
    assert typed_numbers("Dice 0.93 and 12 % of slices") == ["0.93", "12 %"]
    assert typed_numbers("a {glue:text}`dice:.3f` Dice, `0.5`, $0.5$, 2.5D, L40/W400, 3 cases") == []
    assert typed_numbers("nnU-Net reaches 0.96 {cite}`isensee2021nnunet`") == []
    assert typed_numbers("```python\nx = 0.5\n```\nand 99.9 %") == ["99.9 %"]
    assert typed_numbers("```{exercise} T\n:label: a\nwhy 0.25?\n```") == ["0.25"]
    assert typed_numbers("```{exercise} T\nx\n```\n\n```{hint}\np = 0.95\n```\n````{solution} a\n```python\n"
                         "y = 0.5\n```\nso 0.75\n````") == ["0.95", "0.75"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_computed_numbers_are_glued(path):
    """A markdown cell may type a decimal or a percentage only if it is a constant (``ALLOWED``, or the
    cell's metadata ``typed_numbers`` list of phrases, each a constant with its reason in the prose) or a
    cited published number; everything the code computes is ``{glue:text}``."""
    bad = []
    for i, c in enumerate(_read(path).cells):
        if c.cell_type == "markdown":
            extra = list(c.metadata.get("typed_numbers", []))
            bad += [f"[{i}] {n}" for n in typed_numbers(c.source, ALLOWED + extra)]
    assert not bad, f"{path.name}: typed result-like numbers (glue them): {bad}"


# --------------------------------------------------------------------------------------- public API
def _ctseg_names(source: str) -> list[tuple[str, str]]:
    """(module, attribute) pairs a code cell takes from ctseg_lib: imports and attribute accesses."""
    tree = ast.parse(_python(source))
    aliases: dict[str, str] = {}
    used: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ctseg_lib":
            for a in node.names:
                used.append((node.module, a.name))
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "ctseg_lib":
                    aliases[a.asname or a.name.split(".")[0]] = a.asname and a.name or "ctseg_lib"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            used.append((aliases[node.value.id], node.attr))
    return used


def _resolve(dotted: str):
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for p in parts[k:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapters_use_only_public_existing_library_names(path):
    for c in _read(path).cells:
        if c.cell_type != "code":
            continue
        for owner, name in _ctseg_names(c.source):
            assert not (name.startswith("_") and not name.startswith("__")), \
                f"{path.name}: uses the private name {owner}.{name}"
            try:
                obj = _resolve(owner)
            except (ImportError, AttributeError) as e:
                pytest.fail(f"{path.name}: {owner} does not exist ({e})")
            if not hasattr(obj, name):
                try:
                    importlib.import_module(f"{owner}.{name}")
                except ImportError:
                    pytest.fail(f"{path.name}: {owner}.{name} does not exist")


def test_public_name_scanner():
    src = "from ctseg_lib import losses as L\nfrom ctseg_lib.data import load_nifti\nL._overlap(1)\n%time x"
    assert _ctseg_names(src) == [("ctseg_lib", "losses"), ("ctseg_lib.data", "load_nifti"),
                                 ("ctseg_lib.losses", "_overlap")]


def test_no_function_is_defined_in_two_chapters():
    where = defaultdict(list)
    for path in NOTEBOOKS:
        for c in _read(path).cells:
            if c.cell_type == "code":
                for node in ast.parse(_python(c.source)).body:
                    if isinstance(node, ast.FunctionDef | ast.ClassDef):
                        where[node.name].append(path.stem)
    twice = {name: stems for name, stems in where.items() if len(set(stems)) > 1}
    assert not twice, f"functions defined in more than one chapter (move them into ctseg_lib): {twice}"


# ------------------------------------------------------------------------------------- site config
def test_site_config_avoids_the_console_errors():
    """Issue 18: no sphinx-thebe (its THEBE_JS_URL script is declared twice per page), a valid theme
    mode (an empty one logs "Got invalid theme mode"), and a favicon (else a 404 for /favicon.ico)."""
    from jupyter_book.config import get_final_config

    conf, _ = get_final_config(user_yaml=yaml.safe_load((ROOT / "_config.yml").read_text()), sourcedir=ROOT,
                               cli_config={"latex_individualpages": False})
    assert "sphinx_thebe" not in conf["extensions"]
    assert {"sphinx_exercise", "sphinxcontrib.bibtex", "myst_nb", "sphinx_book_theme"} <= set(conf["extensions"])
    assert conf["html_context"]["default_mode"] in ("light", "dark", "auto")
    assert "default_mode" not in conf["html_theme_options"]  # not a theme option: Sphinx would warn
    assert conf["html_theme_options"]["launch_buttons"]["colab_url"]  # merged, not replaced
    assert (ROOT / conf["html_favicon"]).is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_glue_reference_is_glued_in_the_chapter(path):
    """``{glue:text}`name:fmt``` needs ``glue("name", ...)`` in a code cell of the same notebook (f-string
    names like ``f"roi_{key}"`` match any word; a name glued through a variable must at least appear in
    the code), and a format spec Python understands."""
    nb = _read(path)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    defined = [re.sub(r"\\\{\w+\\\}", r"\\w+", re.escape(n)) for n in re.findall(r'glue\(f?"([^"]+)"', code)]
    if re.search(r"glue\((?!f?\")", code):  # glue(name, ...) with a variable name
        defined += [re.escape(n) for n in set(re.findall(r"\w+", code))]
    for ref in re.findall(r"\{glue:text\}`([^`]*)`", _markdown(nb)):
        name, _, spec = ref.partition(":")
        assert any(re.fullmatch(d, name) for d in defined), f"{path.name}: {name!r} is never glued"
        if spec:
            format(1.5, spec)  # raises ValueError on a malformed spec such as ".1f}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_a_unique_id(path):
    """nbformat 4.5 cell ids (a missing one is a warning today and 'a hard error in future nbformat
    versions'; two chapters had cells without one)."""
    import json

    cells = json.loads(path.read_text())["cells"]
    ids = [c.get("id") for c in cells]
    assert None not in ids, f"{path.name}: cells {[i for i, x in enumerate(ids) if x is None]} have no id"
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"
