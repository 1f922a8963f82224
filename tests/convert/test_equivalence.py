"""A converted model computes what the official detector computes.

The same random official weights go to (a) ``refinemask convert`` + ``load_model`` and (b) an
independent re-computation written from the spec: tests/convert/mmdet_reference.py for the
backbone, FPN, RPN and box head (mmdetection v2.3 at test time) and
tests/modeling/spec_reference.py for the RefineMask head, its assembly, paste and BAR loss.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import refinemask
from refinemask.convert import convert_checkpoint
from refinemask.modeling.ops import paste_masks
from refinemask.modeling.transform import DetectionTransform, rescale_size
from tests.convert import mmdet_reference as mmdet
from tests.modeling import spec_reference as spec
from tests.scratch import scratch_dir
from tests.tolerances import SPEC_ATOL, assert_same_binary_masks

HEIGHT, WIDTH = 320, 480


def _mask_head_state(state: dict) -> dict:
    prefix = "roi_head.mask_head."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _same_in_order(boxes, ref_boxes, tol=1e-3):
    """How many leading positions hold the same box (max coordinate difference <= tol)."""
    n = min(len(boxes), len(ref_boxes))
    return int(((boxes[:n] - ref_boxes[:n]).abs().amax(dim=1) <= tol).sum())


def _found(boxes, ref_boxes, tol=1e-3):
    """How many of ``boxes`` have a reference box within tol (coordinates, not IoU: zero-size
    proposals are real candidates in mmdetection)."""
    if len(boxes) == 0 or len(ref_boxes) == 0:
        return 0
    return int(((boxes[:, None] - ref_boxes[None]).abs().amax(dim=2).amin(dim=1) <= tol).sum())


def _image():
    return torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def coco(official_state, official_file, tmp_path_factory):
    """The converted COCO R50 model, the official weights, and both sides' outputs on one image."""
    state = official_state("coco_r50")
    with scratch_dir(tmp_path_factory, "coco") as root:
        path = convert_checkpoint(official_file("coco_r50"), root / "coco.safetensors").path
        yield _coco_outputs(state, path)


def _coco_outputs(state, path) -> dict:
    # test at the image's own size (no resize, so both sides see the same pixels); 20
    # detections per image keep the mask branch fast
    model = refinemask.load_model(path, min_size=[HEIGHT], detections_per_img=20)
    image = _image()
    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        proposals = model.rpn(images, features)[0][0]
        output = model([image])[0]
        ref_features = mmdet.fpn_forward(state, mmdet.resnet_forward(state, mmdet.normalise_and_pad(image)))
        ref_proposals, ref_proposal_scores = mmdet.rpn_proposals(state, ref_features, (HEIGHT, WIDTH))
        on_ref_proposals = model.roi_heads(features, [ref_proposals], images.image_sizes)[0][0]
        ref_dets = mmdet.bbox_head(state, ref_features, ref_proposals, (HEIGHT, WIDTH), 0.05, 0.5, 20)
    return {
        "state": state, "model": model, "images": images, "features": features, "proposals": proposals, "output": output,
        "ref_features": ref_features, "ref_proposals": ref_proposals, "ref_proposal_scores": ref_proposal_scores,
        "on_ref_proposals": on_ref_proposals, "ref_dets": ref_dets,
    }


def test_the_model_input_is_the_official_normalised_padded_image(coco):
    expected = mmdet.normalise_and_pad(_image())
    assert coco["images"].tensors.shape == expected.shape
    assert (coco["images"].tensors - expected).abs().max() < SPEC_ATOL


def test_fpn_features_match_the_reference(coco):
    ours = list(coco["features"].values())
    assert len(ours) == 5
    for a, b in zip(ours, coco["ref_features"]):
        assert a.shape == b.shape
        # float32 summation order over 50 layers; values reach ~20
        assert (a - b).abs().max() <= 1e-5 * b.abs().max().clamp(min=1)


def test_rpn_proposals_match_the_reference(coco):
    ours, ref = coco["proposals"], coco["ref_proposals"]
    assert len(ours) == len(ref) == 1000
    assert coco["ref_proposal_scores"].unique().numel() == 1000  # no float32 ties (next test has them)
    assert _same_in_order(ours, ref) == 1000


def test_sigmoid_ranking_keeps_mmdetections_proposals_when_float32_scores_tie(coco):
    # three times larger RPN logits: many confident anchors share a float32 score (423 distinct
    # among the 1000 proposals), where torchvision's ranking by logits picks other candidates
    state = dict(coco["state"])
    state["rpn_head.rpn_cls.weight"] = state["rpn_head.rpn_cls.weight"] * 3
    rpn = copy.deepcopy(coco["model"].rpn)
    rpn.head.cls_logits.weight.data.mul_(3)
    features = dict(zip(coco["features"], coco["ref_features"]))
    with torch.no_grad():
        ref, scores = mmdet.rpn_proposals(state, coco["ref_features"], (HEIGHT, WIDTH))
        found = {}
        for rank_by_sigmoid in (True, False):
            rpn.rank_by_sigmoid = rank_by_sigmoid
            found[rank_by_sigmoid] = _found(rpn(coco["images"], features)[0][0], ref)
    assert scores.unique().numel() < 500
    assert found[True] == 1000  # the same set; order among equal scores is not defined by mmdetection
    assert found[False] < 1000


def test_zero_size_proposals_are_kept_as_in_mmdetection(coco):
    ref = coco["ref_proposals"]
    zero = ((ref[:, 2] - ref[:, 0]) * (ref[:, 3] - ref[:, 1]) == 0).sum()
    assert zero > 0  # proposals clipped to nothing at the image border; torchvision drops them
    ours = coco["proposals"]
    assert ((ours[:, 2] - ours[:, 0]) * (ours[:, 3] - ours[:, 1]) == 0).sum() == zero


def test_box_head_detections_on_the_same_proposals_match(coco):
    ours = coco["on_ref_proposals"]
    boxes, scores, labels = coco["ref_dets"]
    assert len(ours["boxes"]) == len(boxes) == 20
    assert _same_in_order(ours["boxes"], boxes) == 20
    assert torch.equal(ours["labels"], labels + 1)  # mmdetection's labels are 0-based
    assert (ours["scores"] - scores).abs().max() < SPEC_ATOL


def test_end_to_end_detections_and_pasted_masks_match(coco):
    out, state = coco["output"], coco["state"]
    boxes, scores, labels = coco["ref_dets"]
    assert _same_in_order(out["boxes"], boxes) == len(boxes) == len(out["boxes"])
    assert torch.equal(out["labels"], labels + 1)
    assert (out["scores"] - scores).abs().max() < SPEC_ATOL
    # the mask branch of the reference on the reference detections (docs/design.md §5)
    rois = torch.cat([boxes.new_zeros((len(boxes), 1)), boxes], dim=1)
    with torch.no_grad():
        pooled = mmdet.roi_extract(coco["ref_features"][:4], rois, 14)
        stage_logits, _ = spec.head_forward(_mask_head_state(state), pooled, coco["ref_features"][0], rois, labels)
        ref_probs = spec.paste(spec.assemble(stage_logits).sigmoid(), boxes, HEIGHT, WIDTH)
    assert out["masks"].shape == (20, 1, HEIGHT, WIDTH)
    assert (ref_probs >= 0.5).any()
    assert_same_binary_masks(out["masks"], ref_probs)


# -- the mask branch through roi_heads, from the same FPN features, RoIs and labels -------------


@pytest.fixture(scope="module")
def lvis(official_state, official_file, tmp_path_factory):
    with scratch_dir(tmp_path_factory, "lvis") as root:
        path = convert_checkpoint(official_file("lvis_r50"), root / "lvis.safetensors").path
        model = refinemask.load_model(path, min_size=[HEIGHT])
        with torch.no_grad():
            features = model.backbone(model.transform([_image()])[0].tensors)
        yield {"state": official_state("lvis_r50"), "model": model, "features": features}


def _instances(num_classes, seed=0):
    """Three GT instances (ellipses), twelve positive RoIs around them at all FPN levels."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(HEIGHT) + 0.5, torch.arange(WIDTH) + 0.5, indexing="ij")
    gt_boxes = torch.tensor([[20.0, 30.0, 90.0, 110.0], [150.0, 40.0, 330.0, 200.0], [60.0, 60.0, 470.0, 315.0]])
    masks = []
    for x1, y1, x2, y2 in gt_boxes.tolist():
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        masks.append(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1)
    gt_index = torch.arange(12) % 3
    jitter = (torch.rand(12, 4, generator=g) - 0.5) * 16
    boxes = gt_boxes[gt_index] + jitter
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, WIDTH)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, HEIGHT)
    labels = torch.randint(1, num_classes + 1, (12,), generator=g)
    return boxes, labels, gt_index, torch.stack(masks).to(torch.uint8)


@pytest.fixture(scope="module", params=["coco", "lvis"])
def mask_branch(request):
    """The converted model's mask branch (through roi_heads) and the spec's, on the same FPN
    features, RoIs, labels and ground truth."""
    side = request.getfixturevalue(request.param)
    model, state = side["model"], side["state"]
    heads = model.roi_heads
    features = side["features"]
    boxes, labels, gt_index, gt_masks = _instances(model.config.num_classes)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    target = {"boxes": torch.zeros(3, 4), "labels": torch.ones(3, dtype=torch.int64), "masks": gt_masks}
    with torch.no_grad():
        pooled = heads.mask_roi_pool.pool_rois(features, rois)
        stage_logits = heads.mask_head.instance_forward(pooled, heads.mask_head.semantic_forward(features["0"]), rois, labels - 1)
        probs = heads.predict_masks(features, [boxes], [labels])[0]
        losses = heads.mask_loss(features, [boxes], [labels], [gt_index], [target], [(HEIGHT, WIDTH)])
        ref_pooled = mmdet.roi_extract([features[k] for k in "0123"], rois, 14)
        ref_logits, ref_semantic = spec.head_forward(_mask_head_state(state), ref_pooled, features["0"], rois, labels - 1)
    return {
        "boxes": boxes, "gt_index": gt_index, "gt_masks": gt_masks, "pooled": pooled, "ref_pooled": ref_pooled,
        "stage_logits": stage_logits, "ref_logits": ref_logits, "ref_semantic": ref_semantic, "probs": probs, "losses": losses,
    }


def test_stage_logits_through_roi_heads_match_the_spec(mask_branch):
    assert torch.equal(mask_branch["pooled"], mask_branch["ref_pooled"])
    ours, theirs = mask_branch["stage_logits"], mask_branch["ref_logits"]
    assert [tuple(t.shape) for t in ours] == [(12, 1, s, s) for s in (14, 28, 56, 112)]
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < SPEC_ATOL


def test_predict_masks_and_pasted_masks_match_the_spec(mask_branch):
    probs, boxes = mask_branch["probs"], mask_branch["boxes"]
    with torch.no_grad():
        ref_probs = spec.assemble(mask_branch["ref_logits"]).sigmoid()
    assert probs.shape == (12, 1, 112, 112)
    assert (probs - ref_probs).abs().max() < SPEC_ATOL
    pasted = paste_masks(probs, boxes, HEIGHT, WIDTH)
    ref_pasted = spec.paste(ref_probs, boxes, HEIGHT, WIDTH)
    assert (ref_pasted >= 0.5).any()
    assert_same_binary_masks(pasted, ref_pasted)


def test_mask_losses_through_roi_heads_match_the_spec(mask_branch):
    gt_masks = mask_branch["gt_masks"]
    with torch.no_grad():
        stage_targets = mmdet.bitmap_stage_targets(gt_masks, mask_branch["boxes"], mask_branch["gt_index"])
        ref_instance = spec.bar_loss(mask_branch["ref_logits"], stage_targets)
        sem_target = mmdet.semantic_target(gt_masks, (HEIGHT, WIDTH), (HEIGHT // 4, WIDTH // 4))
        ref_semantic = F.binary_cross_entropy_with_logits(mask_branch["ref_semantic"][:, 0], sem_target)
    assert all(t.any() and not t.all() for t in stage_targets)
    losses = mask_branch["losses"]
    assert abs(losses["loss_instance"].item() - ref_instance.item()) < SPEC_ATOL
    assert abs(losses["loss_semantic"].item() - ref_semantic.item()) < SPEC_ATOL


def test_lvis_box_head_keeps_mmdetections_1e4_threshold_and_300_detections(lvis):
    model, state, features = lvis["model"], lvis["state"], lvis["features"]
    g = torch.Generator().manual_seed(4)
    xy = torch.rand(1000, 2, generator=g) * torch.tensor([WIDTH, HEIGHT])
    proposals = torch.cat([xy, xy + 8 + torch.rand(1000, 2, generator=g) * 250], dim=1)
    proposals[:, 0::2] = proposals[:, 0::2].clamp(0, WIDTH)
    proposals[:, 1::2] = proposals[:, 1::2].clamp(0, HEIGHT)
    heads = model.roi_heads
    with torch.no_grad():
        class_logits, box_regression = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, [proposals])))
        boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, [proposals], [(HEIGHT, WIDTH)])
        ref = mmdet.bbox_head(state, [features[k] for k in "0123"], proposals, (HEIGHT, WIDTH), 1e-4, 0.5, 300)
    assert len(boxes[0]) == len(ref[0]) == 300
    assert _same_in_order(boxes[0], ref[0]) == 300
    assert torch.equal(labels[0], ref[2] + 1)
    assert scores[0].min() > 1e-4 and (scores[0] - ref[1]).abs().max() < SPEC_ATOL


# -- resizing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, scale, expected",
    [((480, 640), (800, 1333), (800, 1067)), ((640, 480), (800, 1333), (1067, 800)),
     ((500, 1500), (800, 1333), (444, 1333)), ((1024, 2048), (1024, 2048), (1024, 2048))],
)
def test_resize_rounds_to_nearest_like_mmcv(size, scale, expected):
    assert rescale_size(*size, *scale) == expected
    images, _ = DetectionTransform(scale[0], scale[1])([torch.rand(3, *size)])
    assert images.image_sizes[0] == expected
