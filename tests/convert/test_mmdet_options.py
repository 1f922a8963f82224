"""The mmdetection-compatibility options that converted models switch on (docs/design.md §6.2),
and that every other model keeps torchvision's behaviour."""
import torch
from torchvision.models.detection.roi_heads import RoIHeads

from refinemask.config import ModelConfig
from tests.tiny_models import tiny_model


def test_models_keep_torchvisions_ranking_and_small_box_filters_by_default():
    config = ModelConfig()
    assert (config.rpn_rank_by_sigmoid, config.rpn_min_box_size, config.box_min_size) == (False, 1e-3, 1e-2)
    model = tiny_model()
    assert not model.rpn.rank_by_sigmoid and model.rpn.min_size == 1e-3
    assert model.roi_heads.box_min_size == 1e-2


def test_sigmoid_ranking_breaks_float32_ties_by_anchor_order_where_logits_would_not():
    model = tiny_model(rpn_pre_nms_top_n_test=2)
    model.eval()
    rpn = model.rpn
    # sigmoid(17), sigmoid(18), sigmoid(20) are all 1.0 in float32
    logits = torch.tensor([[20.0, 17.0, 18.0, 0.0, 3.0, 1.0]])
    assert rpn._get_top_n_idx(logits, [4, 2]).tolist() == [[0, 2, 4, 5]]  # by logits
    rpn.rank_by_sigmoid = True
    assert rpn._get_top_n_idx(logits, [4, 2]).tolist() == [[0, 1, 4, 5]]  # mmdetection: by score


def _box_head_inputs():
    g = torch.Generator().manual_seed(0)
    proposals = torch.rand(30, 2, generator=g) * 60
    proposals = torch.cat([proposals, proposals + 5 + torch.rand(30, 2, generator=g) * 30], dim=1)
    proposals[0, 2] = proposals[0, 0]  # a zero-width proposal, as mmdetection's RPN can give
    class_logits = torch.randn(30, 4, generator=g) * 3
    class_logits[0] = torch.tensor([-5.0, 5.0, -5.0, -5.0])
    box_regression = torch.randn(30, 16, generator=g) * 0.1
    return class_logits, box_regression, [proposals], [(100, 120)]


def test_our_box_post_processing_equals_torchvisions_by_default():
    heads = tiny_model(box_score_thresh=0.05).roi_heads
    inputs = _box_head_inputs()
    ours = heads.postprocess_detections(*inputs)
    theirs = RoIHeads.postprocess_detections(heads, *inputs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a[0], b[0])
    assert len(ours[0][0]) > 0


def test_box_min_size_zero_keeps_zero_size_detections_like_mmdetection():
    heads = tiny_model(box_score_thresh=0.05).roi_heads
    inputs = _box_head_inputs()
    default = heads.postprocess_detections(*inputs)[0][0]
    heads.box_min_size = 0.0
    kept = heads.postprocess_detections(*inputs)[0][0]
    zero_width = lambda b: int(((b[:, 2] - b[:, 0]) == 0).sum())
    assert zero_width(default) == 0 and zero_width(kept) == 1
    # the zero-width box has the best score; the rest move down one place
    assert kept[0, 0] == kept[0, 2] and torch.equal(kept[1:], default[: len(kept) - 1])


def test_rpn_min_size_zero_keeps_proposals_clipped_to_nothing():
    boxes = torch.tensor([[[0.0, 10.0, 0.0, 40.0], [5.0, 5.0, 30.0, 30.0], [50.0, 50.0, 90.0, 70.0]]])
    logits = torch.tensor([[2.0, 1.0, 0.5]])
    counts = []
    for min_size in (1e-3, 0.0):
        model = tiny_model(rpn_min_box_size=min_size)
        model.eval()
        kept, _ = model.rpn.filter_proposals(boxes, logits, [(100, 100)], [3])
        counts.append(len(kept[0]))
    assert counts == [2, 3]
