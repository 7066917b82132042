"""Hard-negative mining: which components are mined, how the sampler uses them, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctseg_lib.config import TrainConfig
from ctseg_lib.datasets import SliceDataset
from ctseg_lib.errors import CTSegError
from ctseg_lib.hard_negatives import (
    false_positive_components,
    load_hard_negatives,
    mine_hard_negatives,
    save_hard_negatives,
)
from ctseg_lib.preprocessing import Preprocessed
from ctseg_lib.training import HARD_NEGATIVES, train
from tests.test_training import data, tiny_cfg  # noqa: F401  (data: the module's toy dataset fixture)


def _pre(image: np.ndarray, label: np.ndarray) -> Preprocessed:
    return Preprocessed(image.astype(np.float32), label.astype(np.uint8), (1.0, 1.0, 1.0), {})


def test_false_positive_components_skip_lesions_that_touch_the_reference():
    pred, lab = np.zeros((20, 20, 6), np.uint8), np.zeros((20, 20, 6), np.uint8)
    pred[2:5, 2:5, 1:3] = 1       # overlaps the reference by one voxel: a (poorly outlined) true positive
    lab[4:8, 4:8, 2:4] = 1
    pred[12:14, 12:15, 3] = 1     # no reference voxel: a false positive of 6 voxels
    pred[17, 2, 5] = 1            # a single-voxel false positive
    pred[10, 17, 0] = 2           # class 2 is not asked for
    comps = false_positive_components(pred, lab, [1])
    got = sorted(sorted(map(tuple, c.tolist())) for c in comps)
    assert got == sorted([sorted((x, y, 3) for x in (12, 13) for y in (12, 13, 14)), [(17, 2, 5)]])
    assert all(c.dtype == np.int32 and c.shape[1] == 3 for c in comps)
    # the class decides: the class-2 voxel is a false positive of class 2, the class-1 blobs are not
    two = false_positive_components(pred, lab, [2])
    assert [c.tolist() for c in two] == [[[10, 17, 0]]]
    assert len(false_positive_components(pred, lab, [1, 2])) == 3
    # a label of another class under a prediction does not make it a true positive
    lab[17, 2, 5] = 2
    assert len(false_positive_components(pred, lab, [1])) == 2


def test_false_positive_components_subsample_large_ones():
    pred = np.zeros((30, 30, 4), np.uint8)
    pred[0:20, 0:20, :] = 1  # 1600 voxels
    (c,) = false_positive_components(pred, np.zeros_like(pred), [1], max_voxels=50)
    assert len(c) == 50 and len({tuple(v) for v in c.tolist()}) == 50 and (c[:, :2] < 20).all()
    with pytest.raises(CTSegError, match="differs"):
        false_positive_components(pred, np.zeros((30, 30, 3), np.uint8), [1])


class _Bright(torch.nn.Module):
    """Calls every voxel of the centre channel above 0.5 class 1 (a 'model' with known false positives)."""

    size_divisor = 1

    def forward(self, x):
        c = x[:, x.shape[1] // 2]
        return torch.stack([torch.zeros_like(c), 10 * (c - 0.5)], dim=1)


def test_mine_hard_negatives_returns_the_models_false_positives_per_case():
    img = np.zeros((16, 16, 5), np.float32)
    img[2:4, 2:4, 1] = 1.0    # bright, unlabelled: a false positive
    img[9:12, 9:12, 2:4] = 1.0  # bright and labelled: the tumour
    lab = np.zeros(img.shape, np.uint8)
    lab[9:12, 9:12, 2:4] = 1
    cases = [_pre(np.zeros_like(img), lab), _pre(img, lab)]
    found = mine_hard_negatives(_Bright(), cases, [1], context=1, batch_size=2)
    assert len(found) == 1 and found[0][0] == 1
    assert sorted(map(tuple, found[0][1].tolist())) == [(x, y, 1) for x in (2, 3) for y in (2, 3)]


def test_sampler_centres_hard_items_on_the_pool_and_is_unchanged_without_one():
    lab = np.zeros((64, 48, 12), np.uint8)
    lab[30:34, 20:24, 6] = 1
    case = _pre(np.random.default_rng(0).random(lab.shape), lab)
    kw = dict(context=1, fg_fraction=0.3, negative_keep=0.5, samples_per_epoch=200, seed=3, patch_size=(16, 16))
    plain, hard = SliceDataset([case], **kw), SliceDataset([case], hard_fraction=1.0, **kw)
    # no pool yet: the same items, draw for draw
    assert [plain.sample(i) for i in range(200)] == [hard.sample(i) for i in range(200)]
    hard.set_hard_negatives([(0, np.array([[50, 40, 2], [51, 40, 2]], np.int32))])
    n_hard = 0
    for i in range(200):
        k, z, cl, (x0, y0) = hard.sample(i)
        if cl is None:  # not forced onto the tumour: with hard_fraction 1 always a hard negative
            n_hard += 1
            assert z == 2 and x0 <= 50 < x0 + 16 and y0 <= 40 < y0 + 16
            x, y = hard[i]
            assert x.shape == (3, 16, 16) and int(y.sum()) == 0
    assert 100 < n_hard < 180  # ~70 % of the items
    hard.set_hard_negatives([])
    assert [plain.sample(i) for i in range(50)] == [hard.sample(i) for i in range(50)]
    for bad in ([(1, np.zeros((2, 3), int))], [(0, np.zeros((2, 2), int))], [(0, np.zeros((0, 3), int))]):
        with pytest.raises(CTSegError, match="hard negative"):
            hard.set_hard_negatives(bad)
    with pytest.raises(CTSegError, match="hard_fraction"):
        SliceDataset([case], hard_fraction=1.5)


def test_pool_file_round_trip_and_bad_file(tmp_path):
    items = [(0, np.array([[1, 2, 3]], np.int32)), (2, np.array([[4, 5, 6], [7, 8, 9]], np.int32))]
    path = save_hard_negatives(tmp_path / "pool.npz", items, epoch=10)
    back, epoch = load_hard_negatives(path)
    assert epoch == 10 and [k for k, _ in back] == [0, 2]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(items, back))
    assert load_hard_negatives(save_hard_negatives(tmp_path / "empty.npz", [], 5)) == ([], 5)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CTSegError, match="bad.npz"):
        load_hard_negatives(tmp_path / "bad.npz")


@pytest.mark.parametrize("over, key", [({"data": {"hard_every": 0}}, "hard_every"),
                                       ({"data": {"hard_fraction": 1.5}}, "hard_fraction"),
                                       ({"data": {"hard_fraction": 0.5, "patch_size": [8, 8, 8]},
                                         "model": {"spatial_dims": 3}}, "hard_fraction")])
def test_config_rejects_bad_hard_negative_settings(over, key):
    with pytest.raises(CTSegError, match=key):
        tiny_cfg(**over)
    assert TrainConfig().data.hard_fraction == 0.0  # off unless a preset asks for it


def test_training_mines_on_schedule_and_resumes_with_the_same_pool(data, tmp_path, monkeypatch):  # noqa: F811
    import ctseg_lib.training as T

    calls = []

    def fake_mine(model, cases, classes, context, batch_size, device, seed):
        calls.append(seed)  # seed = cfg.seed * 1000 + epoch
        ep = seed % 1000
        return [(ep % len(cases), np.array([[3, 4, 1], [5 + ep % 3, 6, 2]], np.int32))]

    monkeypatch.setattr(T, "mine_hard_negatives", fake_mine)
    cfg = tiny_cfg(epochs=5, data={"hard_fraction": 0.6, "hard_every": 2})
    full = train(cfg, data, tmp_path / "full", quiet=True, device="cpu")
    assert calls == [2, 4]  # before epochs 3 and 5 (0-based 2 and 4)
    assert [r.get("hard_negatives") for r in full.history] == [None, None, 1, None, 1]
    pool, epoch = load_hard_negatives(tmp_path / "full" / HARD_NEGATIVES)
    assert epoch == 4 and pool[0][0] == 4 % 3
    # interrupted after epoch 3: the resumed run goes on with the pool mined before epoch 3 (0-based 2)
    # and mines again only before epoch 5, ending bit-identical to the uninterrupted run
    calls.clear()
    train(cfg, data, tmp_path / "part", quiet=True, device="cpu", max_epochs=3)
    assert calls == [2]
    calls.clear()
    resumed = train(cfg, data, tmp_path / "part", resume=True, quiet=True, device="cpu")
    assert calls == [4] and len(resumed.history) == 5
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
