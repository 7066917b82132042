"""Segmentation losses.  Inputs: float **logits** ``(N, C, *spatial)`` and integer targets ``(N, *spatial)``
(``(N, 1, *spatial)`` is accepted too) with values in ``[0, C)``.  Every loss returns a scalar.

Soft Dice (Milletari et al. 2016, V-Net; Drozdzal et al. 2016) optimises the overlap directly and is
insensitive to the huge background fraction of CT; cross-entropy gives smooth, well-scaled
gradients.  nnU-Net (Isensee et al. 2021) trains with their sum, :class:`DiceCELoss`.

Empty-class convention (all Dice-type losses here): with ``smooth`` ε added to numerator and
denominator, a class that is absent from the target *and* predicted nowhere scores Dice
``ε/ε = 1`` (loss 0, no NaN), while a class absent from the target but predicted with soft mass
``s ≫ ε`` scores ``≈ ε/s ≈ 0``: false positives on tumour-free slices are punished at full
strength.  ``batch_dice=True`` (nnU-Net's default for 2D) pools the sums over the whole batch, so a
class only has to be absent from *every* sample of the batch for this to happen, which makes the loss
much less noisy on small tumours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CTSegError


def _prepare(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validate shapes and return ``target`` as long ``(N, *spatial)``."""
    if target.dim() == logits.dim() and target.shape[1] == 1:
        target = target[:, 0]
    if logits.dim() < 3 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"expected logits (N, C, *spatial) and target (N, *spatial); "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")
    return target.long()


def one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer ``(N, *spatial)`` → one-hot ``(N, C, *spatial)`` (channels second, unlike ``F.one_hot``)."""
    out = torch.zeros((target.shape[0], num_classes, *target.shape[1:]), dtype=dtype, device=target.device)
    return out.scatter_(1, target.unsqueeze(1), 1)


def soft_overlap(probs: torch.Tensor, onehot: torch.Tensor, batch: bool = False, square: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft TP, FP, FN of probabilities against a one-hot target, summed over space.

    Args:
        probs: softmax probabilities, float ``(N, C, *spatial)``.
        onehot: the target one-hot encoded, same shape and dtype (see :func:`one_hot`).
        batch: also sum over the batch (nnU-Net "batch Dice").
        square: V-Net form (Milletari et al. 2016): ``tp + fp`` becomes ``Σp²`` (and ``tp + fn`` stays
            ``Σy = Σy²``), so that ``2·tp + fp + fn = Σp² + Σy²``, the V-Net denominator.

    Returns:
        ``(tp, fp, fn)``, each ``(C,)`` when ``batch`` else ``(N, C)``.
    """
    axes = [0, *range(2, probs.dim())] if batch else list(range(2, probs.dim()))
    tp = (probs * onehot).sum(axes)
    if square:  # Milletari's V-Net variant: denominators sum p² + y²
        psum, ysum = (probs * probs).sum(axes), onehot.sum(axes)
    else:
        psum, ysum = probs.sum(axes), onehot.sum(axes)
    return tp, psum - tp, ysum - tp


class SoftDiceLoss(nn.Module):
    """Multi-class soft Dice on softmax probabilities: ``1 - mean_c (2TP + ε) / (2TP + FP + FN + ε)``.

    Args:
        include_background: average over class 0 too (nnU-Net: False).
        batch_dice: pool TP/FP/FN over the batch (nnU-Net "batch Dice") instead of per sample.
        smooth: ε; see the module docstring for the empty-class behaviour it implies.
        square: use ``Σp² + Σy²`` in the denominator (V-Net).
    """

    def __init__(self, include_background: bool = False, batch_dice: bool = False, smooth: float = 1e-5,
                 square: bool = False) -> None:
        super().__init__()
        self.include_background, self.batch_dice, self.smooth, self.square = (
            include_background, batch_dice, smooth, square)

    def dice_per_class(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft Dice ``(C',)`` or ``(N, C')`` (C' = C, or C-1 without background)."""
        target = _prepare(logits, target)
        probs = torch.softmax(logits, 1)
        tp, fp, fn = soft_overlap(probs, one_hot(target, logits.shape[1], probs.dtype), self.batch_dice, self.square)
        if self.square:  # fp/fn are not meaningful here; denominator is Σp² + Σy²
            denom = (fp + tp) + (fn + tp)
        else:
            denom = 2 * tp + fp + fn
        dc = (2 * tp + self.smooth) / (denom + self.smooth).clamp_min(1e-8)
        if not self.include_background:
            if logits.shape[1] < 2:
                raise ValueError("include_background=False needs at least 2 channels")
            dc = dc[..., 1:]
        return dc

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - self.dice_per_class(logits, target).mean()


class CrossEntropyLoss(nn.Module):
    """Voxel-wise softmax cross-entropy (``torch.nn.functional.cross_entropy``), optional class ``weight``."""

    def __init__(self, weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(logits, _prepare(logits, target), weight=w)


class DiceCELoss(nn.Module):
    """``dice_weight · SoftDice + ce_weight · CE`` — nnU-Net's default loss (both weights 1).

    Extra keyword arguments go to :class:`SoftDiceLoss`; ``weight`` goes to the CE term.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, weight=None, **dice_kwargs) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        self.dice, self.ce = SoftDiceLoss(**dice_kwargs), CrossEntropyLoss(weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * self.ce(logits, target)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017, ICCV, "Focal Loss for Dense Object Detection"), multi-class.

    ``FL = -α_t (1 - p_t)^γ log p_t``, averaged over voxels: γ > 0 down-weights easy, well-classified
    voxels (most of the background).  ``alpha``: None (no weighting); a float α gives weight α to the
    foreground classes and 1-α to background (the binary paper's convention); or a sequence of C
    per-class weights.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None) -> None:
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _prepare(logits, target)
        logp_t = torch.log_softmax(logits, 1).gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -((1 - logp_t.exp()).clamp_min(0) ** self.gamma) * logp_t
        if self.alpha is not None:
            c = logits.shape[1]
            if isinstance(self.alpha, int | float):
                a = torch.full((c,), float(self.alpha), dtype=logits.dtype, device=logits.device)
                a[0] = 1 - float(self.alpha)
            else:
                a = torch.as_tensor(self.alpha, dtype=logits.dtype, device=logits.device)
                if a.numel() != c:
                    raise ValueError(f"alpha has {a.numel()} entries for {c} classes")
            loss = a[target] * loss
        return loss.mean()


class TverskyLoss(nn.Module):
    """Tversky loss (Salehi et al. 2017, MLMI): ``1 - mean_c (TP + ε) / (TP + α·FP + β·FN + ε)``.

    α weights false positives, β false negatives; β > α (default 0.3/0.7) favours recall, useful for
    small tumours that Dice tends to under-segment.  α = β = 0.5 recovers soft Dice.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, include_background: bool = False,
                 batch_dice: bool = False, smooth: float = 1e-5) -> None:
        super().__init__()
        self.alpha, self.beta, self.include_background, self.batch_dice, self.smooth = (
            alpha, beta, include_background, batch_dice, smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _prepare(logits, target)
        probs = torch.softmax(logits, 1)
        tp, fp, fn = soft_overlap(probs, one_hot(target, logits.shape[1], probs.dtype), self.batch_dice, False)
        ti = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(1e-8)
        if not self.include_background:
            ti = ti[..., 1:]
        return 1 - ti.mean()


class BatchSoftDiceBinary(nn.Module):
    """The original course project's loss: soft Dice on *probabilities* pooled over the whole batch.

    ``1 - (2 Σ p·y + s) / (Σ p + Σ y + s)`` with ``p = probs (N, 1, ...)`` in [0, 1] (the original
    network applied the sigmoid itself, see :class:`~ctseg_lib.models.original.OriginalProjectUNet`)
    and binary ``y`` (any shape with the same number of elements).  ``from_logits=True`` applies the
    sigmoid here instead.  ``smooth`` s = 1 (a common choice in course code) makes it a Laplace-smoothed
    Dice: with small structures the +1 visibly biases the loss.
    """

    def __init__(self, smooth: float = 1.0, from_logits: bool = False) -> None:
        super().__init__()
        self.smooth, self.from_logits = smooth, from_logits

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(probs) if self.from_logits else probs
        p, y = p.reshape(-1), (target.reshape(-1) > 0).to(p.dtype)
        if p.numel() != y.numel():
            raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} differ in size")
        return 1 - (2 * (p * y).sum() + self.smooth) / (p.sum() + y.sum() + self.smooth)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss`` over deep-supervision outputs ``[full, 1/2, 1/4, ...]`` (nnU-Net).

    ``weights`` default to ``1/2**i``, normalised to sum to 1.  The target is downsampled to each
    output's size by nearest-neighbour (labels must not be interpolated).  A plain tensor input
    (eval mode) is passed straight to ``loss``.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss, self.weights = loss, None if weights is None else list(weights)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        w = self.weights if self.weights is not None else [0.5**i for i in range(len(outputs))]
        if len(w) != len(outputs):
            raise ValueError(f"{len(w)} weights for {len(outputs)} outputs")
        total_w = float(sum(w))
        t = target if target.dim() == outputs[0].dim() else target.unsqueeze(1)
        total = outputs[0].new_zeros(())
        for wi, out in zip(w, outputs):
            ti = t if out.shape[2:] == t.shape[2:] else F.interpolate(t.float(), size=out.shape[2:], mode="nearest")
            total = total + (wi / total_w) * self.loss(out, ti[:, 0].long())
        return total


class BlobLoss(nn.Module):
    """Blob loss (Kofler et al., "blob loss: instance imbalance aware loss functions for semantic
    segmentation", IPMI 2023): ``alpha · DiceCE + beta · (1 - mean soft Dice over the lesions)``.

    Batch Dice pools every voxel of the batch, so a 0.3 ml tumour weighs nothing beside a 50 ml one and
    the network can ignore small lesions at almost no cost (the README measures exactly that: every
    missed tumour has a tumour probability near 0).  The blob term scores each lesion on its own: for
    every connected component (26-/8-connected) of a lesion class in each sample, the soft Dice of that
    class's probability against the component, with the *other* components of the class masked out
    (predicting them is neither rewarded nor punished there) but the background kept, so false
    positives count against every lesion of the sample.  Every lesion, small or large, weighs the same.

    Args:
        classes: label values whose components are the lesions, e.g. ``[2]`` (liver tumour) or ``[1]``.
        alpha, beta: weights of the global :class:`DiceCELoss` and of the blob term (the paper: 2 and 1).
        smooth: ε of the per-lesion Dice.
        **global_kwargs: passed to :class:`DiceCELoss` (e.g. ``batch_dice=True``).

    Shapes: logits float ``(N, C, *spatial)``, target integer ``(N, *spatial)``.  Samples without a
    lesion contribute only the global term.  The components come from
    :func:`ctseg_lib.lesions.label_lesions` on the CPU (a few ms for a batch of 2D patches).
    """

    def __init__(self, classes: Sequence[int] = (1,), alpha: float = 2.0, beta: float = 1.0,
                 smooth: float = 1e-5, **global_kwargs) -> None:
        super().__init__()
        self.classes, self.alpha, self.beta, self.smooth = [int(c) for c in classes], alpha, beta, smooth
        self.global_loss = DiceCELoss(**global_kwargs)

    def blob_dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Mean soft Dice over every lesion of the batch (scalar), or None when there is none."""
        from .lesions import label_lesions

        target = _prepare(logits, target)
        if max(self.classes) >= logits.shape[1]:
            raise ValueError(f"blob classes {self.classes} need more than {logits.shape[1]} channels")
        probs = torch.softmax(logits, 1)
        labels = target.detach().cpu().numpy()
        dices = []
        for c in self.classes:
            for n in range(target.shape[0]):
                comp, k = label_lesions(labels[n] == c)  # 26-connected in 3D, 8-connected in 2D
                if k == 0:
                    continue
                comp_t = torch.from_numpy(comp).to(logits.device)
                p = probs[n, c]
                off_lesions = p * (comp_t == 0).to(p.dtype)  # the class's probability outside every lesion
                for i in range(1, k + 1):
                    blob = (comp_t == i).to(p.dtype)
                    pk = off_lesions + p * blob  # this lesion and the background; other lesions masked out
                    dices.append((2 * (pk * blob).sum() + self.smooth) / (pk.sum() + blob.sum() + self.smooth))
        return torch.stack(dices).mean() if dices else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = self.alpha * self.global_loss(logits, target)
        blob = self.blob_dice(logits, target)
        return total if blob is None else total + self.beta * (1 - blob)


#: Loss classes by config name (`loss.name`); `build_loss` and config validation read this.
LOSSES = {"dice": SoftDiceLoss, "ce": CrossEntropyLoss, "dice_ce": DiceCELoss, "focal": FocalLoss,
          "tversky": TverskyLoss, "batch_dice_binary": BatchSoftDiceBinary, "blob": BlobLoss}


def build_loss(name: str, **kwargs) -> nn.Module:
    """Loss by name: ``"dice"``, ``"ce"``, ``"dice_ce"``, ``"focal"``, ``"tversky"``, ``"batch_dice_binary"``,
    ``"blob"``.

    Raises:
        CTSegError: unknown name (it usually comes from a config file).
    """
    try:
        cls = LOSSES[name]
    except KeyError:
        raise CTSegError(f"loss: unknown loss {name!r}; choose from {sorted(LOSSES)}") from None
    return cls(**kwargs)
