"""Tiny models and inputs that several test folders share.

- :func:`tiny_model`: a small, fast model for shape and gradient tests (random ResNet-18, small
  images); :func:`image_and_target` gives it an image with box-shaped instances.
- :func:`confident_tiny_model`: a tiny detector that detects something. With random weights a
  detector finds nothing above its score threshold and a mask head paints nothing, which tests
  nothing; this one biases the box classifier towards the foreground classes (so every image has
  ``detections_per_img`` detections with distinct scores) and centres the 28x28 stage's logits on
  zero (so masks cover part of their box, with edges for the later stages to refine).
  :func:`smooth_image` and :func:`as_tensor` make its inputs.
"""
from __future__ import annotations

import numpy as np
import torch

from refinemask import build_model


def tiny_model(mask_head="refinemask", **kw):
    """A small, fast model for shape and gradient tests (random ResNet-18, small images)."""
    torch.manual_seed(0)
    options = dict(
        backbone="resnet18", min_size=[128], max_size=192,
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
        box_batch_size_per_image=32, detections_per_img=20,
    )
    options.update(kw)
    return build_model(num_classes=3, mask_head=mask_head, **options)


def image_and_target(h, w, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g)
    boxes, masks = [], torch.zeros(n, h, w, dtype=torch.uint8)
    for i in range(n):
        x0, y0 = int(w * 0.1 + i * w * 0.4), int(h * 0.2)
        x1, y1 = x0 + int(w * 0.35), y0 + int(h * 0.5)
        masks[i, y0:y1, x0:x1] = 1
        boxes.append([x0, y0, x1, y1])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.arange(1, n + 1, dtype=torch.int64).clamp(max=3),
        "masks": masks,
    }
    return image, target


CATEGORY_NAMES = ["cat", "dog", "bird"]


def confident_tiny_model(mask_head: str = "refinemask", **options) -> torch.nn.Module:
    torch.manual_seed(0)
    settings = {
        "backbone": "resnet18", "min_size": [128], "max_size": 192,
        "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 50, "detections_per_img": 5,
    }
    settings.update(options)
    model = build_model(num_classes=3, mask_head=mask_head, **settings)
    with torch.no_grad():
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.bias.copy_(torch.tensor([-4.0, 2.0, 1.0, 0.0]))  # background last
        predictor.bbox_pred.weight.mul_(0.1)  # boxes stay near their proposals
        if mask_head == "refinemask":
            # the random head's 28x28 logits are about -74 +- 25 on these images
            model.roi_heads.mask_head.stages[1].instance_logits.bias += 74.0
        elif mask_head == "simple_refinemask":
            # the faster-better head's 28x28 logits are about 47 +- 124 on these images
            model.roi_heads.mask_head.stage_instance_logits[1].bias -= 47.0
    model.category_names = list(CATEGORY_NAMES)
    model.label_to_category = {1: 1, 2: 2, 3: 3}
    return model.eval()


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: colour blobs (bilinear-upsampled noise)."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((1, 3, max(2, height // 12), max(2, width // 12)), dtype=np.float32))
    big = torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    return big[0].permute(1, 2, 0).numpy().copy()


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
