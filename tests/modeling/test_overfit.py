"""A small RefineMask model learns one synthetic image: the whole training path learns.

The fast test takes a few steps and checks that every loss the mask head trains falls; the slow
one (``pytest -m slow``) trains until the masks reach IoU 0.9.
"""
import time

import pytest
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


def _one_image_and_model(root, size: int, **options):
    paths = make_synthetic(root / "data", 1, size=size, seed=3, preset="easy")
    image, target = CocoDetection(paths.root / "annotations.json", paths.images)[0]
    target = {k: torch.as_tensor(target[k]) for k in ("boxes", "labels", "masks")} | {"polygons": target["polygons"]}
    torch.manual_seed(0)
    model = build_model(
        num_classes=5, backbone="resnet18", min_size=[size], max_size=size, trainable_backbone_layers=5,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50,
        box_batch_size_per_image=64, detections_per_img=10, **options,
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=1e-4)
    return image, target, model.train(), optimizer


def test_a_few_steps_on_one_image_lower_the_mask_loss(tmp_path):
    # the official logit init starts the BAR loss in the hundreds; a working path brings it down fast
    image, target, model, optimizer = _one_image_and_model(tmp_path, 64, mask_positives_per_image=4)
    history = []
    for _ in range(6):
        losses = model([image], [target])
        history.append(losses["loss_instance"].item())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert history[-1] < 0.5 * history[0], history


@pytest.mark.slow
def test_refinemask_overfits_one_synthetic_image_to_mask_iou_0_9(tmp_path):
    image, target, model, optimizer = _one_image_and_model(tmp_path, 128)
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
