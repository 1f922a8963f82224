"""The RefineMask head: official state-dict layout, and equality with a spec re-computation."""
import pytest
import torch

from refinemask.modeling.ops import assemble_stage_logits, paste_masks
from refinemask.modeling.refinemask_head import RefineMaskHead, select_class_logits
from tests.modeling import spec_reference as ref
from tests.modeling.official_layout import official_mask_head_shapes
from tests.tolerances import SPEC_ATOL, assert_same_binary_masks

VARIANTS = {"coco": (80, None), "lvis": (1203, 1), "cityscapes": (8, None)}


def make_head(num_classes, last):
    return RefineMaskHead(stage_num_classes=(num_classes,) * 3 + (last or num_classes,))


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_has_exactly_the_official_keys_shapes_and_order(variant):
    num_classes, last = VARIANTS[variant]
    expected = official_mask_head_shapes(num_classes, last)
    got = {k: tuple(v.shape) for k, v in make_head(num_classes, last).state_dict().items()}
    assert list(got) == list(expected)
    assert got == expected
    assert len(got) == 70


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_official_layout_state_dict_loads_strictly(variant):
    num_classes, last = VARIANTS[variant]
    official = {k: torch.randn(s) for k, s in official_mask_head_shapes(num_classes, last).items()}
    head = make_head(num_classes, last)
    head.load_state_dict(official, strict=True)
    assert torch.equal(head.stages[1].fuse_conv[0].weight, official["stages.1.fuse_conv.0.weight"])


def test_parameter_counts_match_the_spec():
    counts = {v: sum(p.numel() for p in make_head(*VARIANTS[v]).parameters()) for v in VARIANTS}
    assert counts == {"coco": 6_407_003, "lvis": 6_910_869, "cityscapes": 6_372_155}


def test_selecting_one_class_equals_computing_all_then_indexing():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 5, 1)
    feats = torch.randn(7, 16, 6, 6)
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    expected = conv(feats)[torch.arange(7), labels][:, None]
    assert torch.allclose(select_class_logits(feats, conv, labels), expected, atol=SPEC_ATOL)


def _inputs(num_classes, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    p2 = torch.randn(2, 256, 24, 32, generator=g)
    xy = torch.rand(n, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 50], 1)
    rois = torch.cat([torch.tensor([0.0, 1.0]).repeat(n // 2 + 1)[:n, None], boxes], 1)
    feats = torch.randn(n, 256, 14, 14, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return feats, p2, rois, labels


def _scaled_official_weights(num_classes, last, seed=0):
    # small weights keep logits O(1), so equality is tested where sigmoid is not saturated
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in official_mask_head_shapes(num_classes, last).items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_stage_logits_match_the_spec_recomputation(variant):
    num_classes, last = VARIANTS[variant]
    sd = _scaled_official_weights(num_classes, last)
    head = make_head(num_classes, last)
    head.load_state_dict(sd)
    feats, p2, rois, labels = _inputs(num_classes)
    with torch.no_grad():
        ours, semantic = head(feats, p2, rois, labels)
        theirs, semantic_ref = ref.head_forward(sd, feats, p2, rois, labels)
    assert torch.allclose(semantic, semantic_ref, atol=SPEC_ATOL)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert (a - b).abs().max() < SPEC_ATOL


def test_assembled_masks_and_pasted_binary_masks_match_the_spec_recomputation():
    sd = _scaled_official_weights(80, None, seed=1)
    head = make_head(80, None)
    head.load_state_dict(sd)
    feats, p2, rois, labels = _inputs(80, n=8, seed=1)
    with torch.no_grad():
        ours = assemble_stage_logits(head(feats, p2, rois, labels)[0])
        theirs = ref.assemble(ref.head_forward(sd, feats, p2, rois, labels)[0])
    assert ours.shape == (8, 1, 112, 112)
    assert (ours - theirs).abs().max() < SPEC_ATOL
    boxes = rois[:, 1:]
    pasted = paste_masks(ours.sigmoid(), boxes, 90, 100)
    pasted_ref = ref.paste(theirs.sigmoid(), boxes, 90, 100)
    assert (pasted_ref >= 0.5).any()
    assert_same_binary_masks(pasted, pasted_ref)


def test_lvis_last_stage_is_class_agnostic():
    head = make_head(1203, 1)
    feats, p2, rois, labels = _inputs(1203)
    with torch.no_grad():
        a = head(feats, p2, rois, labels)[0][-1]
        b = head(feats, p2, rois, torch.zeros_like(labels))[0][-1]
    # earlier stages depend on the label, so compare only how the last stage selects
    assert head.final_instance_logits.out_channels == 1
    assert a.shape == b.shape == (6, 1, 112, 112)


def test_zero_rois_give_empty_stage_outputs():
    head = make_head(3, None)
    with torch.no_grad():
        stages, semantic = head(torch.zeros(0, 256, 14, 14), torch.randn(1, 256, 8, 8), torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    assert [tuple(s.shape) for s in stages] == [(0, 1, 14, 14), (0, 1, 28, 28), (0, 1, 56, 56), (0, 1, 112, 112)]
    assert semantic.shape == (1, 1, 8, 8)


NARROW = dict(instance_channels=64, semantic_channels=32)  # conv_out_channels_instance / _semantic


def test_narrow_widths_give_the_official_layout_of_those_widths():
    head = RefineMaskHead(stage_num_classes=(8,) * 4, **NARROW)
    got = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    expected = official_mask_head_shapes(8, None, **NARROW)
    assert list(got) == list(expected) and got == expected
    # the first conv of each stack changes the width, the stages halve the instance width
    assert got["instance_convs.0.conv.weight"] == (64, 256, 3, 3) and got["semantic_convs.3.conv.weight"] == (32, 32, 3, 3)
    assert got["stages.2.semantic_transform_in.weight"] == (16, 32, 1, 1) and got["final_instance_logits.weight"] == (8, 8, 1, 1)


def test_narrow_heads_match_the_spec_recomputation():
    g = torch.Generator().manual_seed(3)
    sd = {k: torch.randn(s, generator=g) * 0.05 for k, s in official_mask_head_shapes(8, None, **NARROW).items()}
    head = RefineMaskHead(stage_num_classes=(8,) * 4, **NARROW)
    head.load_state_dict(sd)
    feats, p2, rois, labels = _inputs(8, seed=3)
    with torch.no_grad():
        ours, semantic = head(feats, p2, rois, labels)
        theirs, semantic_ref = ref.head_forward(sd, feats, p2, rois, labels)
    assert (semantic - semantic_ref).abs().max() < SPEC_ATOL
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and (a - b).abs().max() < SPEC_ATOL


def test_a_width_without_a_conv_to_reach_it_is_refused():
    with pytest.raises(ValueError, match="instance width 64 needs at least one instance conv"):
        RefineMaskHead(stage_num_classes=(8,) * 4, num_convs_instance=0, instance_channels=64)
    # the FPN's own width needs no conv (the stages then read the RoI features directly)
    RefineMaskHead(stage_num_classes=(8,) * 4, num_convs_instance=0, instance_channels=256)
