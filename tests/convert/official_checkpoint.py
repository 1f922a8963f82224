"""Checkpoints in the official mmdetection v2.3 layout, with random values of the real shapes.

The layout is written out from docs/design.md §1 and §7 (mmdetection's ResNet, FPN, RPNHead,
Shared2FCBBoxHead and the RefineMask head), not derived from our model. Values are random
but scaled so that the network behaves like a trained one in the ways the tests need:
activations stay O(1) through 101 layers, RPN scores are spread, and the box head keeps a
few dozen detections above 0.05.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

from tests.modeling.official_layout import official_mask_head_shapes, official_simple_mask_head_shapes

# variant -> (classes, depth, classes of the last mask stage)
VARIANTS = {
    "coco_r50": (80, 50, None),
    "coco_r101": (80, 101, None),
    "lvis_r50": (1203, 50, 1),
    "lvis_r101": (1203, 101, 1),
    "cityscapes_r50": (8, 50, None),
}

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def official_shapes(
    num_classes: int, depth: int = 50, last_stage_classes: int | None = None, mask_head: bool = True, **simple
) -> OrderedDict:
    """Key -> shape of the whole mmdetection detector, in registration order.

    With ``simple`` options (``faster_better=True``, and optionally ``num_convs_instance`` and
    ``num_convs_semantic``), the mask head is the faster-better SimpleRefineMaskHead; either head
    takes ``instance_channels`` and ``semantic_channels`` (official 256)."""
    shapes: OrderedDict = OrderedDict()

    def bn(name, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{p}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["backbone.conv1.weight"] = (64, 3, 7, 7)
    bn("backbone.bn1", 64)
    in_c = 64
    for stage, blocks in enumerate(RESNET_BLOCKS[depth], 1):
        mid = 64 * 2 ** (stage - 1)
        out_c = mid * 4
        for b in range(blocks):
            p = f"backbone.layer{stage}.{b}"
            c = in_c if b == 0 else out_c
            shapes[f"{p}.conv1.weight"] = (mid, c, 1, 1)
            bn(f"{p}.bn1", mid)
            shapes[f"{p}.conv2.weight"] = (mid, mid, 3, 3)
            bn(f"{p}.bn2", mid)
            shapes[f"{p}.conv3.weight"] = (out_c, mid, 1, 1)
            bn(f"{p}.bn3", out_c)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (out_c, c, 1, 1)
                bn(f"{p}.downsample.1", out_c)
        in_c = out_c
    for i, c in enumerate((256, 512, 1024, 2048)):
        shapes[f"neck.lateral_convs.{i}.conv.weight"] = (256, c, 1, 1)
        shapes[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
    for i in range(4):
        shapes[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        shapes[f"neck.fpn_convs.{i}.conv.bias"] = (256,)
    for name, out_c, k in (("rpn_conv", 256, 3), ("rpn_cls", 3, 1), ("rpn_reg", 12, 1)):
        shapes[f"rpn_head.{name}.weight"] = (out_c, 256, k, k)
        shapes[f"rpn_head.{name}.bias"] = (out_c,)
    shapes["roi_head.bbox_head.fc_cls.weight"] = (num_classes + 1, 1024)
    shapes["roi_head.bbox_head.fc_cls.bias"] = (num_classes + 1,)
    shapes["roi_head.bbox_head.fc_reg.weight"] = (4 * num_classes, 1024)
    shapes["roi_head.bbox_head.fc_reg.bias"] = (4 * num_classes,)
    shapes["roi_head.bbox_head.shared_fcs.0.weight"] = (1024, 256 * 7 * 7)
    shapes["roi_head.bbox_head.shared_fcs.0.bias"] = (1024,)
    shapes["roi_head.bbox_head.shared_fcs.1.weight"] = (1024, 1024)
    shapes["roi_head.bbox_head.shared_fcs.1.bias"] = (1024,)
    if mask_head and simple.pop("faster_better", False):
        head_shapes = official_simple_mask_head_shapes(num_classes, last_stage_classes or 1, **simple)
    elif mask_head:
        head_shapes = official_mask_head_shapes(num_classes, last_stage_classes, **simple)
    else:
        head_shapes = {}
    if head_shapes:
        for key, shape in head_shapes.items():
            shapes["roi_head.mask_head." + key] = shape
    return shapes


def _value(key: str, shape: tuple, g: torch.Generator) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.tensor(12345, dtype=torch.int64)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=g) * 0.1
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if ".bn" in key or ".downsample.1." in key:
        if key.endswith(".weight"):
            # the last BN of a residual block small: the sum stays O(1) over 33 blocks
            scale = 0.2 if ".bn3." in key else 1.0
            return (torch.rand(shape, generator=g) * 0.5 + 0.5) * scale
        return torch.randn(shape, generator=g) * 0.1
    if key == "rpn_head.rpn_cls.weight":
        return torch.randn(shape, generator=g) * 1.0 / math.sqrt(fan_in)
    if key == "rpn_head.rpn_cls.bias":
        return torch.full(shape, -2.0)
    if key.startswith(("rpn_head.rpn_reg.", "roi_head.bbox_head.fc_reg.")):
        return torch.randn(shape, generator=g) * (0.1 / math.sqrt(fan_in) if key.endswith("weight") else 0.05)
    if key == "roi_head.bbox_head.fc_cls.weight":
        # narrower for LVIS: 1203 classes above a 1e-4 threshold would be 300k candidates
        spread = 0.35 if shape[0] > 1000 else 1.0
        return torch.randn(shape, generator=g) * spread / math.sqrt(fan_in)
    if key == "roi_head.bbox_head.fc_cls.bias":
        bias = torch.zeros(shape)
        # background (mmdetection: the last row) wins for most RoIs; a few dozen to a few hundred
        # (LVIS: score > 1e-4) candidates remain per image
        bias[-1] = {8: 3.0, 80: 6.0, 1203: 12.0}.get(shape[0] - 1, 6.0)
        return bias
    if key.endswith(".bias"):
        return torch.randn(shape, generator=g) * 0.05
    if key.startswith("roi_head.mask_head."):
        # mask logits O(1-10): the 0.5 thresholds of assembly and paste see unsaturated values
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)
    if key.startswith("roi_head.bbox_head.shared_fcs."):
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)
    # convs: variance preserving through ReLU
    return torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)


def official_state_dict(
    num_classes: int, depth: int = 50, last_stage_classes: int | None = None, seed: int = 0, mask_head: bool = True,
    **simple,
) -> OrderedDict:
    """A random state dict of the official detector (mmdetection keys and shapes); ``simple`` as
    in :func:`official_shapes`."""
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (k, _value(k, s, g)) for k, s in official_shapes(num_classes, depth, last_stage_classes, mask_head, **simple).items()
    )


def official_checkpoint(state: dict, classes: tuple[str, ...] | None = None) -> dict:
    """mmcv's checkpoint dict around ``state`` (meta as mmdetection v2.3's train script writes it)."""
    meta = {"mmdet_version": "2.3.0", "config": "model = dict(type='MaskRCNN', ...)", "epoch": 12, "iter": 87960}
    if classes is not None:
        meta["CLASSES"] = classes
    return {"meta": meta, "state_dict": state}
