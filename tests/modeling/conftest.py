import pytest
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


@pytest.fixture
def model():
    return tiny_model()
