"""Losses: hand-computed values, gradcheck, empty targets, perfect predictions, deep supervision."""

from __future__ import annotations

import math

import pytest
import torch

from ctseg_lib.errors import CTSegError
from ctseg_lib.losses import (
    BatchSoftDiceBinary,
    BlobLoss,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceCELoss,
    FocalLoss,
    SoftDiceLoss,
    TverskyLoss,
    build_loss,
    one_hot,
)

# 2×2 example, two classes.  Logits chosen so softmax p(class 1) = [[0.8, 0.2], [0.5, 0.5]].
P1 = torch.tensor([[0.8, 0.2], [0.5, 0.5]], dtype=torch.float64)
LOGITS = torch.stack([torch.zeros(2, 2, dtype=torch.float64), torch.log(P1 / (1 - P1))])[None]  # (1, 2, 2, 2)
TARGET = torch.tensor([[[1, 0], [1, 0]]])  # (1, 2, 2)


def test_dice_hand_computed():
    # class 1: TP = .8+.5 = 1.3, Σp = 2.0, Σy = 2 → Dice = 2.6/4 = 0.65
    loss = SoftDiceLoss(smooth=0.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx(1 - 0.65)
    # with background: class 0 p = [.2,.8,.5,.5], y = [0,1,0,1] → TP 1.3, Dice 0.65 too
    assert SoftDiceLoss(include_background=True, smooth=0.0)(LOGITS, TARGET).item() == pytest.approx(0.35)
    # squared: 2·1.3 / (Σp² = .64+.04+.25+.25 = 1.18 + 2)
    assert SoftDiceLoss(smooth=0.0, square=True)(LOGITS, TARGET).item() == pytest.approx(1 - 2.6 / 3.18)


def test_ce_focal_tversky_hand_computed():
    # p_t = .8, .8 (1-.2), .5, .5
    ce = -(2 * math.log(0.8) + 2 * math.log(0.5)) / 4
    assert CrossEntropyLoss()(LOGITS, TARGET).item() == pytest.approx(ce)
    fl = -(2 * 0.2**2 * math.log(0.8) + 2 * 0.5**2 * math.log(0.5)) / 4
    assert FocalLoss(gamma=2)(LOGITS, TARGET).item() == pytest.approx(fl)
    assert FocalLoss(gamma=0)(LOGITS, TARGET).item() == pytest.approx(ce)
    # alpha=0.25: foreground voxels (targets 1 at p_t=.8 and .5) weight .25, background .75
    fla = -(0.25 * 0.04 * math.log(0.8) + 0.75 * 0.04 * math.log(0.8)
            + 0.25 * 0.25 * math.log(0.5) + 0.75 * 0.25 * math.log(0.5)) / 4
    assert FocalLoss(2, alpha=0.25)(LOGITS, TARGET).item() == pytest.approx(fla)
    # class 1: TP 1.3, FP 0.7, FN 0.7 → 1.3 / (1.3 + .3·.7 + .7·.7)
    assert TverskyLoss(smooth=0)(LOGITS, TARGET).item() == pytest.approx(1 - 1.3 / 2.0)
    assert TverskyLoss(0.5, 0.5, smooth=0)(LOGITS, TARGET).item() == pytest.approx(0.35)
    assert DiceCELoss(smooth=0)(LOGITS, TARGET).item() == pytest.approx(0.35 + ce)
    assert DiceCELoss(2, 0.5, smooth=0)(LOGITS, TARGET).item() == pytest.approx(0.7 + ce / 2)


def test_ce_weight_and_target_with_channel_dim():
    w = CrossEntropyLoss(weight=[1.0, 3.0])(LOGITS, TARGET[:, None]).item()
    expected = -(3 * math.log(0.8) + 1 * math.log(0.8) + 3 * math.log(0.5) + 1 * math.log(0.5)) / 8
    assert w == pytest.approx(expected)


def test_batch_dice_differs_from_per_sample():
    fg = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])  # foreground logit per sample and voxel (N=2, X=2)
    logits = torch.stack([-fg, fg], 1)  # (2, 2, 2): sample 0 predicts fg at x=0, sample 1 at x=1
    target = torch.tensor([[1, 0], [0, 0]])  # sample 1 has no foreground but predicts it at x=1
    per = SoftDiceLoss(batch_dice=False)(logits, target).item()
    bat = SoftDiceLoss(batch_dice=True)(logits, target).item()
    assert per == pytest.approx(0.5, abs=0.01)  # sample 0 Dice≈1, sample 1 Dice≈0 (FP on empty)
    assert bat == pytest.approx(1 - 2 / 3, abs=0.01)  # pooled: TP≈1, FP≈1, FN≈0


@pytest.mark.parametrize("name", ["dice", "ce", "dice_ce", "focal", "tversky"])
def test_gradcheck_float64(name):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (2, 2, 2))
    loss = build_loss(name)
    assert torch.autograd.gradcheck(lambda z: loss(z, t), (x,))


@pytest.mark.parametrize("name", ["dice", "ce", "dice_ce", "focal", "tversky"])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_no_nan_with_empty_target(name, batch_dice):
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    kw = {} if name in ("ce", "focal") else {"batch_dice": batch_dice}
    loss = build_loss(name, **kw)(x, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_empty_class_absent_everywhere_scores_dice_one():
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    confident_bg = one_hot(t, 3) * 40 - 20  # predicts background with p≈1
    assert SoftDiceLoss(include_background=False)(confident_bg, t).item() == pytest.approx(0, abs=1e-4)


@pytest.mark.parametrize("name", ["dice", "tversky", "dice_ce", "focal", "ce"])
def test_perfect_confident_prediction_is_near_zero(name):
    t = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    logits = one_hot(t, 3) * 40 - 20
    assert build_loss(name)(logits, t).item() == pytest.approx(0, abs=1e-4)


def test_batch_soft_dice_binary_original_project():
    probs = torch.tensor([[[[0.8, 0.2], [0.5, 0.5]]]])
    y = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert BatchSoftDiceBinary(smooth=1)(probs, y).item() == pytest.approx(1 - 3.6 / 5)
    assert BatchSoftDiceBinary(smooth=0, from_logits=True)(torch.log(probs / (1 - probs)), y).item() == \
        pytest.approx(0.35)
    with pytest.raises(ValueError):
        BatchSoftDiceBinary()(probs, torch.zeros(3))


def test_deep_supervision_loss_weights_and_nearest_targets():
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    t[0, :2, :2] = 1
    full = one_hot(t, 2) * 40 - 20                                # perfect at full res
    half = one_hot(torch.tensor([[[1, 0], [0, 0]]]), 2) * 40 - 20  # perfect after nearest downsampling
    wrong = -half
    ds = DeepSupervisionLoss(CrossEntropyLoss())
    assert ds([full, half], t).item() == pytest.approx(0, abs=1e-6)
    ce_wrong = CrossEntropyLoss()(wrong, torch.tensor([[[1, 0], [0, 0]]])).item()
    assert ds([full, wrong], t).item() == pytest.approx(ce_wrong * 0.5 / 1.5, rel=1e-5)
    assert ds(full, t).item() == pytest.approx(0, abs=1e-6)  # eval mode: plain tensor
    with pytest.raises(ValueError):
        DeepSupervisionLoss(CrossEntropyLoss(), [1.0])([full, half], t)


def test_bad_inputs():
    with pytest.raises(CTSegError, match="unknown loss"):
        build_loss("hinge")
    with pytest.raises(ValueError, match="expected logits"):
        SoftDiceLoss()(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError):
        FocalLoss(alpha=[0.5, 0.5])(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_soft_overlap_plain_and_vnet_square_forms():
    """The public soft_overlap (shown in chapter 5): 2tp+fp+fn is Σp+Σy, or Σp²+Σy² in the V-Net form."""
    from ctseg_lib.losses import one_hot, soft_overlap

    probs = torch.tensor([[[0.8, 0.6, 0.1]], [[0.2, 0.4, 0.9]]]).permute(1, 0, 2)  # (N=1, C=2, 3)
    y = one_hot(torch.tensor([[0, 0, 1]]), 2)
    tp, fp, fn = soft_overlap(probs, y)
    assert torch.allclose(tp, torch.tensor([[1.4, 0.9]])) and torch.allclose(fp, torch.tensor([[0.1, 0.6]]))
    assert torch.allclose(2 * tp + fp + fn, probs.sum(2) + y.sum(2))
    tp, fp, fn = soft_overlap(probs, y, square=True)
    assert torch.allclose(2 * tp + fp + fn, (probs ** 2).sum(2) + y.sum(2))


def _confident(t: torch.Tensor, num_classes: int = 2) -> torch.Tensor:
    return one_hot(t, num_classes, torch.float64) * 40 - 20


def test_blob_loss_weighs_a_missed_small_lesion_like_a_missed_large_one():
    """One 2x2 and one 6x6 lesion; the prediction finds only the large one.  Batch Dice hardly notices
    (≈ 0.95), the blob term scores the lesions one by one: mean Dice (1 + 0) / 2 = 0.5."""
    t = torch.zeros(1, 16, 16, dtype=torch.long)
    t[0, 1:3, 1:3] = 1
    t[0, 8:14, 8:14] = 1
    found_large = t.clone()
    found_large[0, 1:3, 1:3] = 0
    loss = BlobLoss(classes=[1], batch_dice=True)
    assert loss.blob_dice(_confident(found_large), t).item() == pytest.approx(0.5, abs=1e-3)
    assert SoftDiceLoss(batch_dice=True).dice_per_class(_confident(found_large), t).item() > 0.9
    # the total: alpha * global + beta * (1 - 0.5)
    total = loss(_confident(found_large), t).item()
    assert total == pytest.approx(2 * DiceCELoss(batch_dice=True)(_confident(found_large), t).item() + 0.5, abs=1e-3)


def test_blob_loss_masks_the_other_lesions_but_counts_false_positives():
    """Predicting lesion B perfectly does not lower lesion A's Dice (B is masked out for A); a false
    positive in the background lowers every lesion's Dice."""
    t = torch.zeros(1, 12, 12, dtype=torch.long)
    t[0, 1:4, 1:4] = 1  # A: 9 px
    t[0, 7:10, 7:10] = 1  # B: 9 px
    loss = BlobLoss(classes=[1])
    assert loss.blob_dice(_confident(t), t).item() == pytest.approx(1, abs=1e-4)
    fp = t.clone()
    fp[0, 0:3, 8:11] = 1  # 9 false-positive pixels in the background
    assert loss.blob_dice(_confident(fp), t).item() == pytest.approx(2 * 9 / (18 + 9), abs=1e-3)


def test_blob_loss_without_lesions_is_the_weighted_global_loss_and_has_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    empty = torch.zeros(2, 8, 8, dtype=torch.long)
    loss = build_loss("blob", classes=[2], alpha=2.0, beta=1.0)
    assert loss(x, empty).item() == pytest.approx(2 * DiceCELoss()(x, empty).item())
    t = torch.randint(0, 3, (2, 4, 4))
    assert torch.autograd.gradcheck(lambda z: loss(z, t), (torch.randn(2, 3, 4, 4, dtype=torch.float64,
                                                                      requires_grad=True),))
    with pytest.raises(ValueError):
        BlobLoss(classes=[3])(x, empty)
