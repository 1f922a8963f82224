"""An independent re-computation of the faster-better head (SimpleRefineMaskHead), from the spec.

Spec §4.4, §6 (SimpleRefineMaskHead) and §8.20, with the official source's order of operations
where the spec is silent: all-class logits then label selection; ``SimpleRoIAlign`` as mmcv's
point sampling (bin centres, then ``grid_sample(align_corners=False)`` with zero padding, one
image at a time); the global-average branch as ``avg_pool2d`` over the whole window; the mask
appended before the ×2 upsampling; the last logits at 56 upsampled to 112 with
align_corners=True. Weights come from a state dict with the official keys. The package's
implementation is checked against it (tests/modeling/test_simple_head.py).
"""
import torch
import torch.nn.functional as F

from tests.modeling.spec_reference import conv


def simple_roi_align(features, rois, size, stride):
    """mmcv SimpleRoIAlign(aligned=True): one sample per bin centre, grid_sample with zero padding."""
    n = rois.shape[0]
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # relative to the RoI, in [0, 1]
    out = features.new_zeros((n, features.shape[1], size, size))
    for b in range(features.shape[0]):
        index = torch.nonzero(rois[:, 0].long() == b).squeeze(1)
        if index.numel() == 0:
            continue
        x1, y1, x2, y2 = (rois[index, i][:, None] for i in range(1, 5))
        xs = x1 + centres[None] * (x2 - x1)  # (k, size) image pixels
        ys = y1 + centres[None] * (y2 - y1)
        h, w = features.shape[-2:]
        # image pixels -> map-relative [0, 1] (spatial scale 1/stride over the map size) -> [-1, 1]
        gx = xs / stride / w * 2 - 1
        gy = ys / stride / h * 2 - 1
        k = index.numel()
        grid = torch.stack([gx[:, None, :].expand(k, size, size), gy[:, :, None].expand(k, size, size)], dim=3)
        # one image's map, sampled at every RoI's points
        sampled = F.grid_sample(features[b : b + 1].expand(k, -1, -1, -1), grid, align_corners=False)
        out[index] = sampled
    return out


def head_forward(sd, instance_feats, p2, rois, labels, num_convs_instance=2, num_convs_semantic=4):
    """Per-stage logits (14, 28, 56, 112) of SimpleRefineMaskHead."""
    x = instance_feats
    for i in range(num_convs_instance):
        x = F.relu(conv(x, sd, f"instance_convs.{i}.conv", padding=1))
    s = p2
    for i in range(num_convs_semantic):
        s = F.relu(conv(s, sd, f"semantic_convs.{i}.conv", padding=1))
    n = rois.shape[0]
    preds = []
    for k in range(3):
        p = f"stages.{k}"
        size = x.shape[-1]
        logits = conv(x, sd, f"stage_instance_logits.{k}")[torch.arange(n), labels][:, None]
        sem = F.relu(conv(s, sd, p + ".semantic_transform_in"))
        sem = simple_roi_align(sem, rois, size, 4)
        f = torch.cat([x, sem, logits.sigmoid()], 1)
        f = F.relu(conv(f, sd, p + ".fuse_conv.0"))
        b = sum(
            F.relu(conv(f, sd, f"{p}.fuse_conv.1.dilation_conv_{j}.conv", padding=d, dilation=d))
            for j, d in zip((1, 2, 3), (1, 3, 5))
        )
        b = b + F.avg_pool2d(f, f.shape[-1])
        f = F.relu(conv(b, sd, p + ".fuse_conv.1.merge_conv.conv"))
        f = F.relu(conv(f, sd, p + ".fuse_transform_out"))
        f = torch.cat([f, logits.sigmoid()], 1)
        if k < 2:
            f = F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)
        x = f
        preds.append(logits)
    final = conv(x, sd, "stage_instance_logits.3")
    final_labels = labels.clamp(max=0) if final.shape[1] == 1 else labels
    final = final[torch.arange(n), final_labels][:, None]
    preds.append(F.interpolate(final, scale_factor=2, mode="bilinear", align_corners=True))
    return preds
