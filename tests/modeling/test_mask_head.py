"""The one mask-head interface: every head answers the RoI heads, the export and serve alike."""
import copy

import pytest
import torch

from refinemask.modeling.detector import MASK_HEAD_CLASSES, head_setting
from refinemask.modeling.mask_head import MaskRCNNMaskHead, SemanticOutput, foreground_index
from tests.tiny_models import tiny_model

SIZES = {"refinemask": (112, 28), "simple_refinemask": (112, 28), "maskrcnn": (28, None)}


@pytest.mark.parametrize("mask_head", sorted(SIZES))
def test_every_head_names_its_output_and_coarse_sizes(mask_head):
    head = tiny_model(mask_head).roi_heads.mask_head
    assert (head.output_size, head.coarse_size) == SIZES[mask_head]


@pytest.mark.parametrize("mask_head", sorted(SIZES))
def test_every_head_returns_named_semantic_outputs_and_one_logit_map_per_stage(mask_head):
    model = tiny_model(mask_head).eval()
    head = model.roi_heads.mask_head
    p2 = torch.rand(1, 256, 16, 16, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0.0, 4.0, 4.0, 40.0, 50.0], [0.0, 10.0, 0.0, 30.0, 20.0]])
    with torch.no_grad():
        semantic = head.semantic_forward(p2)
        stages = head.instance_forward(torch.rand(2, 256, 14, 14), semantic, rois, torch.tensor([0, 2]))
    assert isinstance(semantic, SemanticOutput)
    assert (semantic.logits is not None) == (mask_head == "refinemask")  # the one with a semantic loss
    assert [s.shape[-1] for s in stages] == list(head.stage_sizes)
    assert head.final_logits(stages).shape == (2, 1, head.output_size, head.output_size)


def test_mask_rcnn_head_logits_are_its_predictor_channel_of_each_label():
    model = tiny_model("maskrcnn").eval()
    head = model.roi_heads.mask_head
    feats = torch.rand(2, 256, 14, 14, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 3])  # the detector's 1..C
    with torch.no_grad():
        got = head.instance_forward(feats, head.semantic_forward(None), None, foreground_index(labels))[0]
        every = model.roi_heads.mask_predictor(torch.nn.Sequential.forward(head, feats))
    assert torch.equal(got[:, 0], every[torch.arange(2), labels])


def test_mask_rcnn_head_keeps_torchvision_keys_and_shares_its_predictor():
    model = tiny_model("maskrcnn")
    keys = list(model.state_dict())
    assert any(k.startswith("roi_heads.mask_predictor.mask_fcn_logits.") for k in keys)
    assert not any(k.startswith("roi_heads.mask_head.predictor") for k in keys)
    twin = copy.deepcopy(model)
    assert twin.roi_heads.mask_head.predictor is twin.roi_heads.mask_predictor


def test_each_head_class_holds_its_official_defaults():
    assert MASK_HEAD_CLASSES["simple_refinemask"].config_defaults["bar_stage_weights"] == (0.5, 0.75, 0.75, 1.0)
    assert MASK_HEAD_CLASSES["maskrcnn"] is MaskRCNNMaskHead
    config = tiny_model("simple_refinemask").config
    assert head_setting(config, "class_agnostic_last_stage") is True
