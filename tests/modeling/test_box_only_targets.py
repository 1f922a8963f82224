"""Box-only instances (a box, no segmentation) train the box head and are ignored for masks."""
from __future__ import annotations

import torch

from refinemask.modeling.losses import semantic_loss
from refinemask.modeling.roi_heads import mask_positives
from refinemask.modeling.targets import semantic_ignore_weight


def test_rois_matched_to_a_box_only_instance_get_no_mask_target():
    labels = torch.tensor([1, 0, 2, 2, 1])
    matched = torch.tensor([0, 0, 1, 2, 1])
    target = {"has_mask": torch.tensor([True, False, True])}
    assert mask_positives(labels, matched, target).tolist() == [0, 3]
    assert mask_positives(labels, matched, {}).tolist() == [0, 2, 3, 4]


def test_semantic_weight_is_zero_on_the_cells_a_box_only_box_touches():
    boxes = [torch.tensor([[4.0, 8.0, 13.0, 16.0]]), torch.zeros((0, 4))]
    weight = semantic_ignore_weight(boxes, (32, 32), (8, 8))
    assert weight.shape == (2, 8, 8)
    zero = (weight[0] == 0).nonzero().tolist()
    assert {tuple(z) for z in zero} == {(y, x) for y in range(2, 4) for x in range(1, 4)}
    assert weight[1].eq(1).all()
    assert semantic_ignore_weight([torch.zeros((0, 4))], (32, 32), (8, 8)) is None


def test_semantic_loss_leaves_weight_zero_pixels_out_of_its_mean():
    logits = torch.zeros(1, 1, 2, 2)
    logits[0, 0, 0, 0] = 10.0  # confidently foreground where the target says background
    target = torch.zeros(1, 2, 2)
    weight = torch.ones(1, 2, 2)
    weight[0, 0, 0] = 0
    assert torch.allclose(semantic_loss(logits, target, weight), torch.log(torch.tensor(2.0)))
    assert torch.allclose(semantic_loss(logits, target, torch.ones(1, 2, 2)), semantic_loss(logits, target))


def test_an_image_whose_instances_are_all_box_only_trains_boxes_and_no_mask():
    from tests.tiny_models import image_and_target, tiny_model

    model = tiny_model()
    model.train()
    image, target = image_and_target(96, 128)
    target["masks"].zero_()
    target["has_mask"] = torch.tensor([False, False])
    losses = model([image], [target])
    assert losses["loss_instance"].item() == 0.0  # no RoI got a mask target
    assert losses["loss_classifier"].item() > 0
    sum(losses.values()).backward()  # the graph stays connected
