"""An independent re-computation of the RefineMask head, written line by line from the spec.

It reads weights from a state dict with the official keys and uses only torch functionals, in
the official order of operations: all-class logits then label selection, the no-op resizes,
the Laplacian-kernel band of ``generate_block_target``, in-place assembly. The package's
implementation is checked against it (tests/modeling/test_equivalence.py).
"""
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def conv(x, sd, name, padding=0, dilation=1):
    return F.conv2d(x, sd[name + ".weight"], sd[name + ".bias"], padding=padding, dilation=dilation)


def head_forward(sd, instance_feats, p2, rois, labels, num_stages=3):
    """Spec §3: returns per-stage logits (14, 28, 56, 112) and the semantic logits."""
    x = instance_feats
    for i in range(2):
        x = F.relu(conv(x, sd, f"instance_convs.{i}.conv", padding=1))
    s = p2
    for i in range(4):
        s = F.relu(conv(s, sd, f"semantic_convs.{i}.conv", padding=1))
    semantic_pred = conv(s, sd, "semantic_logits")
    n = rois.shape[0]
    preds = []
    for k in range(num_stages):
        p = f"stages.{k}"
        size = x.shape[-1]
        sem = F.relu(conv(s, sd, p + ".semantic_transform_in"))
        sem = roi_align(sem, rois, (size, size), 0.25, 0, True)
        sem = F.relu(conv(sem, sd, p + ".semantic_transform_out"))
        logits = conv(x, sd, p + ".instance_logits")[torch.arange(n), labels][:, None]
        inst_mask = F.interpolate(logits.sigmoid(), size, mode="bilinear", align_corners=True)
        sem_mask = roi_align(semantic_pred.sigmoid(), rois, (size, size), 0.25, 0, True)
        sem_mask = F.interpolate(sem_mask, (size, size), mode="bilinear", align_corners=True)
        f = torch.cat([x, sem, inst_mask, sem_mask], 1)
        f = F.relu(conv(f, sd, p + ".fuse_conv.0"))
        b = sum(
            F.relu(conv(f, sd, f"{p}.fuse_conv.1.dilation_conv_{j}.conv", padding=d, dilation=d))
            for j, d in zip((1, 2, 3), (1, 3, 5))
        )
        f = F.relu(conv(b, sd, p + ".fuse_conv.1.merge_conv.conv"))
        f = F.relu(conv(f, sd, p + ".fuse_transform_out"))
        f = F.relu(F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False))
        inst_up = F.interpolate(logits.sigmoid(), 2 * size, mode="bilinear", align_corners=True)
        sem_up = F.interpolate(sem_mask, 2 * size, mode="bilinear", align_corners=True)
        x = torch.cat([f, inst_up, sem_up], 1)
        preds.append(logits)
    final = conv(x, sd, "final_instance_logits")
    final_labels = labels.clamp(max=0) if final.shape[1] == 1 else labels
    preds.append(final[torch.arange(n), final_labels][:, None])
    return preds, semantic_pred


def block_target(mask, w):
    """generate_block_target: 1 = band, 2 = foreground outside the band, 0 = background."""
    mask = mask.float()
    k = 2 * w + 1
    kernel = -torch.ones(1, 1, k, k)
    kernel[0, 0, w, w] = k * k - 1
    padded = F.pad(mask.unsqueeze(1), (w, w, w, w), "constant", 0)
    pos = F.conv2d(padded, kernel).clamp(min=0) / float(k * k)
    pos = (pos > 0.1).float().squeeze(1)
    neg = F.conv2d(1 - padded, kernel).clamp(min=0) / float(k * k)
    neg = (neg > 0.1).float().squeeze(1)
    out = torch.zeros_like(mask).long()
    out[(pos + neg) > 0] = 1
    out[(mask - pos) > 0] = 2
    return out


def assemble(stage_preds):
    """simple_test_mask's in-place refinement from the 28 stage."""
    preds = [p.clone() for p in stage_preds[1:]]
    for i in range(len(preds) - 1):
        binary = preds[i].squeeze(1).sigmoid() >= 0.5
        keep = (block_target(binary, 1) != 1).unsqueeze(1)
        size = preds[i + 1].shape[-2:]
        keep = F.interpolate(keep.float(), size, mode="bilinear", align_corners=True) >= 0.5
        up = F.interpolate(preds[i], size, mode="bilinear", align_corners=True)
        preds[i + 1][keep] = up[keep]
    return preds[-1]


def bar_loss(stage_preds, stage_targets, weights=(0.25, 0.5, 0.75, 1.0), width=2):
    losses = []
    pre = None
    for idx, (pred, target) in enumerate(zip(stage_preds, stage_targets)):
        pred = pred.squeeze(1)
        if idx <= 1:
            losses.append(F.binary_cross_entropy_with_logits(pred, target))
            pre = pred.sigmoid() >= 0.5
            continue
        region = (block_target(pre.float(), width) == 1) | (block_target(stage_targets[idx - 1], width) == 1)
        region = F.interpolate(region.unsqueeze(1).float(), pred.shape[-2:], mode="bilinear", align_corners=True)
        region = (region >= 0.5).squeeze(1)
        l = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
        losses.append(l[region].sum() / region.sum().clamp(min=1).float())
        band = (block_target(pre.float(), 1) == 1).unsqueeze(1).float()
        band = F.interpolate(band, pred.shape[-2:], mode="bilinear", align_corners=True) >= 0.5
        up = F.interpolate(stage_preds[idx - 1], pred.shape[-2:], mode="bilinear", align_corners=True)
        up[band] = stage_preds[idx][band]
        pre = up.squeeze(1).sigmoid() >= 0.5
    return sum(w * l for w, l in zip(weights, losses))


def paste(mask_probs, boxes, h, w):
    """_do_paste_mask over the whole image with grid_sample."""
    n = boxes.shape[0]
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
    gy = (ys[None] - y0) / (y1 - y0) * 2 - 1
    gx = (xs[None] - x0) / (x1 - x0) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=3)
    return F.grid_sample(mask_probs, grid, align_corners=False)
