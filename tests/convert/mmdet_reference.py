"""An independent mmdetection-v2.3-style test-time detector, written from the spec.

Plain torch functionals plus ``torchvision.ops`` (``roi_align``, ``nms``), reading weights
straight from an official-layout state dict (mmdetection keys, background last). Nothing here
imports refinemask: the converted model is checked against this.

Spec points encoded (§1, §1.1, §5, §6.2): ResNet (pytorch style, BN in eval mode), FPN with
nearest top-down and P6 = max_pool(P5, 1, 2); anchors with unrounded base sizes
``stride · scale · ratio`` centred at (x·s, y·s), strides 4..64; RPN decoding with means 0 /
stds 1, the top ``nms_pre`` per level ranked by sigmoid score (a descending sort), NMS per
level (mmcv's batched_nms: coordinate offsets), the best ``max_num`` overall; RoIAlign
aligned=True sampling 0 with the finest-scale-56 level rule; box head with stds 0.1/0.1/0.2/0.2
and background last; multiclass NMS (score > thr strictly, per-class NMS, top max_per_img).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import nms, roi_align

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def normalise_and_pad(image: torch.Tensor, divisor: int = 32) -> torch.Tensor:
    """(3, H, W) RGB in 0-1 -> (1, 3, Hp, Wp) normalised on 0-255, zero-padded bottom/right."""
    x = (image * 255.0 - MEAN) / STD
    h, w = x.shape[-2:]
    ph, pw = math.ceil(h / divisor) * divisor, math.ceil(w / divisor) * divisor
    return F.pad(x, (0, pw - w, 0, ph - h))[None]


# -- backbone and neck ----------------------------------------------------------------------


def _bn(x, sd, name):
    return F.batch_norm(
        x, sd[name + ".running_mean"], sd[name + ".running_var"], sd[name + ".weight"], sd[name + ".bias"],
        training=False, eps=1e-5,
    )


def resnet_forward(sd: dict, x: torch.Tensor) -> list[torch.Tensor]:
    """mmdetection ResNet (style='pytorch': stride on the 3x3 conv), C2-C5."""
    x = F.relu(_bn(F.conv2d(x, sd["backbone.conv1.weight"], stride=2, padding=3), sd, "backbone.bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    outs = []
    for stage in range(1, 5):
        b = 0
        while f"backbone.layer{stage}.{b}.conv1.weight" in sd:
            p = f"backbone.layer{stage}.{b}"
            stride = 2 if (b == 0 and stage > 1) else 1
            out = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"]), sd, p + ".bn1"))
            out = F.relu(_bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=stride, padding=1), sd, p + ".bn2"))
            out = _bn(F.conv2d(out, sd[p + ".conv3.weight"]), sd, p + ".bn3")
            if p + ".downsample.0.weight" in sd:
                identity = _bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), sd, p + ".downsample.1")
            else:
                identity = x
            x = F.relu(out + identity)
            b += 1
        outs.append(x)
    return outs


def fpn_forward(sd: dict, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """mmdetection FPN, num_outs=5 without extra convs: P2-P6."""
    lat = [
        F.conv2d(f, sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"])
        for i, f in enumerate(feats)
    ]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
    outs = [
        F.conv2d(l, sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
        for i, l in enumerate(lat)
    ]
    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
    return outs


# -- anchors, box coder, NMS ----------------------------------------------------------------


def level_anchors(stride: int, height: int, width: int, scale: float = 8.0, ratios=(0.5, 1.0, 2.0)) -> torch.Tensor:
    """(height·width·3, 4) anchors of one level: position-major, ratio-minor."""
    r = torch.tensor(ratios)
    h_ratios = torch.sqrt(r)
    w_ratios = 1 / h_ratios
    ws = stride * w_ratios * scale
    hs = stride * h_ratios * scale
    base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)
    sx = torch.arange(width) * stride
    sy = torch.arange(height) * stride
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    shifts = torch.stack([xx.reshape(-1), yy.reshape(-1), xx.reshape(-1), yy.reshape(-1)], dim=-1).float()
    return (base[None] + shifts[:, None]).reshape(-1, 4)


def delta2bbox(rois, deltas, means, stds, max_shape):
    """mmdetection's DeltaXYWHBBoxCoder.decode: (N, 4) rois, (N, 4k) deltas -> (N, 4k) boxes."""
    means = deltas.new_tensor(means).repeat(deltas.shape[1] // 4)
    stds = deltas.new_tensor(stds).repeat(deltas.shape[1] // 4)
    d = deltas * stds + means
    dx, dy, dw, dh = d[:, 0::4], d[:, 1::4], d[:, 2::4], d[:, 3::4]
    max_ratio = abs(math.log(16 / 1000))
    dw = dw.clamp(min=-max_ratio, max=max_ratio)
    dh = dh.clamp(min=-max_ratio, max=max_ratio)
    px = ((rois[:, 0] + rois[:, 2]) * 0.5)[:, None]
    py = ((rois[:, 1] + rois[:, 3]) * 0.5)[:, None]
    pw = (rois[:, 2] - rois[:, 0])[:, None]
    ph = (rois[:, 3] - rois[:, 1])[:, None]
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = px + pw * dx
    gy = py + ph * dy
    h, w = max_shape
    x1 = (gx - gw * 0.5).clamp(min=0, max=w)
    y1 = (gy - gh * 0.5).clamp(min=0, max=h)
    x2 = (gx + gw * 0.5).clamp(min=0, max=w)
    y2 = (gy + gh * 0.5).clamp(min=0, max=h)
    return torch.stack([x1, y1, x2, y2], dim=-1).view_as(deltas)


def mmcv_batched_nms(boxes, scores, groups, iou_thr):
    """mmcv v1.0.5 batched_nms: offset each group's boxes apart, one NMS; kept indices by score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    offsets = groups.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_thr)


# -- RPN ------------------------------------------------------------------------------------


def rpn_proposals(sd, feats, image_shape, nms_pre=1000, nms_thr=0.7, max_num=1000, strides=(4, 8, 16, 32, 64)):
    """RPNHead.simple_test_rpn for one image: (max_num, 4) proposals and their scores."""
    scores_all, deltas_all, anchors_all, levels = [], [], [], []
    for level, (f, stride) in enumerate(zip(feats, strides)):
        t = F.relu(F.conv2d(f, sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_conv.bias"], padding=1))
        cls = F.conv2d(t, sd["rpn_head.rpn_cls.weight"], sd["rpn_head.rpn_cls.bias"])[0]
        reg = F.conv2d(t, sd["rpn_head.rpn_reg.weight"], sd["rpn_head.rpn_reg.bias"])[0]
        scores = cls.permute(1, 2, 0).reshape(-1).sigmoid()
        deltas = reg.permute(1, 2, 0).reshape(-1, 4)
        anchors = level_anchors(stride, f.shape[-2], f.shape[-1])
        if scores.shape[0] > nms_pre:
            ranked, order = scores.sort(descending=True, stable=True)
            keep = order[:nms_pre]
            scores, deltas, anchors = ranked[:nms_pre], deltas[keep], anchors[keep]
        scores_all.append(scores)
        deltas_all.append(deltas)
        anchors_all.append(anchors)
        levels.append(torch.full((scores.shape[0],), level, dtype=torch.int64))
    scores = torch.cat(scores_all)
    proposals = delta2bbox(torch.cat(anchors_all), torch.cat(deltas_all), (0.0,) * 4, (1.0,) * 4, image_shape)
    keep = mmcv_batched_nms(proposals, scores, torch.cat(levels), nms_thr)[:max_num]
    return proposals[keep], scores[keep]


# -- RoI heads ------------------------------------------------------------------------------


def roi_levels(rois: torch.Tensor, num_levels: int = 4, finest_scale: float = 56.0) -> torch.Tensor:
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    return torch.floor(torch.log2(scale / finest_scale + 1e-6)).clamp(min=0, max=num_levels - 1).long()


def roi_extract(feats, rois, size, strides=(4, 8, 16, 32)):
    """SingleRoIExtractor: each RoI from its level, RoIAlign aligned=True sampling_ratio=0."""
    out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], size, size))
    levels = roi_levels(rois, len(strides))
    for level, stride in enumerate(strides):
        index = levels == level
        if index.any():
            out[index] = roi_align(feats[level], rois[index], size, 1.0 / stride, 0, True)
    return out


def bbox_head(sd, feats, proposals, image_shape, score_thr=0.05, nms_thr=0.5, max_per_img=100):
    """Shared2FCBBoxHead + get_bboxes + multiclass_nms for one image.

    Returns (K, 4) boxes, (K,) scores and (K,) 0-based labels, best first.
    """
    rois = torch.cat([proposals.new_zeros((proposals.shape[0], 1)), proposals], dim=1)
    x = roi_extract(feats[:4], rois, 7).flatten(1)
    x = F.relu(F.linear(x, sd["roi_head.bbox_head.shared_fcs.0.weight"], sd["roi_head.bbox_head.shared_fcs.0.bias"]))
    x = F.relu(F.linear(x, sd["roi_head.bbox_head.shared_fcs.1.weight"], sd["roi_head.bbox_head.shared_fcs.1.bias"]))
    cls = F.linear(x, sd["roi_head.bbox_head.fc_cls.weight"], sd["roi_head.bbox_head.fc_cls.bias"])
    reg = F.linear(x, sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"])
    scores = F.softmax(cls, dim=1)
    boxes = delta2bbox(proposals, reg, (0.0,) * 4, (0.1, 0.1, 0.2, 0.2), image_shape)
    return multiclass_nms(boxes, scores, score_thr, nms_thr, max_per_img)


def multiclass_nms(multi_boxes, multi_scores, score_thr, nms_thr, max_num):
    num_classes = multi_scores.shape[1] - 1
    boxes = multi_boxes.view(multi_scores.shape[0], num_classes, 4)
    scores = multi_scores[:, :-1]  # background is the last column
    valid = scores > score_thr
    boxes = boxes[valid]
    labels = valid.nonzero()[:, 1]
    scores = scores[valid]
    keep = mmcv_batched_nms(boxes, scores, labels, nms_thr)[:max_num]
    return boxes[keep], scores[keep], labels[keep]


# -- training targets of the mask branch (bitmap ground truth) --------------------------------


def bitmap_stage_targets(gt_masks, boxes, gt_index, sizes=(14, 28, 56, 112)):
    """docs/design.md §3.1 (bitmaps): RoIAlign of the GT mask, scale 1, aligned, adaptive, then ≥ 0.5."""
    rois = torch.cat([gt_index.float()[:, None], boxes], dim=1)
    return [(roi_align(gt_masks[:, None].float(), rois, s, 1.0, 0, True)[:, 0] >= 0.5).float() for s in sizes]


def semantic_target(gt_masks, padded_shape, out_shape):
    """docs/design.md §3.2: union of the instances, zero-padded, bilinearly resized to 1/4, ≥ 0.5."""
    union = gt_masks.float().amax(dim=0)
    union = F.pad(union, (0, padded_shape[1] - union.shape[1], 0, padded_shape[0] - union.shape[0]))
    resized = F.interpolate(union[None, None], size=out_shape, mode="bilinear", align_corners=False)
    return (resized >= 0.5).float()[:, 0]
