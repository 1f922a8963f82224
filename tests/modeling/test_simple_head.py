"""The faster-better head (SimpleRefineMaskHead): official layout, and equality with a spec re-computation."""
import math

import pytest
import torch
from torchvision.ops import roi_align

from refinemask.modeling.losses import bar_loss
from refinemask.modeling.ops import assemble_stage_logits, paste_masks
from refinemask.modeling.simple_refinemask_head import SimpleRefineMaskHead, point_roi_align
from tests.modeling import simple_spec_reference as simple_ref
from tests.modeling import spec_reference as ref
from tests.modeling.official_layout import official_simple_mask_head_shapes

CO_DETR = dict(num_convs_instance=1, num_convs_semantic=2)


def make_head(num_classes=80, **kw):
    return SimpleRefineMaskHead(stage_num_classes=(num_classes,) * 3 + (1,), **kw)


def test_state_dict_has_exactly_the_official_62_keys_shapes_and_order():
    expected = official_simple_mask_head_shapes(80)
    got = {k: tuple(v.shape) for k, v in make_head().state_dict().items()}
    assert list(got) == list(expected)
    assert got == expected
    assert len(got) == 62


def test_co_detr_settings_drop_convs_and_keep_every_other_key():
    got = {k: tuple(v.shape) for k, v in make_head(**CO_DETR).state_dict().items()}
    assert got == official_simple_mask_head_shapes(80, num_convs_instance=1, num_convs_semantic=2)
    assert len(got) == 62 - 2 - 4


def test_an_official_layout_state_dict_loads_strictly():
    official = {k: torch.randn(s) for k, s in official_simple_mask_head_shapes(80).items()}
    head = make_head()
    head.load_state_dict(official, strict=True)
    assert torch.equal(head.stage_instance_logits[3].weight, official["stage_instance_logits.3.weight"])


def _rois(n, seed, width=100.0, height=80.0):
    """RoIs over two images, some touching or crossing the map border."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) - 8
    wh = 3 + torch.rand(n, 2, generator=g) * 50
    batch = torch.arange(n) % 2
    return torch.cat([batch[:, None].float(), xy, xy + wh], 1)


def test_point_roi_align_reads_bin_centres_with_zero_padding_like_mmcv():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 20, 25, generator=g)
    rois = _rois(12, seed=1)
    for size in (14, 28):
        ours = point_roi_align(features, rois, size, 4)
        theirs = simple_ref.simple_roi_align(features, rois, size, 4)
        assert (ours - theirs).abs().max() < 1e-5
    # and not what roi_align alone gives: it clamps border points instead of reading zeros
    clamped = roi_align(features, rois, 14, spatial_scale=0.25, sampling_ratio=1, aligned=True)
    assert (clamped - point_roi_align(features, rois, 14, 4)).abs().max() > 1e-2


def _weights(shapes, seed):
    # small weights keep logits O(1), so equality is tested where sigmoid is not saturated
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


def _inputs(num_classes, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    p2 = torch.randn(2, 256, 24, 32, generator=g)
    feats = torch.randn(n, 256, 14, 14, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return feats, p2, _rois(n, seed, 120.0, 90.0), labels


@pytest.mark.parametrize("settings", [{}, CO_DETR], ids=["official", "co-detr"])
def test_stage_logits_match_the_spec_recomputation(settings):
    sd = _weights(official_simple_mask_head_shapes(80, **settings), seed=0)
    head = make_head(**settings)
    head.load_state_dict(sd)
    feats, p2, rois, labels = _inputs(80)
    with torch.no_grad():
        ours = head(feats, p2, rois, labels)
        theirs = simple_ref.head_forward(sd, feats, p2, rois, labels, **settings)
    assert [tuple(o.shape) for o in ours] == [(6, 1, s, s) for s in (14, 28, 56, 112)]
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < 1e-5


def test_assembled_masks_and_pasted_binary_masks_match_the_spec_recomputation():
    sd = _weights(official_simple_mask_head_shapes(80), seed=1)
    head = make_head()
    head.load_state_dict(sd)
    feats, p2, rois, labels = _inputs(80, n=8, seed=1)
    with torch.no_grad():
        ours = assemble_stage_logits(head(feats, p2, rois, labels))
        theirs = ref.assemble(simple_ref.head_forward(sd, feats, p2, rois, labels))
    assert ours.shape == (8, 1, 112, 112)
    assert (ours - theirs).abs().max() < 1e-5
    boxes = rois[:, 1:]
    pasted = paste_masks(ours.sigmoid(), boxes, 90, 100) >= 0.5
    pasted_ref = ref.paste(theirs.sigmoid(), boxes, 90, 100) >= 0.5
    assert pasted.any() and torch.equal(pasted, pasted_ref)


def test_the_last_stage_is_class_agnostic_and_the_others_are_not():
    torch.manual_seed(2)
    head = SimpleRefineMaskHead(stage_num_classes=(3, 3, 3, 1), in_channels=64)
    g = torch.Generator().manual_seed(2)
    feats, p2, rois = torch.randn(4, 64, 14, 14, generator=g), torch.randn(2, 64, 24, 32, generator=g), _rois(4, 2)
    zeros, twos = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    with torch.no_grad():
        assert not torch.allclose(head(feats, p2, rois, zeros)[0], head(feats, p2, rois, twos)[0])
        # the last stage reads the label only through the earlier stages' logits
        for conv in head.stage_instance_logits[:3]:
            conv.weight.zero_()
            conv.bias.zero_()
        assert torch.equal(head(feats, p2, rois, zeros)[3], head(feats, p2, rois, twos)[3])
    assert head.stage_instance_logits[3].out_channels == 1


def test_zero_rois_give_empty_stage_outputs():
    head = SimpleRefineMaskHead(stage_num_classes=(3, 3, 3, 1))
    with torch.no_grad():
        stages = head(torch.zeros(0, 256, 14, 14), torch.randn(1, 256, 8, 8), torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    assert [tuple(s.shape) for s in stages] == [(0, 1, 14, 14), (0, 1, 28, 28), (0, 1, 56, 56), (0, 1, 112, 112)]


def test_bar_loss_with_the_faster_better_weights_is_3_log2_on_zero_logits():
    # every pixel costs log 2 whatever the target, and each later stage's band is not empty:
    # (0.5 + 0.75 + 0.75 + 1.0) * log 2
    g = torch.Generator().manual_seed(0)
    logits = [torch.zeros(3, 1, s, s) for s in (14, 28, 56, 112)]
    targets = [(torch.rand(3, s, s, generator=g) > 0.5).float() for s in (14, 28, 56, 112)]
    loss = bar_loss(logits, targets, (0.5, 0.75, 0.75, 1.0))
    assert abs(loss.item() - 3 * math.log(2)) < 1e-6


def test_bar_loss_with_the_faster_better_weights_matches_the_official_formulation():
    g = torch.Generator().manual_seed(4)
    logits = [torch.randn(5, 1, s, s, generator=g) * 2 for s in (14, 28, 56, 112)]
    targets = [(torch.rand(5, s, s, generator=g) > 0.5).float() for s in (14, 28, 56, 112)]
    weights = (0.5, 0.75, 0.75, 1.0)
    assert torch.allclose(bar_loss(logits, targets, weights), ref.bar_loss(logits, targets, weights), atol=1e-6)


def test_narrow_widths_give_the_official_layout_and_match_the_spec_recomputation():
    narrow = dict(instance_channels=64, semantic_channels=32, **CO_DETR)
    shapes = official_simple_mask_head_shapes(80, **narrow)
    head = make_head(**narrow)
    got = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert list(got) == list(shapes) and got == shapes
    assert got["stage_instance_logits.3.weight"] == (1, 8, 1, 1) and got["stages.0.semantic_transform_in.weight"] == (64, 32, 1, 1)
    sd = _weights(shapes, seed=4)
    head.load_state_dict(sd)
    feats, p2, rois, labels = _inputs(80, seed=4)
    with torch.no_grad():
        ours = head(feats, p2, rois, labels)
        theirs = simple_ref.head_forward(sd, feats, p2, rois, labels, **CO_DETR)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-5
