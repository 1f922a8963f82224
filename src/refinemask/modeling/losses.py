"""Losses of the RefineMask head and the box head (docs/design.md §4).

Shapes: N positive RoIs of the whole batch; S a stage size; B images; h, w the stride-4 size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from refinemask.modeling.ops import boundary_band, upsample_logits


def bar_loss(
    stage_logits: list[torch.Tensor],
    stage_targets: list[torch.Tensor],
    stage_weights: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
    boundary_width: int = 2,
    start_stage: int = 1,
) -> torch.Tensor:
    """The boundary-aware refinement (BAR) loss, ``loss_instance`` (docs/design.md §4.1).

    Stages up to ``start_stage`` (14 and 28) get plain BCE over all pixels. Each later stage is
    supervised only in a region: the width-2 band of the previous stage's prediction united
    with the width-2 band of the previous stage's target, upsampled to this stage. The loss is
    normalised over all RoIs' region pixels together (one global mean, clamped to ≥ 1 pixel),
    as in the official BAR loss, not per RoI. The previous prediction is then updated the way
    inference assembles masks, from the *raw* previous logits.

    Args:
        stage_logits: (N, 1, S_k, S_k) per stage.
        stage_targets: (N, S_k, S_k) {0, 1} per stage.

    Returns:
        scalar loss.
    """
    if len(stage_weights) != len(stage_logits):
        raise ValueError(f"{len(stage_weights)} stage weights for {len(stage_logits)} stages")
    losses = []
    previous = None  # binary assembled prediction of the previous stage, (N, S, S)
    for k, (logits, target) in enumerate(zip(stage_logits, stage_targets)):
        logits = logits[:, 0]
        if k <= start_stage:
            losses.append(F.binary_cross_entropy_with_logits(logits, target, reduction="mean"))
            previous = logits.sigmoid() >= 0.5
            continue
        size = logits.shape[-1]
        region = boundary_band(previous, boundary_width) | boundary_band(stage_targets[k - 1] > 0.5, boundary_width)
        region = upsample_logits(region[:, None].float(), size)[:, 0] >= 0.5
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        losses.append((per_pixel * region).sum() / region.sum().clamp(min=1).float())
        # the assembled prediction, as at inference but from the raw previous logits (docs/design.md §4.1)
        band = upsample_logits(boundary_band(previous, 1)[:, None].float(), size)[:, 0] >= 0.5
        coarse = upsample_logits(stage_logits[k - 1].detach(), size)[:, 0]
        previous = torch.where(band, logits.detach(), coarse).sigmoid() >= 0.5
    return sum(w * l for w, l in zip(stage_weights, losses))


def semantic_loss(
    semantic_logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``loss_semantic``: BCE over every pixel of the batch, padding included (docs/design.md §4.2).

    Args:
        semantic_logits: (B, 1, h, w).
        target: (B, h, w) {0, 1}.
        weight: (B, h, w) {0, 1} or None; pixels of weight 0 (the boxes of box-only instances,
            whose pixels nobody labelled) are left out of the loss and of its mean.
    """
    if weight is None:
        return F.binary_cross_entropy_with_logits(semantic_logits[:, 0], target, reduction="mean")
    per_pixel = F.binary_cross_entropy_with_logits(semantic_logits[:, 0], target, reduction="none")
    return (per_pixel * weight).sum() / weight.sum().clamp(min=1)


def box_head_loss(
    class_logits: torch.Tensor,
    box_regression: torch.Tensor,
    labels: list[torch.Tensor],
    regression_targets: list[torch.Tensor],
    cls_weight: float = 2.0,
    reg_weight: float = 2.0,
    reg_loss: str = "l1",
) -> dict[str, torch.Tensor]:
    """Box-head losses as in the RefineMask configs: CE and L1, each with weight 2.0 (docs/design.md §4.3).

    The regression loss is summed over positive RoIs' 4 deltas and divided by the number of
    sampled RoIs, as both mmdetection and torchvision normalise it. ``reg_loss="smooth_l1"``
    gives SmoothL1 with β=1 (the Cityscapes config).

    Args:
        class_logits: (R, C+1), background first (torchvision convention).
        box_regression: (R, 4·(C+1)).
        labels, regression_targets: per image, (R_i,) and (R_i, 4).
    """
    labels = torch.cat(labels, dim=0)
    regression_targets = torch.cat(regression_targets, dim=0)
    loss_cls = F.cross_entropy(class_logits, labels)
    positive = torch.nonzero(labels > 0).squeeze(1)
    deltas = box_regression.reshape(box_regression.shape[0], -1, 4)[positive, labels[positive]]
    if reg_loss == "l1":
        loss_reg = F.l1_loss(deltas, regression_targets[positive], reduction="sum")
    elif reg_loss == "smooth_l1":
        loss_reg = F.smooth_l1_loss(deltas, regression_targets[positive], beta=1.0, reduction="sum")
    else:
        raise ValueError(f"unknown box regression loss {reg_loss!r}; use 'l1' or 'smooth_l1'")
    loss_reg = loss_reg / max(1, labels.numel())
    return {"loss_classifier": cls_weight * loss_cls, "loss_box_reg": reg_weight * loss_reg}
