"""Tests of ctseg_lib.viz: rendering maths, static viewer HTML, GIF, figures, live viewer, `ctseg view`."""

from __future__ import annotations

import base64
import json
import re
import zlib

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from ctseg_lib.cli import main as cli_main  # noqa: E402
from ctseg_lib.data.nifti import save_nifti  # noqa: E402
from ctseg_lib.errors import CTSegError  # noqa: E402
from ctseg_lib.viz import (  # noqa: E402
    CompareViewer,
    SliceViewer,
    choose_slices,
    contour_mask,
    label_colours,
    render_rgb,
    window_to_grey,
)
from ctseg_lib.viz.viewer import hu_levels, quantise  # noqa: E402

EVIL = '</script><script>alert(1)</script>'


def phantom(shape=(32, 28, 16), noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full(shape, -1000.0)
    img[4:-4, 4:-4, :] = 40
    lab = np.zeros(shape, np.uint8)
    lab[10:20, 8:18, 5:11] = 1
    lab[13:16, 11:14, 7:9] = 2
    img[lab == 1] = 100
    return img + rng.normal(0, noise, shape) if noise else img, lab


def decode_cfg(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def unpack(blob: dict) -> np.ndarray:
    raw = base64.b64decode(blob["b64"])
    return np.frombuffer(zlib.decompress(raw) if blob["enc"] == "deflate" else raw, np.uint8)


# ---- render.py -------------------------------------------------------------------------------------
def test_window_presets_grey_levels():
    assert window_to_grey(np.array([-1000, -160, 40, 240, 3000]), "abdomen").tolist() == [0, 0, 128, 255, 255]
    assert window_to_grey(np.array([-20, 60, 140]), "liver").tolist() == [0, 128, 255]
    # lung L-600/W1500: -1350 HU would be black, but nothing real is below air; values < -1024 HU are FOV
    # padding shown as air (-1024 -> 326/1500*255 = 55.4), issue 18
    assert window_to_grey(np.array([-1350, -1024, -600, 150]), "lung").tolist() == [55, 55, 128, 255]
    assert window_to_grey(np.array([-60.0]), (40, 400)).tolist() == [64]  # 100/400*255 = 63.75
    with pytest.raises(CTSegError, match="unknown window"):
        window_to_grey(np.zeros(2), "brain2")
    with pytest.raises(CTSegError, match="width"):
        window_to_grey(np.zeros(2), (40, 0))


def test_fill_overlay_blends_label_colour():
    hu = np.full((3, 3), 40.0)  # grey 128
    lab = np.array([[0, 1, 2], [0, 0, 0], [0, 0, 0]])
    colours = {1: (0, 200, 100), 2: (250, 0, 0)}
    rgb = render_rgb(hu, "abdomen", lab, colours, "fill", 0.4)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 3, 3)
    assert rgb[0, 0].tolist() == [128, 128, 128]
    assert rgb[0, 1].tolist() == [77, 157, 117]  # 0.6*128 + 0.4*(0, 200, 100) = 76.8, 156.8, 116.8
    assert rgb[0, 2].tolist() == [177, 77, 77]   # 0.6*128 + 0.4*250 = 176.8
    assert render_rgb(hu, "abdomen", lab, colours, "fill", 1.0)[0, 2].tolist() == [250, 0, 0]


def test_contour_mode_draws_only_the_boundary():
    lab = np.zeros((9, 9), int)
    lab[2:7, 2:7] = 1
    rgb = render_rgb(np.full((9, 9), 40.0), "abdomen", lab, {1: (0, 255, 0)}, "contour")
    edge = contour_mask(lab == 1)
    assert edge.sum() == 16 and not edge[3:6, 3:6].any()
    assert (rgb[edge] == [0, 255, 0]).all() and (rgb[~edge] == 128).all()
    with pytest.raises(CTSegError, match="mode"):
        render_rgb(np.zeros((2, 2)), "abdomen", np.zeros((2, 2), int), mode="outline")
    with pytest.raises(CTSegError, match="opacity"):
        render_rgb(np.zeros((2, 2)), "abdomen", np.zeros((2, 2), int), opacity=2)
    with pytest.raises(CTSegError, match="shape"):
        render_rgb(np.zeros((2, 2)), "abdomen", np.zeros((3, 2), int))


def test_tumour_is_red_in_both_tasks():
    assert label_colours({1: "liver", 2: "tumour"})[2] == label_colours({1: "tumour"})[1] == (231, 76, 60)
    assert label_colours({1: "liver", 2: "tumour"})[1] != (231, 76, 60)


# ---- viewer.py -------------------------------------------------------------------------------------
def test_viewer_embeds_hu_and_labels_in_xyz_order():
    img, lab = phantom()
    img[30, 5, 3] = 900  # patient-right (high i), anterior-ish corner marker
    v = SliceViewer(img, (1.0, 1.2, 2.5), label=lab, labels={1: "liver", 2: "tumour"}, max_size=64)
    cfg = decode_cfg(v._repr_html_())
    nx, ny, nz = cfg["shape"]
    assert (nx, ny, nz) == (32, 28, 16) and cfg["hu"]["step"] == 1
    planes = unpack(cfg["hu"])
    codes = (planes[: nx * ny * nz].astype(np.uint16) << 8) | planes[nx * ny * nz:]
    hu = np.asarray(cfg["hu"]["table"])[codes].reshape(nz, ny, nx)
    assert hu[3, 5, 30] == 900 and hu[0, 0, 0] == -1000  # (z, y, x) layout, x fastest
    assert np.array_equal(unpack(cfg["overlays"][0]).reshape(nz, ny, nx), lab.transpose(2, 1, 0))
    assert cfg["start"] in range(5, 11)  # opens on a slice with foreground
    assert cfg["extent_mm"] == [32.0, pytest.approx(33.6), 40.0]
    assert cfg["labels"]["2"] == {"name": "tumour", "color": [231, 76, 60]}


def test_quantisation_error_is_half_a_step():
    table = hu_levels(4)
    x = np.linspace(-1024, 3071, 5001)
    err = np.abs(table[quantise(x, table)] - x)
    soft = (x >= -300) & (x < 496)
    assert err[soft].max() <= 2.0 and err.max() <= 8.0


def test_slice_and_size_caps():
    img, lab = phantom((40, 40, 60), noise=20)
    lab[:] = 0
    lab[10:20, 10:20, 20:30] = 1
    assert choose_slices(10, [lab[:, :, :10] > 0], 16).tolist() == list(range(10))
    zs = choose_slices(60, [lab > 0], 12)
    assert len(zs) == 12 and zs.min() >= 14 and zs.max() <= 35 and np.all(np.diff(zs) > 0)
    assert choose_slices(60, [np.zeros_like(lab, bool)], 4).tolist() == [0, 20, 39, 59]
    big = SliceViewer(img, (1, 1, 1), label=lab, max_slices=60, max_size=40)
    small = SliceViewer(img, (1, 1, 1), label=lab, max_slices=60, max_size=40, max_bytes=120_000)
    assert big._config["hu"]["step"] == 1
    assert small.html_size <= 120_000 < big.html_size
    assert SliceViewer(img, (1, 1, 1), max_slices=8, max_size=16)._config["shape"] == [16, 16, 8]


def test_html_escaping_no_external_urls_and_unique_ids():
    img, lab = phantom()
    labels = {1: EVIL, 2: '"onload="alert(2)'}
    v = CompareViewer(img, (1, 1, 1), panels={EVIL: lab, '"onload="x': lab}, labels=labels, title=EVIL)
    html = v._repr_html_()
    assert "<script>alert" not in html and '"onload="' not in html
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html) and "http://" not in html
    assert "https://" not in html
    cfg = decode_cfg(html)
    assert cfg["labels"]["1"]["name"] == EVIL and cfg["title"] == EVIL  # round-trips as plain text
    ids = re.findall(r'id="(ctv-[0-9a-f]+)"', html + v._repr_html_())
    assert len(ids) == 2 and ids[0] != ids[1]


def test_compare_viewer_layout_and_save(tmp_path):
    img, lab = phantom()
    v = CompareViewer(img, (1, 1, 2), panels={"ground truth": lab, "2D U-Net": lab * 0, "2.5D U-Net": lab})
    cfg = v._config
    assert [p["title"] for p in cfg["panels"]] == ["image", "ground truth", "2D U-Net", "2.5D U-Net"]
    assert [p["overlays"] for p in cfg["panels"]] == [[], [0], [1], [2]]
    out = v.save(tmp_path / "sub" / "c.html")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and 'class="ctv"' in text
    assert not list(out.parent.glob(".tmp-*"))


def test_viewer_input_errors():
    img, lab = phantom()
    with pytest.raises(CTSegError, match="shape"):
        SliceViewer(img, (1, 1, 1), label=lab[:, :, :3])
    with pytest.raises(CTSegError, match="3D"):
        SliceViewer(img[:, :, 0], (1, 1, 1))
    with pytest.raises(CTSegError, match="spacing"):
        SliceViewer(img, (1, 0, 1))
    with pytest.raises(CTSegError, match="mode"):
        SliceViewer(img, (1, 1, 1), mode="x")
    with pytest.raises(CTSegError, match="opacity"):
        SliceViewer(img, (1, 1, 1), opacity=-1)
    with pytest.raises(CTSegError, match="unknown window"):
        SliceViewer(img, (1, 1, 1), window="brain")
    with pytest.raises(CTSegError, match="panel"):
        CompareViewer(img, (1, 1, 1), panels={})
    assert SliceViewer(img, (1, 1, 1), window=(50, 350))._config["window"] == "custom"


# ---- gif.py ----------------------------------------------------------------------------------------
def test_gif_frames_in_inferior_to_superior_order(tmp_path):
    from PIL import Image, ImageSequence

    from ctseg_lib.viz.gif import gif_frames, save_gif

    img = np.zeros((12, 10, 5)) + (np.arange(5) * 80 - 160)[None, None, :]  # brighter towards the head
    img[11, 0, :] = 3000  # patient right (max i), anterior? no: j=0 is posterior
    lab = np.zeros(img.shape, np.uint8)
    lab[2:5, 2:5, 2] = 1
    frames = gif_frames(img, (1, 1, 1), label=lab, max_size=12)
    assert frames[0].shape == (10, 12, 3)
    assert frames[0][9, 0].tolist() == [255, 255, 255]  # right on the viewer's left, posterior at the bottom
    path = save_gif(tmp_path / "case.gif", img, (1, 1, 1), label=lab, pred=lab, fps=5, max_size=12)
    with Image.open(path) as g:
        seq = [np.asarray(f.convert("L"), float) for f in ImageSequence.Iterator(g)]
        assert g.info["duration"] == 200
    assert len(seq) == 5 and seq[0].shape == (10, 24)
    means = [s[:, 12:][:, 1:-1].mean() for s in seq]
    assert means == sorted(means) and means[0] < means[-1]
    with pytest.raises(CTSegError, match="fps"):
        save_gif(tmp_path / "x.gif", img, (1, 1, 1), fps=0)
    with pytest.raises(CTSegError, match="shape"):
        gif_frames(img, (1, 1, 1), label=lab[:, :, :2])


# ---- figures.py ------------------------------------------------------------------------------------
def test_figures_have_labelled_axes(tmp_path):
    import matplotlib.pyplot as plt

    from ctseg_lib.viz.figures import hu_histogram, montage, plot_training_curves, show_slice

    img, lab = phantom()
    fig, ax = plt.subplots()
    im = show_slice(ax, img, (1.0, 2.0, 3.0), 7, "abdomen", lab, {1: "liver", 2: "tumour"})
    assert "mm" in ax.get_xlabel() and "mm" in ax.get_ylabel()
    assert im.get_extent() == [0, 32.0, 56.0, 0]  # physical aspect: 28 rows × 2 mm
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["liver", "tumour"]
    with pytest.raises(CTSegError, match="slice index"):
        show_slice(ax, img, (1, 1, 1), 99)
    assert len(montage(img, (1, 1, 1), [2, 7, 9], label=lab).axes) == 3
    hist = [{"epoch": 1, "train_loss": 1.0, "val_dice_liver": 0.2},
            {"epoch": 2, "train_loss": 0.5, "val_dice_liver": 0.6}]
    f = plot_training_curves(hist)
    assert f.axes[0].get_xlabel() == "epoch" and "Dice" in f.axes[1].get_ylabel()
    csv = tmp_path / "h.csv"
    csv.write_text("epoch,train_loss,val_dice_tumour\n1,0.9,0.1\n2,0.7,\n")
    assert [line.get_label() for line in plot_training_curves(csv).axes[1].lines] == ["tumour"]
    csv.write_text("epoch,train_loss\n1,abc\n")
    with pytest.raises(CTSegError, match="non-numeric"):
        plot_training_curves(csv)
    with pytest.raises(CTSegError, match="empty"):
        plot_training_curves([])
    ax = hu_histogram(img, lab, {1: "liver", 2: "tumour"})
    assert ax.get_xlabel() == "intensity (HU)" and len(ax.get_legend().get_texts()) == 3
    plt.close("all")


# ---- live.py ---------------------------------------------------------------------------------------
def test_live_viewer_redraws_on_changes():
    pytest.importorskip("ipywidgets")
    from ctseg_lib.viz.live import live_viewer

    img, lab = phantom(noise=5)
    box = live_viewer(img, (1, 1, 2), label=lab, pred={"net": lab}, labels={1: "liver", 2: "tumour"})
    image = box.children[0]
    z = box.children[2].children[0]
    assert z.value in range(5, 11)
    first = image.value
    z.value = 0
    assert image.value != first
    at0 = image.value
    lvl = box.children[3].children[1]
    lvl.value = -600
    assert image.value != at0
    z.value = 8
    shown = image.value
    box.children[4].children[0].value = False  # hide ground truth
    assert image.value != shown
    with pytest.raises(CTSegError, match="shape"):
        live_viewer(img, (1, 1, 1), label=lab[:2])


# ---- cli/view.py -----------------------------------------------------------------------------------
def test_cli_view_writes_viewer(tmp_path, capsys):
    img, lab = phantom()
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    save_nifti(tmp_path / "img.nii.gz", img.astype(np.int16), aff)
    save_nifti(tmp_path / "lab.nii.gz", lab, aff)
    save_nifti(tmp_path / "bad.nii.gz", lab[:, :, :4], aff)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": EVIL}}))
    out = tmp_path / "v.html"
    rc = cli_main(["view", str(tmp_path / "img.nii.gz"), "--label", str(tmp_path / "lab.nii.gz"),
                   "--pred", str(tmp_path / "lab.nii.gz"), "--labels", str(tmp_path / "dataset.json"),
                   "--title", "case 7", "--out", str(out)])
    assert rc == 0 and "MB" in capsys.readouterr().out
    cfg = decode_cfg(out.read_text())
    assert [o["name"] for o in cfg["overlays"]] == ["ground truth", "lab"]
    assert cfg["labels"]["2"]["name"] == EVIL and "<script>alert" not in out.read_text()
    assert cfg["pos_mm"][2][1] == 2.0  # world z from the affine
    rc = cli_main(["view", str(tmp_path / "img.nii.gz"), "--label", str(tmp_path / "bad.nii.gz"), "--out", str(out)])
    assert rc == 2 and "does not match" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    rc = cli_main(["view", str(tmp_path / "img.nii.gz"), "--labels", str(tmp_path / "broken.json"), "--out", str(out)])
    assert rc == 2 and "not valid JSON" in capsys.readouterr().err
    rc = cli_main(["view", str(tmp_path / "img.nii.gz"), "--window", "nope", "--out", str(out)])
    assert rc == 2 and "unknown window" in capsys.readouterr().err


def test_viewer_opens_on_the_ground_truth_not_the_largest_false_positive():
    img = np.zeros((16, 16, 20), np.float32)
    gt = np.zeros(img.shape, np.uint8)
    gt[5:7, 5:7, 4] = 1  # a small lesion on slice 4
    pred = np.zeros(img.shape, np.uint8)
    pred[2:12, 2:12, 15] = 1  # a large false positive on slice 15, missing the lesion
    cfg = decode_cfg(SliceViewer(img, (1.0, 1.0, 1.0), label=gt, pred=pred)._repr_html_())
    assert cfg["zs"][cfg["start"]] == 4
    cfg = decode_cfg(SliceViewer(img, (1.0, 1.0, 1.0), pred=pred)._repr_html_())  # no ground truth
    assert cfg["zs"][cfg["start"]] == 15
