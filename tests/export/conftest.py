"""Tiny detectors that detect something: random ResNet-18 weights, 128-px images, a few RoIs.

With random weights a detector finds nothing above its score threshold and a mask head paints
nothing, which tests nothing. :func:`confident_tiny_model` biases the box classifier towards the
foreground classes (so every image has ``detections_per_img`` detections with distinct scores)
and centres the 28x28 stage's logits on zero (so masks cover part of their box, with edges for
the later stages to refine).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from refinemask import build_model

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


@pytest.fixture(scope="session", autouse=True)
def one_thread_in_export(one_thread):
    """The export tests run with one torch thread (:func:`tests.conftest.one_thread`)."""
