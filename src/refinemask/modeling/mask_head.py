"""The one interface every mask head has, and the Mask R-CNN head behind it.

Shapes: B images; N RoIs; F the FPN's width; S a stage size.

The RoI heads, the ONNX export and ``serve`` drive every mask head the same way:

- ``semantic_forward(p2)`` -> :class:`SemanticOutput`, the per-image part (once per batch);
- ``instance_forward(roi_features, semantic, rois, labels)`` -> one (N, 1, S, S) logit map per
  stage in ``stage_sizes``; ``labels`` are 0-based foreground class indices (0..C-1), as in the
  official heads (their state dicts and the converted checkpoints index classes that way). The
  detector's labels are 1..C; :func:`foreground_index` is the one place they are converted;
- ``final_logits(stage_logits)`` -> the (N, 1, M, M) map the detector returns, M = ``output_size``;
- ``coarse_stage``: the index of the stage shown as the coarse mask (RefineMask's 28×28, before
  the boundary refinement), or None;
- ``refines_boundaries``: trained with the BAR loss over all stages (``loss_instance``), or with
  Mask R-CNN's per-pixel loss on its one stage (``loss_mask``);
- ``config_defaults``: the official value of each config field left None for this head.
"""
from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from refinemask.modeling.ops import assemble_stage_logits


class SemanticOutput(NamedTuple):
    """What ``semantic_forward`` returns (a tuple, so exports and old callers still unpack it).

    Attributes:
        logits: (B, 1, h, w) semantic logits, or None for a head without a semantic loss.
        stage_inputs: per fusion stage, the transformed semantic map (B, C_k, h, w).
        probs: (B, 1, h, w) semantic probabilities, or None where the head does not use them.
    """

    logits: torch.Tensor | None
    stage_inputs: list[torch.Tensor]
    probs: torch.Tensor | None


def foreground_index(labels: torch.Tensor) -> torch.Tensor:
    """The detector's labels (N,) in 1..C as the mask heads' class indices (N,) in 0..C-1."""
    return labels - 1


class MaskHeadInterface:
    """What the RoI heads read of a mask head besides its two forwards (see the module docstring)."""

    stage_sizes: tuple[int, ...]
    coarse_stage: ClassVar[int | None] = 1
    refines_boundaries: ClassVar[bool] = True
    config_defaults: ClassVar[dict] = {}

    @property
    def output_size(self) -> int:
        """M: the side of the mask logits the detector returns."""
        return int(self.stage_sizes[-1])

    @property
    def coarse_size(self) -> int | None:
        """The side of the coarse stage's logits, or None for a head without one."""
        return None if self.coarse_stage is None else int(self.stage_sizes[self.coarse_stage])

    def final_logits(self, stage_logits: list[torch.Tensor]) -> torch.Tensor:
        """(N, 1, M, M): the stages merged as at official inference (docs/design.md §5.2)."""
        return assemble_stage_logits(stage_logits)


class MaskRCNNMaskHead(MaskHeadInterface, MaskRCNNHeads):
    """torchvision's Mask R-CNN head (four 3×3 convs, then ``MaskRCNNPredictor``) as one 28×28 stage.

    Args:
        width: channels of the RoI features, the convs and the deconvolution (the FPN's width).
        num_classes_with_bg: C + 1, the predictor's class channels, background first.

    The convs are this module (torchvision's ``MaskRCNNHeads``, keys ``mask_head.*``), while the
    predictor must be registered on the RoI heads as ``mask_predictor`` (the detector does so):
    the state-dict keys stay torchvision's, so its checkpoints and our saved weights load
    unchanged. Hence ``predictor`` is kept here as a plain reference, not a submodule (which
    would list its weights twice).
    """

    stage_sizes = (28,)
    coarse_stage = None
    refines_boundaries = False
    config_defaults = {"bar_stage_weights": (0.25, 0.5, 0.75, 1.0), "class_agnostic_last_stage": False}

    def __init__(self, width: int, num_classes_with_bg: int):
        super().__init__(width, [width] * 4, 1)
        # built after the convs: the same random initialisation as before the adapter existed
        object.__setattr__(self, "predictor", MaskRCNNPredictor(width, width, num_classes_with_bg))

    def semantic_forward(self, p2: torch.Tensor) -> SemanticOutput:
        """Nothing per image: Mask R-CNN's head sees the RoI features only."""
        return SemanticOutput(None, [], None)

    def instance_forward(
        self, roi_features: torch.Tensor, semantic: SemanticOutput, rois: torch.Tensor, labels: torch.Tensor
    ) -> list[torch.Tensor]:
        """[(N, 1, 28, 28)]: each RoI's logits of its class; ``labels`` (N,) in 0..C-1."""
        logits = self.predictor(super().forward(roi_features))
        # the predictor's channel 0 is the background
        return [logits[torch.arange(roi_features.shape[0], device=logits.device), labels + 1][:, None]]

    def final_logits(self, stage_logits: list[torch.Tensor]) -> torch.Tensor:
        return stage_logits[0]
