"""torchvision's region proposal network with mmdetection v2.3's candidate ranking as an option.

Shapes: B images; A anchors of all levels of one image.

Before NMS, both keep the best ``pre_nms_top_n`` candidates of each FPN level. torchvision ranks
them by logits; mmdetection by float32 sigmoid scores. The two orders differ only where
distinct logits give the same float32 score (confident anchors, sigmoid near 1), but that is
where the best proposals are: with official weights about 3% of proposals changed (docs/design.md
§6.2). ``rank_by_sigmoid=True`` ranks as mmdetection does, breaking ties by anchor order (a
stable sort; mmdetection's own tie order depends on its GPU sort and is not reproducible).
"""
from __future__ import annotations

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.rpn import RegionProposalNetwork


class Float32BoxCoder(det_utils.BoxCoder):
    """torchvision's box coder, decoding in float32 (or float64 for a float64 model) whatever the deltas' precision.

    Under autocast the deltas come out of a convolution or linear layer in fp16/bf16, and
    torchvision's decoder casts the boxes down to them: coordinates above 1024 px would be rounded
    to steps of 1 px (fp16) or 8 px (bf16), and mask targets cannot be rasterised from bf16 boxes.
    """

    @classmethod
    def like(cls, coder: det_utils.BoxCoder) -> Float32BoxCoder:
        return cls(coder.weights, coder.bbox_xform_clip)

    def decode(self, rel_codes: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        wide = torch.promote_types(rel_codes.dtype, torch.float32)
        return super().decode(rel_codes.to(wide), [b.to(wide) for b in boxes])


class ProposalNetwork(RegionProposalNetwork):
    """``RegionProposalNetwork`` plus ``rank_by_sigmoid`` and ``min_size`` as arguments.

    Args (beyond torchvision's):
        rank_by_sigmoid: rank each level's candidates by float32 sigmoid scores (mmdetection)
            instead of logits (torchvision).
        min_size: proposals narrower or shorter than this are dropped (torchvision 1e-3;
            mmdetection 0, which keeps boxes clipped to zero size).
    """

    def __init__(self, *args, rank_by_sigmoid: bool = False, min_size: float = 1e-3, **kwargs):
        super().__init__(*args, **kwargs)
        self.box_coder = Float32BoxCoder.like(self.box_coder)
        self.rank_by_sigmoid = rank_by_sigmoid
        self.min_size = min_size

    def _get_top_n_idx(self, objectness: torch.Tensor, num_anchors_per_level: list[int]) -> torch.Tensor:
        """(B, A) objectness logits -> (B, K) indices of each level's best candidates, level by level."""
        if not self.rank_by_sigmoid:
            return super()._get_top_n_idx(objectness, num_anchors_per_level)
        chosen = []
        offset = 0
        for logits in objectness.split(num_anchors_per_level, dim=1):
            if torch.jit.is_tracing():
                # ONNX export: a stable sort does not export, but ONNX TopK breaks ties by the
                # lower index (its spec), which is the same order. 1 / (1 + exp(-x)) because
                # onnxruntime's Sigmoid rounds saturated scores differently from torch's (other
                # ties); k is a traced min, as in torchvision's RPN: the anchor count varies
                keep = det_utils._topk_min(logits, self.pre_nms_top_n(), 1)
                scores = torch.reciprocal(1 + torch.exp(-logits))
                chosen.append(scores.topk(keep, dim=1).indices + offset)
            else:
                keep = min(logits.shape[1], self.pre_nms_top_n())
                order = logits.sigmoid().sort(dim=1, descending=True, stable=True).indices
                chosen.append(order[:, :keep] + offset)
            offset += logits.shape[1]
        return torch.cat(chosen, dim=1)
