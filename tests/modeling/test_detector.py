"""The whole detector under torchvision's contract."""
import numpy as np
import pytest
import torch

from refinemask import build_model
from refinemask.errors import RefineMaskError
from tests.tiny_models import image_and_target, tiny_model
from tests.tolerances import KERNEL_ATOL, assert_same_binary_masks


@pytest.mark.parametrize("sizes", [[(100, 150)], [(120, 90), (64, 200)], [(80, 80), (150, 100), (97, 131)]])
def test_eval_outputs_one_dict_per_image_with_masks_at_the_input_size(model, sizes):
    model.eval()
    images = [torch.rand(3, h, w) for h, w in sizes]
    with torch.no_grad():
        out = model(images)
    assert len(out) == len(images)
    for o, (h, w) in zip(out, sizes):
        n = o["boxes"].shape[0]
        assert o["boxes"].shape == (n, 4) and o["scores"].shape == (n,) and o["labels"].dtype == torch.int64
        assert o["masks"].shape == (n, 1, h, w)
        assert o["masks"].min() >= 0 and o["masks"].max() <= 1
        if n:
            assert o["boxes"][:, 2].max() <= w + 1e-3 and o["boxes"][:, 3].max() <= h + 1e-3


def test_training_returns_the_rpn_box_instance_and_semantic_losses(model):
    model.train()
    batch = [image_and_target(96, 128, seed=1), image_and_target(128, 96, seed=2)]
    losses = model([b[0] for b in batch], [b[1] for b in batch])
    assert set(losses) == {
        "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_instance", "loss_semantic",
    }
    assert all(torch.isfinite(v) for v in losses.values())


def test_zero_detections_give_empty_outputs_of_the_right_shapes():
    model = tiny_model(box_score_thresh=1.01)
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 70, 90)])[0]
    assert out["boxes"].shape == (0, 4)
    assert out["masks"].shape == (0, 1, 70, 90)


@pytest.mark.parametrize("mask_head", ["refinemask", "simple_refinemask", "maskrcnn"])
def test_a_training_image_without_instances_gives_finite_losses(mask_head):
    model = tiny_model(mask_head)
    model.train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 64, 80, dtype=torch.uint8)}
    losses = model([torch.rand(3, 64, 80)], [empty])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


@pytest.mark.parametrize("mask_head", ["refinemask", "simple_refinemask", "maskrcnn"])
def test_gradients_reach_every_trainable_parameter(mask_head):
    model = tiny_model(mask_head, trainable_backbone_layers=5)
    model.train()
    image, target = image_and_target(128, 128, n=3, seed=3)
    sum(model([image], [target]).values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []


def test_maskrcnn_head_predicts_28x28_masks_pasted_to_the_image():
    model = tiny_model("maskrcnn", box_score_thresh=0.0)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(model.transform([torch.rand(3, 128, 128)])[0].tensors)
        boxes = [torch.tensor([[10.0, 10.0, 60.0, 80.0]])]
        probs = model.roi_heads.predict_masks(feats, boxes, [torch.tensor([2])])
    assert probs[0].shape == (1, 1, 28, 28)


def test_refinemask_predicts_112_masks_and_a_coarse_28_view():
    model = tiny_model()
    model.eval()
    with torch.no_grad():
        feats = model.backbone(model.transform([torch.rand(3, 128, 128)])[0].tensors)
        boxes = [torch.tensor([[10.0, 10.0, 60.0, 80.0], [0.0, 0.0, 30.0, 30.0]])]
        labels = [torch.tensor([1, 3])]
        fine = model.roi_heads.predict_masks(feats, boxes, labels)
        coarse = model.roi_heads.predict_masks(feats, boxes, labels, coarse=True)
    assert fine[0].shape == (2, 1, 112, 112) and coarse[0].shape == (2, 1, 28, 28)


def test_chunked_mask_inference_equals_unchunked():
    model = tiny_model()
    model.eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        feats = model.backbone(model.transform([torch.rand(3, 128, 128, generator=g)])[0].tensors)
        xy = torch.rand(7, 2, generator=g) * 50
        boxes = [torch.cat([xy, xy + 20], 1)]
        labels = [torch.randint(1, 4, (7,), generator=g)]
        whole = model.roi_heads.predict_masks(feats, boxes, labels)[0]
        # 7 boxes in chunks of 3: the last box runs alone, a batch of one, with other kernels
        model.roi_heads.mask_chunk_size = 3
        chunked = model.roi_heads.predict_masks(feats, boxes, labels)[0]
    assert (whole - chunked).abs().max() < KERNEL_ATOL
    assert_same_binary_masks(chunked, whole)


def test_polygon_targets_are_used_when_given():
    model = tiny_model()
    model.train()
    image, target = image_and_target(128, 128, n=1, seed=4)
    x0, y0, x1, y1 = target["boxes"][0].tolist()
    target["polygons"] = [[np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float32)]]
    losses = model([image], [target])
    assert torch.isfinite(losses["loss_instance"])


def test_unknown_mask_head_and_bad_option_are_clear_errors():
    with pytest.raises(RefineMaskError, match="mask_head"):
        build_model(num_classes=3, mask_head="pointrend")
    with pytest.raises(RefineMaskError, match="did you mean 'max_size'"):
        build_model(num_classes=3, backbone="resnet18", max_siz=100)
    with pytest.raises(RefineMaskError, match="unknown backbone"):
        build_model(num_classes=3, backbone="resnet5")


def test_roi_sampling_options_reach_both_pools_and_default_to_the_official_settings():
    default = tiny_model()
    for pool in (default.roi_heads.box_roi_pool, default.roi_heads.mask_roi_pool):
        assert (pool.sampling_ratio, pool.aligned) == (0, True)
    torchvision_like = tiny_model(roi_sampling_ratio=2, roi_aligned=False)
    for pool in (torchvision_like.roi_heads.box_roi_pool, torchvision_like.roi_heads.mask_roi_pool):
        assert (pool.sampling_ratio, pool.aligned) == (2, False)
    with pytest.raises(RefineMaskError, match="roi_sampling_ratio"):
        tiny_model(roi_sampling_ratio=-1)


def test_mask_positives_per_image_caps_the_rois_that_train_the_mask_head(monkeypatch):
    model = tiny_model(mask_positives_per_image=2)
    model.train()
    seen = []
    original = model.roi_heads.mask_loss

    def spy(features, boxes, *args):
        seen.append([len(b) for b in boxes])
        return original(features, boxes, *args)

    monkeypatch.setattr(model.roi_heads, "mask_loss", spy)
    image, target = image_and_target(128, 128, n=3, seed=5)
    model([image], [target])
    assert seen and all(n <= 2 for n in seen[0]) and sum(seen[0]) > 0


def test_small_logits_init_starts_mask_losses_near_log2():
    model = tiny_model(mask_logits_init="small")
    model.train()
    image, target = image_and_target(128, 128, n=2, seed=6)
    losses = model([image], [target])
    # every stage starts at p≈0.5: BCE ≈ log 2 per pixel, weighted 0.25+0.5+0.75+1
    assert abs(losses["loss_instance"].item() - 2.5 * 0.6931) < 0.2
    assert abs(losses["loss_semantic"].item() - 0.6931) < 0.05


@pytest.mark.parametrize("mask_head", ["refinemask", "simple_refinemask", "maskrcnn"])
@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_fpn_channels_narrow_the_fpn_and_both_mask_heads(mask_head, backbone):
    model = tiny_model(mask_head, backbone=backbone, fpn_channels=64)
    assert model.backbone.out_channels == 64
    feats = model.backbone(torch.rand(1, 3, 128, 128))
    assert all(f.shape[1] == 64 for f in feats.values())
    if mask_head != "maskrcnn":
        head = model.roi_heads.mask_head
        assert head.semantic_convs[0].conv.weight.shape == (64, 64, 3, 3)
        assert [s.semantic_transform_in.out_channels for s in head.stages] == [64, 32, 16]
    else:
        assert model.roi_heads.mask_head[0][0].weight.shape[:2] == (64, 64)
    model.train()
    image, target = image_and_target(128, 128, n=2, seed=4)
    losses = model([image], [target])
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    assert out["masks"].shape[-2:] == (128, 128)


def test_fpn_channels_too_small_is_a_clear_error():
    with pytest.raises(RefineMaskError, match="fpn_channels"):
        tiny_model(fpn_channels=4)


def test_the_faster_better_head_trains_on_the_bar_loss_alone_with_its_official_weights(monkeypatch):
    from refinemask.modeling import roi_heads as roi_heads_module
    from tests.modeling import spec_reference as ref

    model = tiny_model("simple_refinemask", mask_logits_init="small")
    heads = model.roi_heads
    assert heads.bar_stage_weights == (0.5, 0.75, 0.75, 1.0)
    assert heads.mask_head.stage_num_classes == (3, 3, 3, 1)
    seen = []
    original = roi_heads_module.bar_loss

    def spy(stage_logits, stage_targets, *args):
        seen.append(([s.detach() for s in stage_logits], stage_targets))
        return original(stage_logits, stage_targets, *args)

    monkeypatch.setattr(roi_heads_module, "bar_loss", spy)
    model.train()
    image, target = image_and_target(128, 128, n=2, seed=6)
    losses = model([image], [target])
    assert "loss_semantic" not in losses
    (stage_logits, stage_targets), = seen
    # the official BARCrossEntropyLoss with the faster-better config's weights, nothing else
    expected = ref.bar_loss(stage_logits, stage_targets, weights=(0.5, 0.75, 0.75, 1.0))
    assert abs(losses["loss_instance"].item() - expected.item()) < 1e-5


def test_explicit_head_settings_override_the_official_ones():
    model = tiny_model("simple_refinemask", bar_stage_weights=[1, 1, 1, 1], class_agnostic_last_stage=False)
    assert model.roi_heads.bar_stage_weights == (1, 1, 1, 1)
    assert model.roi_heads.mask_head.stage_num_classes == (3, 3, 3, 3)
    assert tiny_model("refinemask").roi_heads.mask_head.stage_num_classes == (3, 3, 3, 3)


def test_co_detr_settings_pool_mask_rois_from_p2_to_p6():
    model = tiny_model(
        "simple_refinemask", mask_instance_convs=1, mask_semantic_convs=2, mask_roi_strides=[4, 8, 16, 32, 64]
    )
    head = model.roi_heads.mask_head
    assert (len(head.instance_convs), len(head.semantic_convs)) == (1, 2)
    pool = model.roi_heads.mask_roi_pool
    assert pool.strides == [4, 8, 16, 32, 64] and pool.featmap_names[-1] == "pool"
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 256, 256))
    big = torch.tensor([[0.0, 0.0, 0.0, 1000.0, 1000.0]])  # sqrt(area) ≥ 896: P6 by mmdetection's rule
    pooled = pool.pool_rois(feats, big)
    from torchvision.ops import roi_align

    expected = roi_align(feats["pool"], big, 14, spatial_scale=1 / 64, sampling_ratio=0, aligned=True)
    assert torch.equal(pooled, expected)


def test_mask_roi_strides_outside_the_fpn_are_a_clear_error():
    with pytest.raises(RefineMaskError, match="mask_roi_strides"):
        tiny_model(mask_roi_strides=[4, 8, 128])


@pytest.mark.parametrize("mask_head", ["refinemask", "simple_refinemask"])
def test_narrow_heads_train_and_come_back_from_their_weights_file(mask_head, tmp_path):
    from refinemask import load_model
    from refinemask.model_files import save_weights

    model = tiny_model(mask_head, mask_instance_channels=32, mask_semantic_channels=16)
    assert model.roi_heads.mask_head.instance_convs[0].conv.weight.shape[:2] == (32, 256)
    assert model.roi_heads.mask_head.semantic_convs[-1].conv.weight.shape[:2] == (16, 16)
    model.train()
    image, target = image_and_target(128, 128, n=3, seed=5)
    losses = model([image], [target])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    loaded = load_model(save_weights(model.eval(), tmp_path / "narrow.safetensors"))
    assert (loaded.config.mask_instance_channels, loaded.config.mask_semantic_channels) == (32, 16)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("mask_head", ["refinemask", "maskrcnn"])
def test_mask_loss_to_features_false_keeps_the_mask_losses_out_of_the_backbone_and_fpn(mask_head):
    image, target = image_and_target(128, 160)
    grads = {}
    for flows in (True, False):
        model = tiny_model(mask_head, mask_loss_to_features=flows)
        model.train()
        losses = model([image], [target])
        mask_losses = sum(v for k, v in losses.items() if k in ("loss_instance", "loss_semantic", "loss_mask"))
        mask_losses.backward()
        fpn = [p.grad for n, p in model.backbone.named_parameters() if p.requires_grad]
        head = [p.grad for p in model.roi_heads.mask_head.parameters()]
        grads[flows] = (sum(0.0 if g is None else float(g.abs().sum()) for g in fpn),
                        sum(0.0 if g is None else float(g.abs().sum()) for g in head))
    assert grads[True][0] > 0 and grads[False][0] == 0.0  # the FPN learns from the masks only officially
    assert grads[False][1] > 0  # the mask head still learns
    assert tiny_model(mask_head).roi_heads.mask_loss_to_features  # official default
