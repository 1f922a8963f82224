"""mmdetection v2.3's RPN anchors on torchvision's ``AnchorGenerator`` interface (docs/design.md §6.2).

torchvision rounds base anchors to integers and derives each level's stride as
padded-size // grid-size (61 instead of 64 on P6 for an 800-high image); with the official
weights that changes most proposals. Here base anchors are exact (±22.63 rather than ±23) and
strides are fixed, so converted checkpoints give mmdetection's proposals.
"""
from __future__ import annotations

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator


class ExactAnchorGenerator(AnchorGenerator):
    """Anchors of size ``scale × stride`` with the given aspect ratios, centred on (x·s, y·s).

    Args:
        strides: stride of each feature level (4, 8, 16, 32, 64 for P2–P6).
        scale: anchor size in strides (mmdetection's ``octave_base_scale``, 8).
        ratios: height/width ratios (0.5, 1, 2), in the order the RPN's channels expect.
    """

    def __init__(self, strides=(4, 8, 16, 32, 64), scale: float = 8.0, ratios=(0.5, 1.0, 2.0)):
        sizes = tuple((int(scale * s),) for s in strides)
        super().__init__(sizes=sizes, aspect_ratios=(tuple(ratios),) * len(strides))
        self.strides = tuple(strides)
        self.cell_anchors = [self._exact_base(s * scale, ratios) for s in strides]

    @staticmethod
    def _exact_base(size: float, ratios) -> torch.Tensor:
        r = torch.as_tensor(ratios, dtype=torch.float32)
        h_ratio = torch.sqrt(r)
        w_ratio = 1.0 / h_ratio
        ws = size * w_ratio
        hs = size * h_ratio
        return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1)

    def forward(self, image_list, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        grid_sizes = [fm.shape[-2:] for fm in feature_maps]
        # coordinates, not activations: float32 also under autocast, where the feature maps are
        # fp16/bf16 and anchors in their dtype would round to 1 px (fp16) or 8 px (bf16) steps
        # at 1024-2048 px, moving every proposal and RPN target with them
        dtype = torch.promote_types(feature_maps[0].dtype, torch.float32)
        device = feature_maps[0].device
        self.set_cell_anchors(dtype, device)
        strides = [
            [torch.empty((), dtype=torch.int64, device=device).fill_(s), torch.empty((), dtype=torch.int64, device=device).fill_(s)]
            for s in self.strides[: len(grid_sizes)]
        ]
        per_image = torch.cat(self.grid_anchors(grid_sizes, strides), dim=0)
        return [per_image for _ in range(len(image_list.image_sizes))]

