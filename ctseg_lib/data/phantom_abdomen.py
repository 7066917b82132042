"""Synthetic contrast-enhanced (portal-venous) abdominal CT with liver and liver tumours (MSD Task03).

Anatomical frame (mm, RAS+): ``x`` → patient's Right, ``y`` → Anterior, ``z`` → Superior; the body
axis is ``x = y = 0`` and ``z = 0`` is the top of the right hemidiaphragm.  So the liver sits at
``x > 0`` under the right dome, the spleen at ``x < 0``, the spine at ``y < 0``.

Typical attenuation in the portal-venous phase (e.g. Radiopaedia "Hounsfield unit"; Lee et al.,
*Computed Body Tomography with MRI Correlation*): fat ≈ -100, muscle 40-60, liver 90-120, spleen
100-130, aorta 150-250, renal cortex 150-200, hypodense metastases / HCC wash-out 20-70 HU, cortical
bone 700-1000.  Labels follow MSD: 1 = liver (parenchyma incl. its vessels), 2 = tumour.

What a real study varies is drawn per case (the SynthSeg idea: randomise what the model must not
rely on; Billot et al., *Medical Image Analysis* 86, 102789, 2023): the **contrast phase**
(:data:`PHASES`: organ and vessel HU), and the scanned range, which reaches from the heart and lung
bases down to the **pelvis** (iliac wings, sacrum, hip joints, bladder, rectum, gluteal muscles).
"""

from __future__ import annotations

import numpy as np

from .phantom_shapes import (
    Canvas,
    Grid,
    body_section,
    capsule,
    ellipsoid,
    organ_streams,
    paint_ribs,
    paint_spine,
    paint_table,
    posterior_angle,
    smooth_noise,
)

#: Contrast phases: probability and HU ranges (uniform) of the liver, the aorta (blood pool), the
#: renal cortex, the liver's vessels relative to the parenchyma and how much darker a hypodense
#: tumour core is than the parenchyma.  Typical values, e.g. Bae, *Radiology* 256, 32-61 (2010)
#: (contrast enhancement, its timing).  MSD Task03 / LiTS are contrast-enhanced CT, in the main
#: portal-venous, so the phantoms draw portal-venous (85 %) and delayed (15 %) scans.  Arterial and
#: non-contrast scans are in the table for experiments (set ``p``) but not drawn: measured, the
#: book's 16-phantom liver model scored liver Dice 0.00 on a fresh arterial phantom when 15 % of
#: its training phantoms were arterial — about 2 scans are too few to learn a phase from.
PHASES: dict[str, dict] = {
    "non-contrast": {"p": 0.0, "liver": (45, 70), "aorta": (35, 50), "kidney": (25, 40),
                     "vessels": (-15, -5), "tumour_drop": (15, 40)},
    "arterial": {"p": 0.0, "liver": (65, 95), "aorta": (250, 400), "kidney": (180, 260),
                 "vessels": (0, 30), "tumour_drop": (20, 60)},
    "portal-venous": {"p": 0.85, "liver": (90, 150), "aorta": (140, 220), "kidney": (150, 210),
                      "vessels": (30, 60), "tumour_drop": (25, 85)},
    "delayed": {"p": 0.15, "liver": (80, 110), "aorta": (100, 150), "kidney": (120, 170),
                "vessels": (0, 20), "tumour_drop": (25, 70)},
}


def sample_phase(rng: np.random.Generator) -> dict:
    """One contrast phase: ``{"name": ..., "liver": HU, "aorta": HU, ...}`` with every range drawn."""
    names = list(PHASES)
    name = names[int(rng.choice(len(names), p=[PHASES[n]["p"] for n in names]))]
    out = {"name": name}
    for key, value in PHASES[name].items():
        if key in ("liver", "aorta", "kidney"):
            out[key] = float(rng.uniform(*value))
        elif key != "p":
            out[key] = value
    return out


def dome(g: Grid, ac: float, bc: float, left_drop: float) -> np.ndarray:
    """Height (mm) of the diaphragm ``(X, Y)``: two domes, the right one higher (over the liver)."""
    x, y = g.x[:, None], g.y[None, :]
    right = -70 * ((x - 0.35 * ac) / ac) ** 2 - 45 * ((y + 0.1 * bc) / bc) ** 2
    left = -left_drop - 70 * ((x + 0.4 * ac) / ac) ** 2 - 45 * ((y + 0.1 * bc) / bc) ** 2
    return np.maximum(right, left)


def draw_abdomen(g: Grid, rng: np.random.Generator, a: float, b: float) -> Canvas:
    """Paint one abdomen with body half-axes ``a`` (lateral) × ``b`` (antero-posterior) mm."""
    cv = Canvas(g.shape)
    stream = organ_streams(rng)  # one random stream per structure (see organ_streams)
    body = stream("body")
    fat, wall = body.uniform(8, 35) * a / 165, body.uniform(7, 14)
    ac, bc = a - fat - wall, b - fat - wall  # half-axes of the abdominal cavity
    rho = body_section(g, a, b)
    rho_m = body_section(g, a - fat, b - fat)
    rho_c = body_section(g, ac, bc)
    full = (slice(None),) * 3
    fat_hu = body.uniform(-115, -90)
    cv.paint(full, (rho <= 1)[..., None], fat_hu)
    cv.paint(full, (rho_m <= 1)[..., None], body.uniform(40, 60))  # abdominal wall muscles
    cavity = (rho_c <= 1)[..., None]
    cv.paint(full, cavity, fat_hu + 10)  # intra-abdominal fat
    yv = -b + fat + 62  # vertebral body centre: behind it canal, laminae, paraspinal muscles
    spine = stream("spine")
    rv = spine.uniform(17, 22)
    phase = sample_phase(stream("contrast phase"))
    z_crest = stream("pelvis").uniform(-260, -210)  # iliac crests (about the L4 level)

    # Thorax above the diaphragm: lung bases, heart.  Below: abdominal organs.
    zd = dome(g, ac, bc, stream("diaphragm").uniform(5, 20))[..., None]
    z = g.z[None, None, :]
    above = cavity & (z > zd)
    lung_rng = stream("lung")
    lung = lung_rng.uniform(-880, -820) + 15 * smooth_noise(lung_rng, g.shape, (8, 8, 4))
    cv.paint(full, above, lung)
    cv.paint(full, cavity & (np.abs(z - zd + 2) < 2.5), 50)  # diaphragm muscle
    heart = stream("heart")
    blood = phase["aorta"] * heart.uniform(0.75, 1.0)
    myocardium = 45 + 0.3 * (blood - 40) + heart.uniform(-10, 10)  # enhances less than the blood pool
    hc = (-0.2 * ac + heart.uniform(-15, 15), 0.25 * bc, 55 + heart.uniform(-10, 15))
    for scale, hu in ((1.12, fat_hu), (1.0, myocardium), (0.72, blood)):  # pericardial fat, wall, chambers
        sl, q = ellipsoid(g, hc, (0.45 * ac * scale, 0.5 * bc * scale, 60 * scale), angle=0.5)
        if sl is not None:
            cv.paint(sl, (q <= 1) & (g.z[None, None, sl[2]] > zd[sl[0], sl[1]]), hu)

    _bowel(cv, g, stream("bowel"), ac, bc, yv)
    # Stomach (left upper quadrant) with an air-fluid level: gas rises anteriorly in a supine patient.
    stomach = stream("stomach")
    c = (-0.4 * ac, 0.2 * bc, -60)
    sl, q = ellipsoid(g, c, (0.3 * ac, 0.35 * bc, 45), angle=0.4)
    if sl is not None:
        _, y, _ = g.coords(sl)
        cv.paint(sl, q <= 1, 45)
        inner = q <= 0.8
        cv.paint(sl, inner, stomach.uniform(0, 25))
        cv.paint(sl, inner & (y > c[1] + stomach.uniform(0, 0.25) * bc), -1000)

    liver = stream("liver")
    liver_hu = phase["liver"]
    _liver(cv, g, liver, ac, bc, zd, liver_hu, phase["vessels"])
    _gallbladder(cv, g, stream("gallbladder"), ac, bc)
    draw_tumours(cv, g, stream("tumours"), liver_box(g, ac, bc), liver_hu, phase["tumour_drop"])
    spleen = stream("spleen")
    spleen_hu = liver_hu + spleen.uniform(-10, 25)  # as bright as the liver, or brighter (portal-venous)
    size = (spleen.uniform(0.16, 0.3) * ac, spleen.uniform(0.3, 0.5) * bc, spleen.uniform(40, 65))
    sl, q = ellipsoid(g, (-0.62 * ac, -0.3 * bc, -55), size, angle=-0.5)
    if sl is not None:
        cv.paint(sl, (q <= 1) & (g.z[None, None, sl[2]] < zd[sl[0], sl[1]] - 3), spleen_hu)
    kidney = stream("kidneys")
    for side, zc in ((1, -165), (-1, -150)):  # the right kidney lies lower, pushed down by the liver
        c = (side * (rv + 42), yv + 8, zc + kidney.uniform(-15, 15))
        sl, q = ellipsoid(g, c, (26, 22, 55), angle=side * 0.5)
        if sl is not None:
            cortex = phase["kidney"] * kidney.uniform(0.9, 1.1)
            cv.paint(sl, q <= 1, cortex)
            cv.paint(sl, q <= 0.45, cortex * kidney.uniform(0.6, 0.8))  # medulla
            x, _, _ = g.coords(sl)
            cv.paint(sl, (q <= 0.35) & (side * (x - c[0]) < -8), fat_hu)  # renal sinus fat
    # Great vessels: aorta left-anterior of the spine, IVC to the right (it runs behind the liver).
    vessels = stream("vessels")
    aorta_hu = phase["aorta"] * vessels.uniform(0.9, 1.1)
    for cx, cy, r, hu, top in ((-14, yv + rv + 14, vessels.uniform(10, 13), aorta_hu, g.z[-1] + 5),
                               (24, yv + rv + 16, vessels.uniform(10, 13), liver_hu + 15, 20.0)):
        sl, d = capsule(g, (cx, cy, g.z[0] - 5), (cx, cy, top), r)
        if sl is not None:
            cv.paint(sl, d <= r, hu)
    for side in (1, -1):  # psoas muscles, growing caudally
        sl, q = ellipsoid(g, (side * (rv + 18), yv + 2, -260), (22, 20, 150))
        if sl is not None:
            cv.paint(sl, q <= 1, 50)
        sl, q = ellipsoid(g, (side * 38, yv - rv - 22, -100), (32, 26, 400))  # paraspinal muscles
        if sl is not None:
            cv.paint(sl, q <= 1, 55)
    _pelvis(cv, g, stream("pelvis"), ac, bc, yv, z_crest)
    paint_spine(cv, g, yv, rv, spine, z_min=z_crest - 40)  # the sacrum continues below
    ribs = stream("ribs")
    rm, reff = body_section(g, a - fat, b - fat), np.hypot(a - fat, b - fat) / np.sqrt(2)
    z_post = np.arange(8) * -ribs.uniform(24, 28) + ribs.uniform(40, 60)
    paint_ribs(cv, g, rm, reff, posterior_angle(g, a, b), z_post, ribs.uniform(110, 150),
               np.linspace(2.9, 1.2, 8), ribs)
    paint_table(cv, g, -b, stream("table"))
    return cv


def liver_box(g: Grid, ac: float, bc: float) -> tuple[slice, ...] | None:
    """The box (array slices) that holds the liver of a cavity with half-axes ``ac`` × ``bc`` mm."""
    return g.box((-0.6 * ac, -bc, -230.0), (ac, bc, 5.0))


def _liver(cv: Canvas, g: Grid, rng, ac: float, bc: float, zd: np.ndarray, hu: float,
           vessel_offset: tuple[float, float] = (30, 60)) -> None:
    """Liver (right lobe + left lobe, irregular outline, vessels), label 1."""
    sl = liver_box(g, ac, bc)
    if sl is None:
        return
    x, y, z = g.coords(sl)
    right = ((x - 0.5 * ac) / (0.5 * ac)) ** 2 + ((y + 0.08 * bc) / (0.75 * bc)) ** 2 + ((z + 80) / 82) ** 2
    left = ((x + 0.02 * ac) / (0.45 * ac)) ** 2 + ((y - 0.38 * bc) / (0.36 * bc)) ** 2 + ((z + 45) / 38) ** 2
    shape = np.minimum(right, left) + 0.06 * smooth_noise(rng, right.shape, (24, 24, 10))
    rho_c = body_section(g, ac - 2, bc - 2)[sl[0], sl[1], None]
    mask = (shape <= 1) & (rho_c <= 1) & (z < zd[sl[0], sl[1]] - 4)
    tex = hu + 5 * smooth_noise(rng, mask.shape, (3, 3, 2))
    n1, n2 = smooth_noise(rng, mask.shape, (10, 10, 5)), smooth_noise(rng, mask.shape, (10, 10, 5))
    vessels = (np.abs(n1) < 0.12) & (np.abs(n2) < 0.3)  # portal / hepatic veins: tube-like curves
    tex = np.where(vessels, hu + rng.uniform(*vessel_offset), tex)
    cv.paint(sl, mask, tex, label=1)


def _gallbladder(cv: Canvas, g: Grid, rng, ac: float, bc: float) -> None:
    """In 70 % of cases: bile ≈ 0-20 HU under the liver, not part of the liver label."""
    if rng.random() < 0.7:
        gc = (0.15 * ac, 0.45 * bc, -115 + rng.uniform(-10, 10))
        gsl, q = ellipsoid(g, gc, (15, 20, 35), angle=0.6)
        if gsl is not None:
            cv.paint(gsl, q <= 1, rng.uniform(0, 20))


def draw_tumours(cv: Canvas, g: Grid, rng: np.random.Generator, sl: tuple[slice, ...] | None,
                 liver_hu: float, drop: tuple[float, float] = (25, 85)) -> None:
    """Paint 0-6 lobulated hypodense lesions (8-60 mm across), some with an enhancing rim; label 2 ⊂ liver.

    ``cv`` is the canvas (HU float, label uint8, both ``(X, Y, Z)``) whose label 1 inside the box ``sl``
    is the liver; ``g`` its grid (mm coordinates); ``liver_hu`` the parenchyma HU; a core is
    ``uniform(*drop)`` HU darker than the parenchyma (the contrast phase sets ``drop``). Painted in place.

    Sizes are log-uniform in radius (4-30 mm): sub-centimetre lesions, frequent in LiTS, are left
    out because a CPU-sized model at ~2 mm pixels cannot resolve them in a few minutes of training.
    """
    n = int(rng.choice(7, p=[0.2, 0.25, 0.2, 0.12, 0.1, 0.07, 0.06]))
    if sl is None:
        return
    sub = cv.lab[sl]
    idx = np.flatnonzero(sub == 1)
    if n == 0 or idx.size == 0:
        return
    for _ in range(n):
        i, j, k = np.unravel_index(idx[rng.integers(idx.size)], sub.shape)
        c = np.array([g.x[sl[0]][i], g.y[sl[1]][j], g.z[sl[2]][k]])
        r = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0))))
        lobes = [(c, r)] + [(c + rng.normal(0, 0.45 * r, 3), r * rng.uniform(0.4, 0.75))
                            for _ in range(int(rng.integers(0, 4)))]
        # Hypodense core, `drop` HU below the parenchyma but not below 10 HU (near water is a cyst —
        # not labelled tumour in LiTS); 30 % of lesions > 12 mm across have a thin (~10 % of the
        # radius) enhancing rim, brighter than the liver.
        core_hu, rim = max(liver_hu - rng.uniform(*drop), 10.0), r > 6 and rng.random() < 0.3
        for lc, lr in lobes:
            tsl, q = ellipsoid(g, lc, (lr, lr * rng.uniform(0.8, 1.2), lr * rng.uniform(0.8, 1.2)))
            if tsl is None:
                continue
            inliver = cv.lab[tsl] > 0
            cv.paint(tsl, inliver & (q <= 1), liver_hu + 30 if rim else core_hu, label=2)
            cv.paint(tsl, inliver & (q <= (0.8 if rim else 0.35)), core_hu - (15 if r > 12 else 0), label=2)


def _bowel(cv: Canvas, g: Grid, rng, ac: float, bc: float, yv: float) -> None:
    """Colon (ascending/descending, gas + stool) and small-bowel loops filling the lower abdomen."""
    for side in (1, -1):
        c0 = (side * 0.72 * ac, -0.05 * bc, -330)
        sl, d = capsule(g, c0, (c0[0], c0[1] + 0.15 * bc, -110), 24)
        if sl is not None:
            cv.paint(sl, d <= 24, 45)
            stool = rng.uniform(-250, 0) + 200 * smooth_noise(rng, d.shape, (3, 3, 2))
            cv.paint(sl, d <= 20, np.where(stool < -180, -1000, stool))
    zmin = min(max(float(g.z[0]) - 20, -400.0), -100.0)
    for _ in range(int(rng.integers(30, 50))):
        c = (rng.uniform(-0.7, 0.7) * ac, rng.uniform(-0.1, 0.85) * bc, rng.uniform(zmin, -90))
        r = rng.uniform(9, 17)
        if c[1] < yv + 30 and abs(c[0]) < 60:
            continue
        sl, q = ellipsoid(g, c, (r, r * rng.uniform(0.6, 1.2), r * rng.uniform(0.8, 2.0)), angle=rng.uniform(0, 3))
        if sl is None:
            continue
        cv.paint(sl, q <= 1, rng.uniform(35, 55))  # bowel wall
        content = rng.choice(3, p=[0.5, 0.25, 0.25])
        inner = q <= 0.6
        if content == 0:
            cv.paint(sl, inner, rng.uniform(5, 25))  # fluid
        elif content == 1:
            cv.paint(sl, inner, -1000)  # gas
        else:
            _, y, _ = g.coords(sl)
            cv.paint(sl, inner, rng.uniform(5, 25))
            cv.paint(sl, inner & (y > c[1]), -1000)  # air-fluid level


def _pelvis(cv: Canvas, g: Grid, rng: np.random.Generator, ac: float, bc: float, yv: float,
            z_crest: float) -> None:
    """Pelvis below the iliac crests at ``z_crest`` mm: gluteal muscles, iliac wings, sacrum, hip
    joints with the femoral necks, pubic rami, bladder (urine 0-20 HU) and rectum (gas, stool).

    Shapes are coarse (ellipsoid shells and tubes); what matters for a liver model is that the
    bone, muscle, fluid and bowel of a real lower abdomen appear in its training data.
    """
    if g.z[0] > z_crest + 40:
        return  # the scan ends above the pelvis
    cortical, cancellous = rng.uniform(600, 900), rng.uniform(150, 300)
    for side in (1, -1):
        sl, q = ellipsoid(g, (side * 0.5 * ac, yv - 5, z_crest - 110), (0.45 * ac, 0.45 * bc, 110))
        if sl is not None:  # gluteal muscles, behind the pelvic bones
            _, y, z = g.coords(sl)
            cv.paint(sl, (q <= 1) & (y < yv + 15) & (z < z_crest - 10), rng.uniform(40, 60))
        c = (side * 0.42 * ac, yv + 30, z_crest - 55)
        sl, q = ellipsoid(g, c, (0.4 * ac, 0.45 * bc, 60), angle=side * 0.35)
        if sl is not None:  # iliac wing: the lateral, posterior part of an ellipsoid shell
            x, y, z = g.coords(sl)
            wing = (q <= 1) & (q > 0.8) & (side * (x - c[0]) > -0.15 * ac) & (y < c[1] + 0.25 * bc) & (z > c[2] - 45)
            cv.paint(sl, wing, cortical)
        h = np.array([side * 0.6 * ac, yv + 55, z_crest - 110 + rng.uniform(-10, 10)])
        rh = rng.uniform(21, 26)
        shaft_end = (side * 0.88 * ac, yv + 45, h[2] - 100)
        for p0, p1, r in ((h, h, rh), (h, shaft_end, 0.6 * rh)):  # femoral head, then neck and shaft
            sl, d = capsule(g, p0, p1, r)
            if sl is not None:
                cv.paint(sl, d <= r, cortical)
                cv.paint(sl, d <= r - 3, cancellous)
        sl, d = capsule(g, h + (0, 25, -5), (0, 0.75 * bc, h[2] - 25), 8)  # pubic ramus
        if sl is not None:
            cv.paint(sl, d <= 8, cortical)
    sl, q = ellipsoid(g, (0, yv - 5, z_crest - 70), (48, 20, 60), angle=0.0)
    if sl is not None:  # sacrum
        _, _, z = g.coords(sl)
        cv.paint(sl, (q <= 1) & (z < z_crest - 30), cortical)
        cv.paint(sl, (q <= 0.7) & (z < z_crest - 30), cancellous)
    rb = (rng.uniform(25, 55), rng.uniform(22, 42), rng.uniform(22, 40))
    sl, q = ellipsoid(g, (0, 0.4 * bc, z_crest - 120), rb)
    if sl is not None:  # bladder: wall, urine
        cv.paint(sl, q <= 1, 40)
        cv.paint(sl, q <= 0.8, rng.uniform(0, 20))
    rr = rng.uniform(12, 18)
    sl, d = capsule(g, (0, yv + 38, z_crest - 170), (0, yv + 32, z_crest - 60), rr)
    if sl is not None:  # rectum and sigmoid: wall, stool with gas bubbles
        cv.paint(sl, d <= rr, 45)
        stool = rng.uniform(-250, 0) + 200 * smooth_noise(rng, d.shape, (3, 3, 2))
        cv.paint(sl, d <= rr - 4, np.where(stool < -180, -1000, stool))
