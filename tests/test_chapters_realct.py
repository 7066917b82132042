"""The real CT scans in chapters 1, 2 and 12 (issue 15), checked without executing the notebooks.

- the chapters show the attribution and the licence of both samples, glued from the library;
- chapter 2 links the sources of the real-data quirks it describes;
- no claim that half of the real MSD files are LPS (only the phantom generator does that);
- the region rules of chapter 1, run on the vendored scans, give what the chapter's prose says;
- chapter 12 loads the very runs that chapters 6 and 9 train (same data, same config construction),
  and its lung-field rule keeps the real nodule inside the lung fields.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from scipy import ndimage

from ctseg_lib.data.nifti import is_fov_padding
from ctseg_lib.data.samples import SAMPLES, load_sample
from ctseg_lib.data.stats import body_mask

ROOT = Path(__file__).resolve().parent.parent
CH1 = ROOT / "book" / "01_ct_basics.ipynb"
CH2 = ROOT / "book" / "02_datasets.ipynb"
CH6 = ROOT / "book" / "06_training.ipynb"
CH9 = ROOT / "book" / "09_lung.ipynb"
CH12 = ROOT / "book" / "12_real_ct.ipynb"
QUIRK_SOURCES = ("https://github.com/PatrickChrist/LITS-CHALLENGE/issues/14",
                 "https://github.com/Project-MONAI/model-zoo/issues/766")


def _cells(path: Path, kind: str) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == kind]


@pytest.mark.parametrize("path", [CH1, CH2, CH12], ids=lambda p: p.name)
def test_attribution_and_licence_on_the_page(path):
    text, code = "\n".join(_cells(path, "markdown")), "\n".join(_cells(path, "code"))
    for name, info in SAMPLES.items():
        assert f"{{glue:text}}`att_{name}`" in text and f"{{glue:text}}`lic_{name}`" in text, name
        assert info.licence_url in text, f"{path.name}: no link to the {info.licence} deed"
    assert 'glue(f"att_{name}", s.attribution' in code and 'glue(f"lic_{name}", s.licence' in code
    assert re.search(r"\{admonition\}[^\n]*licen", text, re.I), f"{path.name}: attribution not in an admonition"


def test_chapter2_links_the_sources_of_the_quirks():
    text = "\n".join(_cells(CH2, "markdown"))
    for url in QUIRK_SOURCES:
        assert url in text
    for value in ("1024", "2048", "3024"):  # typed or glued padding values
        assert value in text or "_pad`" in text


#: "about half of the MSD files are LPS" and its variants: a claim about the real data that no source supports
#: (the phantom generator writes half of *its* cases LPS, which the chapters may say).
HALF_MSD = [re.compile(r"\bhalf of (?:the |all )?(?:real )?(?:MSD|Decathlon)\b", re.I),
            re.compile(r"\b(?:MSD|Decathlon)\b[^.]*\b(?:files|scans|volumes|cases)\b[^.]*\bhalf\b", re.I)]


def half_msd_claims(text: str) -> list[str]:
    return [m.group(0) for pattern in HALF_MSD for m in pattern.finditer(text)]


def test_half_msd_scanner():
    assert half_msd_claims("About half of the MSD files are stored in LPS order and half in RAS")
    assert half_msd_claims("Phantoms, like real MSD scans, come in different orientations: about half of ours are LPS")
    assert not half_msd_claims("about half of the phantom cases stored LPS (it says nothing about how the MSD files "
                               "are stored)")
    assert not half_msd_claims("in this phantom dataset about half of the scans by construction")


@pytest.mark.parametrize("path", sorted(CH1.parent.glob("*.ipynb")), ids=lambda p: p.name)
def test_no_unsourced_claim_that_half_the_msd_files_are_lps(path):
    claims = half_msd_claims("\n".join(_cells(path, "markdown")))
    assert not claims, f"{path.name}: unsourced claims about the real MSD files: {claims}"


@pytest.fixture(scope="module")
def tissue_regions():
    """The chapter's own ``tissue_regions``, taken from its code cell (chapters define, tests run it)."""
    for source in _cells(CH1, "code"):
        if "def tissue_regions" not in source:
            continue
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name == "tissue_regions":
                namespace = {"np": np, "ndimage": ndimage, "body_mask": body_mask, "is_fov_padding": is_fov_padding}
                exec(compile(ast.Module([node], []), str(CH1), "exec"), namespace)
                return namespace["tissue_regions"]
    pytest.fail("chapter 1 defines no tissue_regions")


def test_chapter1_region_rules_on_the_real_scans(tissue_regions):
    liver_s, lidc_s = load_sample("msd_liver_0"), load_sample("lidc_0001")
    liver_hu, lidc_hu = liver_s.image.array, lidc_s.image.array
    r_liver = tissue_regions(liver_hu, liver_s.labels["liver"].array > 0)
    r_lidc = tissue_regions(lidc_hu)
    assert "liver" not in r_lidc and set(r_liver) == {"air", "lung", "fat", "bone", "liver"}
    assert 100 < np.median(liver_hu[r_liver["liver"]]) < 140  # portal-venous liver
    assert np.percentile(liver_hu[r_liver["liver"]], 95) - np.percentile(liver_hu[r_liver["liver"]], 5) > 30
    assert -900 < np.median(lidc_hu[r_lidc["lung"]]) < -800  # full inspiration
    assert r_lidc["lung"].sum() * np.prod(lidc_s.image.spacing) / 1e6 > 2  # both lungs, litres
    for hu, regions in ((liver_hu, r_liver), (lidc_hu, r_lidc)):
        assert -1010 < np.median(hu[regions["air"]]) < -950
        assert -115 < np.median(hu[regions["fat"]]) < -85
        assert not (regions["air"] & is_fov_padding(hu)).any()  # padding is never counted as air
    # the padding: one marker value per scan, in the corners, and it shifts the statistics
    for hu, value in ((liver_hu, -3024), (lidc_hu, -2048)):
        assert np.array_equal(np.unique(hu[is_fov_padding(hu)]), [value]) and hu[0, 0, 0] == value
        assert hu.mean() < hu[~is_fov_padding(hu)].mean() - 100
        assert hu.std() > 1.3 * hu[~is_fov_padding(hu)].std()


# ------------------------------------------------------------------------------- chapter 12 (real CT)
def _lung_configs(path: Path, marker: str) -> dict:
    """Execute the cell of ``path`` that builds the lung chapter's configs (the one containing ``marker``),
    with ``base`` defined by that notebook's own ``base = ...`` line; returns its namespace."""
    from ctseg_lib.config import PRESETS, TrainConfig

    code = _cells(path, "code")
    base_line = next(line for c in code for line in c.splitlines() if line.startswith("base = "))
    cell = next(c for c in code if marker in c)
    namespace = {"TrainConfig": TrainConfig, "PRESETS": PRESETS, "print": lambda *a, **k: None}
    exec(base_line, namespace)
    exec(cell, namespace)
    return namespace


def test_chapter12_loads_the_runs_that_chapters_6_and_9_train():
    """train_cached keys a run on its config and data: chapter 12 must ask for exactly those of the
    chapters that train the models, or it would silently train (and describe) different ones."""
    ch9 = _lung_configs(CH9, "steps = {")
    ch12 = _lung_configs(CH12, "lung_cfg = configs")
    assert ch12["lung_cfg"].to_dict() == ch9["configs"]["+ 2.5D"].to_dict()
    code6, code9, code12 = ("\n".join(_cells(p, "code")) for p in (CH6, CH9, CH12))
    for call in ('get_dataset("liver", cases=16, test_cases=2)', 'train_cached(cfg, liver_root, "liver_2d_book")'):
        assert call in code6, f"06_training no longer has {call}: update 12_real_ct"
    assert 'get_dataset("lung", cases=16, test_cases=2)' in code9
    for call in ('get_dataset("liver", cases=16, test_cases=2)', 'get_dataset("lung", cases=16, test_cases=2)',
                 'TrainConfig.from_file(PRESETS / "liver_2d_book.yaml")',
                 'train_cached(liver_cfg, liver_root, "liver_2d_book")',
                 "train_cached(lung_cfg, lung_root, lung_cfg.name)"):
        assert call in code12, call
    assert 'cfg = TrainConfig.from_file(PRESETS / "liver_2d_book.yaml")' in code6


def test_chapter12_evaluates_the_shipped_presets_and_trains_them_only_on_real_data():
    """liver_real and lung_25d_book (lung_real's network) train longer than the build allows: chapter 12
    loads their shipped, recipe-checked weights on phantoms, the preset's whole budget, and trains the
    presets only with CTSEG_DATA (the shipped weights know only phantoms)."""
    code = "\n".join(_cells(CH12, "code"))
    assert 'pretrained_run("liver_real")' in code and 'pretrained_run("lung_25d_book")' in code
    assert 'provenance("liver_real")["data_command"] == "ctseg synth --task liver --cases 30 --seed 0"' in code
    assert "assert rl_run.config.epochs == real_cfg.epochs" in code, "the preset's budget, not a shortened one"
    assert "RL_EPOCHS" not in code and "with_changes({\"epochs\"" not in code
    assert code.count("if setup.real_data") >= 1 and "train_cached(real_cfg," in code


@pytest.fixture(scope="module")
def lung_field():
    """Chapter 12's ``lung_field``: the library's, imported by its code cell (not redefined there)."""
    code = "\n".join(_cells(CH12, "code"))
    assert "def lung_field" not in code, "chapter 12 redefines lung_field: import it from ctseg_lib.postprocessing"
    assert re.search(r"^from ctseg_lib\.postprocessing import [^\n]*\blung_field\b", code, re.M), \
        "chapter 12 no longer imports lung_field from ctseg_lib.postprocessing"
    from ctseg_lib.postprocessing import lung_field

    return lung_field


def test_chapter12_lung_fields_keep_the_juxtapleural_nodule(lung_field):
    """The restriction may only delete false positives: the real nodule (it touches the pleura) must lie
    inside the closed lung fields, and — what the chapter's exercise shows — not inside unclosed ones."""
    s = load_sample("lidc_0001")
    hu, spacing = s.image.array, s.image.spacing
    nodule = s.labels["nodule_consensus"].array > 0
    field = lung_field(hu, spacing)
    assert (field & nodule).sum() / nodule.sum() > 0.95
    assert 3 < field.sum() * np.prod(spacing) / 1e6 < 6  # litres: both lungs and what they enclose
    assert not (field & is_fov_padding(hu)).any() and not (field & ~body_mask(hu)).any()
    unclosed = lung_field(hu, spacing, close_mm=0)
    assert (unclosed & nodule).sum() / nodule.sum() < 0.6
