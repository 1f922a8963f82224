"""A small RefineMask model overfits one synthetic image: the whole training path learns."""
import time

import torch

from refinemask import build_model
from refinemask.data.coco import CocoDetection
from refinemask.data.synthetic import make_synthetic


def mean_best_mask_iou(model, image, target) -> float:
    """Mean over GT instances of the best IoU with a predicted binary mask."""
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    model.train()
    gt = target["masks"].bool()
    pred = out["masks"][:, 0] >= 0.5
    if pred.shape[0] == 0:
        return 0.0
    inter = (gt[:, None] & pred[None]).flatten(2).sum(-1).float()
    union = (gt[:, None] | pred[None]).flatten(2).sum(-1).float()
    return (inter / union.clamp(min=1)).max(dim=1).values.mean().item()


def test_refinemask_overfits_one_synthetic_image_to_mask_iou_0_9(tmp_path):
    paths = make_synthetic(tmp_path / "data", 1, size=128, seed=3, preset="easy")
    image, target = CocoDetection(paths.root / "annotations.json", paths.images)[0]
    target = {k: torch.as_tensor(target[k]) for k in ("boxes", "labels", "masks")} | {"polygons": target["polygons"]}
    torch.manual_seed(0)
    model = build_model(
        num_classes=5, backbone="resnet18", min_size=[128], max_size=128, trainable_backbone_layers=5,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50,
        box_batch_size_per_image=64, detections_per_img=10,
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=1e-4)
    model.train()
    start, iou, steps = time.time(), 0.0, 0
    while steps < 200 and iou < 0.9:
        for _ in range(20):
            loss = sum(model([image], [target]).values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
            optimizer.step()
        steps += 20
        iou = mean_best_mask_iou(model, image, target)
    print(f"overfit: mask IoU {iou:.3f} after {steps} steps in {time.time() - start:.0f} s")
    assert iou >= 0.9
