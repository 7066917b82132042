"""Chapter 8 (liver) after issue 16, checked without executing it.

- the 2D vs 2.5D comparison runs with three seeds per model (issue 16: >= 3 where a comparison is the
  point), and the runs of seeds 1 and 2 differ from the seed-0 runs in ``seed`` and ``val_every`` only;
- every seed contributes its final epoch (``checkpoint="last"``), so validation's pick does not differ
  between the seeds that validate every second epoch and those that validate once;
- all six networks are tested on the chapter's fresh phantoms, postprocessed as the seed-0 models;
- the result is reported as mean +- sd over seeds with a paired bootstrap interval over scans, and the
  verdict is glued, never typed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat

from .test_book_rules import _assigned as assigned

ROOT = Path(__file__).resolve().parent.parent
CELLS = list(nbformat.read(ROOT / "book" / "08_liver.ipynb", as_version=4).cells)
CODE = "\n".join(c.source for c in CELLS if c.cell_type == "code")
TEXT = "\n".join(c.source for c in CELLS if c.cell_type == "markdown")


def _assigned(*names: str):
    return assigned([c.source for c in CELLS if c.cell_type == "code"], *names)


def test_three_seeds_per_model_differing_only_in_the_seed():
    seeds = ast.literal_eval(_assigned("SEEDS"))
    assert len(set(seeds)) >= 3 and 0 in seeds
    assert 'c = cfg if s == 0 else cfg.with_changes({"seed": s, "val_every": cfg.epochs})' in CODE
    assert 'checkpoint="last")' in CODE
    # seed 0 is the run the chapter trained above: same name, so train_cached finds it
    assert 'train_cached(c, liver_root, cfg.name if s == 0 else f"{cfg.name}_s{s}"' in CODE


def test_seed_runs_are_tested_on_the_fresh_phantoms_like_the_seed_0_models():
    assert "for cid in test_ids:" in CODE and "img, lab = test_cases[cid]" in CODE
    assert ('post, _ = apply_postprocessing(predict_case(run.model, run.config, run.meta, img), ["lcc", "restrict"],'
            in CODE)
    # a seed-0 prediction is reused only when it is of the same epoch
    assert 'if s == 0 and run.epoch == runs[name].epoch:' in CODE


def test_reported_over_seeds_with_a_paired_interval_and_a_glued_verdict():
    assert 'np.std([r[k] for r in sel], ddof=1)' in CODE
    assert 'delta = per_case["2.5D"].mean(axis=1) - per_case["2D"].mean(axis=1)' in CODE
    assert "delta_ci = bootstrap_ci(delta)" in CODE
    for key in ("seed_mean_2d", "seed_sd_2d", "seed_mean_25d", "seed_sd_25d", "seed_delta_lo", "seed_delta_hi",
                "seed_verdict"):
        assert f'glue("{key}"' in CODE and f"{{glue:text}}`{key}" in TEXT
    assert "Three seeds\nper model do not fit" not in TEXT and "## Three seeds per model" in TEXT
    summary = TEXT[TEXT.index("## Summary"):]
    assert "{glue:text}`seed_delta:" in summary and "{glue:text}`seed_range_max:" in summary


def test_every_seed_run_is_asserted_on_the_phantoms():
    """Floors for every run (liver) and for each model over its seeds (tumour), phantoms only."""
    liver_min, tumour_min = ast.literal_eval(_assigned("SEED_LIVER_MIN", "SEED_TUMOUR_MIN"))
    assert 0.8 <= liver_min < 0.9 and 0.1 <= tumour_min < 0.3
    assert 'assert r["liver Dice"] >= SEED_LIVER_MIN' in CODE
    assert 'assert v["tumour Dice"][0] >= SEED_TUMOUR_MIN' in CODE
