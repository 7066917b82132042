"""Synthetic chest CT with one lung tumour per case (MSD Task06_Lung: label 1 = cancer).

Anatomical frame (mm, RAS+): ``x`` → patient's Right, ``y`` → Anterior, ``z`` → Superior, body axis
at ``x = y = 0`` and ``z = 0`` at the carina.  Lungs ≈ -850 HU (denser posteriorly: the dependent
gradient of a supine patient), a branching pulmonary vessel tree, airways, mediastinum with heart,
aorta and pulmonary trunk, spine, ribs, sternum and scapulae.  The tumour is a solid nodule/mass
(-50..60 HU, 8-40 mm), lobulated or spiculated, sometimes abutting the pleura or a vessel: the
look of non-small-cell lung cancer in Task06 (Antonelli et al. 2022), and as there it is tiny
(≲ 0.2 % of voxels) and absent from most axial slices.
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


def draw_thorax(g: Grid, rng: np.random.Generator, a: float, b: float) -> Canvas:
    """Paint one chest with body half-axes ``a`` (lateral) × ``b`` (antero-posterior) mm."""
    cv = Canvas(g.shape)
    stream = organ_streams(rng)  # one random stream per structure (see organ_streams)
    body = stream("body")
    fat, wall = body.uniform(5, 25) * a / 165, body.uniform(12, 20)
    ac, bc = a - fat - wall, b - fat - wall
    full = (slice(None),) * 3
    x, y, z = g.x[:, None, None], g.y[None, :, None], g.z[None, None, :]
    cv.paint(full, (body_section(g, a, b) <= 1)[..., None], body.uniform(-115, -90))
    cv.paint(full, (body_section(g, a - fat, b - fat) <= 1)[..., None], body.uniform(40, 60))
    rho_c = body_section(g, ac, bc)[..., None]
    cavity = rho_c <= 1
    cv.paint(full, cavity, -90)  # mediastinal fat
    spine = stream("spine")
    yv, rv = -b + fat + 52, spine.uniform(14, 18)

    # Lungs: cavity above the diaphragm, tapering to the apices, minus the mediastinum.
    zd = (np.maximum(-120 - 60 * ((x - 0.35 * ac) / ac) ** 2, -135 - 60 * ((x + 0.4 * ac) / ac) ** 2)
          - 40 * ((y + 0.1 * bc) / bc) ** 2)
    apex = np.sqrt(np.clip(1 - (np.maximum(z - 30, 0) / 90) ** 2, 0, 1))
    wm = 0.2 * ac + 0.1 * ac * (z < -40)
    medi = ((x + 5) / wm) ** 2 + ((y - 0.1 * bc) / (0.95 * bc)) ** 2 <= 1
    spine_zone = (np.abs(x) < rv + 14) & (y < yv + rv + 8)
    lung = cavity & (z > zd) & (rho_c < apex) & ~medi & ~spine_zone
    lung_rng = stream("lung")
    lung_hu = (lung_rng.uniform(-880, -830) + 40 * np.clip(-y / bc, 0, 1)
               + 12 * smooth_noise(lung_rng, g.shape, (6, 6, 3)))
    cv.paint(full, lung, lung_hu)
    # liver/spleen dome below the diaphragm
    cv.paint(full, cavity & (z <= zd - 4), stream("upper abdomen").uniform(50, 65))
    sl, q = ellipsoid(g, (-0.45 * ac, 0.1 * bc, -190), (0.3 * ac, 0.35 * bc, 40))
    if sl is not None:
        cv.paint(sl, (q <= 1) & (g.z[None, None, sl[2]] < zd[sl[0], sl[1]] - 6), -1000)  # gastric gas

    heart = stream("heart and vessels")
    contrast = heart.random() < 0.6
    blood = heart.uniform(150, 250) if contrast else heart.uniform(35, 50)
    hc = (-0.2 * ac, 0.3 * bc, -80)
    for scale, hu in ((1.12, -90), (1.0, heart.uniform(40, 60)), (0.72, blood)):  # fat, myocardium, blood
        sl, q = ellipsoid(g, hc, (0.42 * ac * scale, 0.5 * bc * scale, 55 * scale), angle=0.5)
        if sl is not None:
            cv.paint(sl, q <= 1, hu)
    ya = yv + rv + 13
    arch = [(10, 0.3 * bc, -50), (8, 0.28 * bc, 25), (-2, 0.15 * bc, 42), (-18, ya + 4, 35), (-18, ya, -300)]
    _tube(cv, g, arch, heart.uniform(11, 15), blood)  # ascending aorta, arch, descending aorta
    _tube(cv, g, [(-12, 0.35 * bc, -60), (-20, 0.2 * bc, -10)], 13, blood)  # pulmonary trunk
    _tube(cv, g, [(30, 0.2 * bc, 120), (28, 0.2 * bc, -40)], 9, blood)  # superior vena cava
    _tube(cv, g, [(-6, yv + rv + 6, 200), (-10, yv + rv + 6, -300)], 7, 40)  # oesophagus
    yt = yv + rv + 22
    for wall_r, hu in ((1.8, 45), (0.0, -1000)):  # trachea and main bronchi: wall, then air
        _tube(cv, g, [(0, yt, 250), (0, yt, 0), (45, yt - 5, -20)], 9 + wall_r, hu)
        _tube(cv, g, [(0, yt, 0), (-45, yt - 5, -28)], 7 + wall_r, hu)

    lung_vessels = stream("lung vessels")
    vessel_hu = blood if contrast else lung_vessels.uniform(30, 50)
    # Peripheral vessels: where two smooth random fields are both near zero lies a set of curved
    # tubes (intersection of two level surfaces); thinner towards the pleura, like real vessels.
    n1, n2 = (smooth_noise(lung_vessels, g.shape, [20 / s for s in g.spacing]) for _ in range(2))
    eps = 0.1 * (1.2 - 0.7 * rho_c)
    cv.paint(full, lung & (np.abs(n1) < eps) & (np.abs(n2) < eps), vessel_hu - 20)
    nodes = _vessel_tree(cv, g, lung, lung_vessels, vessel_hu, ac, bc)
    _tumour(cv, g, lung, stream("tumour"), nodes, ac)
    paint_spine(cv, g, yv, rv, spine)
    bones = stream("ribs, sternum, scapulae")
    rr = body_section(g, ac + 7, bc + 7)
    z_post = 120 - np.arange(12) * bones.uniform(22, 26)
    paint_ribs(cv, g, rr, np.hypot(ac, bc) / np.sqrt(2), posterior_angle(g, ac, bc), z_post,
               bones.uniform(80, 110), np.linspace(2.8, 2.2, 12), bones, depth=0.0)
    sl = g.box((-15, bc + 2, -110), (15, bc + 16, 70))
    if sl is not None:  # sternum
        xs, ys, _ = g.coords(sl)
        cv.paint(sl, (xs / 14) ** 2 + ((ys - bc - 9) / 6) ** 2 <= 1, bones.uniform(250, 400))
    phi = posterior_angle(g, ac, bc)[..., None]
    scap = (np.abs(body_section(g, ac + 22, bc + 22)[..., None] - 1) < 0.025) & (phi > 0.5) & (phi < 1.25)
    cv.paint(full, scap & (z > -60), bones.uniform(400, 600))
    paint_table(cv, g, -b, stream("table"))
    return cv


def _tube(cv: Canvas, g: Grid, points, r: float, hu: float) -> None:
    for p0, p1 in zip(points[:-1], points[1:]):
        sl, d = capsule(g, p0, p1, r)
        if sl is not None:
            cv.paint(sl, d <= r, hu)


def _inside(g: Grid, mask: np.ndarray, p) -> bool:
    idx = [int(round((c - a[0]) / (a[1] - a[0]))) for c, a in zip(p, (g.x, g.y, g.z))]
    return all(0 <= i < n for i, n in zip(idx, mask.shape)) and bool(mask[tuple(idx)])


def _vessel_tree(cv: Canvas, g: Grid, lung: np.ndarray, rng, hu: float, ac: float, bc: float) -> list:
    """Pulmonary arteries/veins: from each hilum 5 trunks that branch 5 times (radius × 0.7, ≥ 1.1 mm).

    Returns the branch points (mm), where a tumour may be placed abutting a vessel.
    """
    nodes: list = []
    for side in (1, -1):
        hilum = np.array([side * 0.3 * ac, 0.0, -20.0])
        for d in ((0.2 * side, 0.1, 1), (side, 0.1, 0.1), (0.3 * side, 0.6, -0.6), (0.4 * side, -0.7, -0.7),
                  (0.5 * side, -0.2, -1)):
            stack = [(hilum, np.asarray(d) / np.linalg.norm(d), 45.0, 6.0, 0)]
            while stack:
                p, v, length, r, depth = stack.pop()
                q = p + v * length
                if depth > 0 and not _inside(g, lung, q):
                    length *= 0.5
                    q = p + v * length
                    if not _inside(g, lung, q):
                        continue
                sl, dist = capsule(g, p, q, r)
                if sl is not None:
                    cv.paint(sl, (dist <= r) & (lung[sl] | (depth == 0)), hu)
                nodes.append(q)
                if depth < 5:
                    for _ in range(3 if depth < 2 else 2):
                        w = v + rng.normal(0, 0.5, 3)
                        stack.append((q, w / np.linalg.norm(w), length * rng.uniform(0.6, 0.8),
                                      max(r * 0.7, 1.1), depth + 1))
    return nodes


def _tumour(cv: Canvas, g: Grid, lung: np.ndarray, rng, nodes: list, ac: float) -> None:
    """One solid tumour (8-40 mm), lobulated or spiculated, in the lung, pleura or next to a vessel."""
    r = float(np.exp(rng.uniform(np.log(4), np.log(20))))
    idx = np.flatnonzero(lung)
    for _ in range(50):  # choose a centre well inside the lung
        c = np.array([a[i] for a, i in zip((g.x, g.y, g.z), np.unravel_index(idx[rng.integers(idx.size)], lung.shape))])
        mode = rng.choice(3, p=[0.4, 0.3, 0.3])
        if mode == 1:  # move outwards in-plane until the chest wall, then back by ~0.7 radius: pleural contact
            v = np.array([c[0], c[1], 0.0]) / max(np.hypot(c[0], c[1]), 1e-3)
            while _inside(g, lung, c + v * 2):
                c = c + v * 2
            c = c - v * 0.7 * r
        elif mode == 2 and nodes:
            n = nodes[rng.integers(len(nodes))]
            c = n + rng.normal(0, 1, 3) / np.sqrt(3) * r * 0.9
        if _inside(g, lung, c):
            break
    hu = rng.uniform(-30, 50)
    lobes = [(c, r)] + [(c + rng.normal(0, 0.4 * r, 3), r * rng.uniform(0.4, 0.7)) for _ in range(rng.integers(1, 5))]
    for lc, lr in lobes:
        sl, q = ellipsoid(g, lc, (lr, lr * rng.uniform(0.8, 1.2), lr * rng.uniform(0.8, 1.2)))
        if sl is not None:
            tex = hu + 12 * smooth_noise(rng, q.shape, (3, 3, 2))
            cv.paint(sl, (q <= 1) & lung[sl], tex, label=1)
    if rng.random() < 0.5:  # spicules: thin strands radiating into the lung (corona radiata)
        for _ in range(int(rng.integers(6, 14))):
            v = rng.normal(0, 1, 3)
            v /= np.linalg.norm(v)
            rad = rng.uniform(0.7, 1.3)
            sl, d = capsule(g, c + v * 0.8 * r, c + v * (r + rng.uniform(4, 12)), rad)
            if sl is not None:
                cv.paint(sl, (d <= rad) & lung[sl], hu, label=1)
