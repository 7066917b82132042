"""Headless-Chromium tests of the static viewer (offline): it loads, draws, reacts, stays local.

Skipped when chromium/chromedriver/selenium are missing, unless CTSEG_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ctseg_lib.cli import main as cli_main
from ctseg_lib.data.nifti import save_nifti
from ctseg_lib.viz import CompareViewer, SliceViewer

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("browser_check", ROOT / "tools" / "browser_check.py")
bc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bc)

pytestmark = pytest.mark.browser
EVIL = '</script><script>alert(1)</script>'


@pytest.fixture(scope="module")
def driver():
    if not bc.have_browser():
        if os.environ.get("CTSEG_REQUIRE_BROWSER") == "1":
            pytest.fail("CTSEG_REQUIRE_BROWSER=1 but chromium, chromedriver or selenium is missing")
        pytest.skip("chromium / chromedriver / selenium not installed")
    with bc.chrome() as d:
        yield d


def volume(shape=(40, 32, 20)):
    """Body, a 'liver' in slices 6..13 with a 'tumour' inside, and a bright rod at patient right."""
    img = np.full(shape, -1000.0)
    img[3:-3, 3:-3, :] = 40
    img[:, :, :] += np.arange(shape[2])[None, None, :] * 3  # every slice differs slightly
    lab = np.zeros(shape, np.uint8)
    lab[8:22, 8:20, 6:14] = 1
    lab[12:17, 11:16, 8:11] = 2
    img[lab == 1] = 110
    img[lab == 2] = 60
    img[shape[0] - 2, 10:20, :] = 1500  # patient right (high i)
    return img, lab


def test_cli_viewer_in_browser(tmp_path, driver):
    img, lab = volume()
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    save_nifti(tmp_path / "img.nii.gz", img.astype(np.int16), aff)
    save_nifti(tmp_path / "lab.nii.gz", lab, aff)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": EVIL}}))
    site = tmp_path / "site"
    assert cli_main(["view", str(tmp_path / "img.nii.gz"), "--label", str(tmp_path / "lab.nii.gz"),
                     "--labels", str(tmp_path / "dataset.json"), "--out", str(site / "v.html")]) == 0
    with bc.serve(site) as base:
        problems = bc.check_page(driver, base + "v.html", screenshot=Path("/tmp/viewer.png"))
        assert problems == []
        state = bc._canvases(driver)[0][0]
        assert (state["w"], state["h"]) == (40, 32)
        # Radiological orientation: the rod at patient right is drawn in the viewer's left columns.
        cols = driver.execute_script("""
            var c = document.querySelector('canvas.ctv-canvas');
            var d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
            var left = 0, right = 0;
            for (var r = 0; r < c.height; r++) { left = Math.max(left, d.data[4 * (r * c.width + 1)]);
                                                 right = Math.max(right, d.data[4 * (r * c.width + c.width - 2)]); }
            return [left, right];""")
        assert cols[0] == 255 and cols[1] < 255
        legend = driver.find_elements("css selector", ".ctv-leg")[1].text
        assert legend == EVIL  # shown as text, not executed


def test_two_viewers_on_one_page(tmp_path, driver):
    img, lab = volume()
    a = SliceViewer(img, (1, 1, 2), label=lab, pred={"net": np.roll(lab, 2, axis=0)}, labels={1: "liver", 2: "tumour"},
                    mode="contour", title="A")
    b = CompareViewer(img, (1, 1, 2), panels={"ground truth": lab, "model": lab * 0 + (lab > 0)},
                      labels={1: "liver", 2: "tumour"}, title="B")
    site = tmp_path / "site"
    site.mkdir()
    (site / "two.html").write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
                                   f"</head><body>{a._repr_html_()}{b._repr_html_()}{a._repr_html_()}</body></html>")
    with bc.serve(site) as base:
        assert bc.check_page(driver, base + "two.html") == []
        canv = bc._canvases(driver)
        assert [len(c) for c in canv] == [1, 3, 1]
        # moving the first viewer's slider leaves the others alone
        before = bc._canvases(driver)
        slider = driver.find_elements("css selector", "input.ctv-slider")[0]
        driver.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'));", slider)
        after = bc._canvases(driver)
        assert after[0][0]["hash"] != before[0][0]["hash"]
        assert after[1] == before[1] and after[2] == before[2]


def test_browser_check_cli_reports_problems(tmp_path, driver):
    site = tmp_path / "site"
    site.mkdir()
    (site / "bad.html").write_text("<html><head><script src='https://cdn.example.org/x.js'></script></head>"
                                   "<body><div class='ctv' id='ctv-x'></div></body></html>")
    with bc.serve(site) as base:
        problems = bc.check_page(driver, base + "bad.html", timeout=2)
    assert any("did not finish loading" in p for p in problems)
    assert any("non-local host: https://cdn.example.org/x.js" in p for p in problems)
    assert bc.main([str(site), "--page", "missing.html"]) == 1
    assert bc.main([str(tmp_path / "nope")]) == 1
