"""torchvision:NAME and timm:NAME backbones: one tiny model of each family builds, trains,
evaluates and round-trips through a weights file; the body holds exactly the library's weights;
stages, frozen BN and the one-line errors. Random weights only: nothing is downloaded."""
import re

import pytest
import torch
from torch import nn

from refinemask import build_model, load_model
from refinemask.data.coco import CocoDetection
from refinemask.data.synthetic import make_synthetic
from refinemask.errors import RefineMaskError
from refinemask.model_files import save_weights
from refinemask.modeling.backbone import build_backbone, is_norm_layer, stage_of_pieces

timm = pytest.importorskip("timm")

FAMILIES = [
    "torchvision:convnext_tiny",
    "torchvision:swin_t",
    "torchvision:swin_v2_t",
    "torchvision:regnet_y_400mf",
    "torchvision:efficientnet_b0",
    "torchvision:efficientnet_v2_s",
    "torchvision:mobilenet_v3_small",
    "torchvision:resnext50_32x4d",
    "timm:convnext_atto",
    "timm:swin_tiny_patch4_window7_224",
    "timm:regnety_002",
    "timm:efficientnet_b0",
    "timm:mobilenetv3_small_050",
    "timm:resnet18",
]


@pytest.fixture(scope="module")
def synthetic_image(tmp_path_factory):
    paths = make_synthetic(tmp_path_factory.mktemp("families"), 1, size=64, seed=3, preset="easy")
    image, target = CocoDetection(paths.root / "annotations.json", paths.images)[0]
    return image, {k: torch.as_tensor(target[k]) for k in ("boxes", "labels", "masks")} | {"polygons": target["polygons"]}


def _tiny(backbone: str, mask_head: str = "refinemask", **options):
    torch.manual_seed(0)
    settings = dict(
        backbone=backbone, min_size=[64], max_size=64, trainable_backbone_layers=5, mask_positives_per_image=2,
        rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=30, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=30,
        box_batch_size_per_image=32, box_score_thresh=0.0, detections_per_img=5, mask_logits_init="small",
    )
    settings.update(options)
    return build_model(num_classes=5, mask_head=mask_head, **settings)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_a_tiny_model_of_each_family_trains_evaluates_and_loads_back_equal(backbone, synthetic_image, tmp_path, one_thread):
    image, target = synthetic_image
    model = _tiny(backbone).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rpn_losses = []
    for _ in range(3):  # two steps, then the loss they lead to
        torch.manual_seed(0)  # the same anchor samples (and drop paths) each time
        losses = model([image], [target])
        # the RPN's loss is over fixed anchors, so it compares across steps; the heads' losses
        # are over proposals, which move with every step
        rpn_losses.append((losses["loss_objectness"] + losses["loss_rpn_box_reg"]).item())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert rpn_losses[2] < rpn_losses[1] < rpn_losses[0], rpn_losses
    model.eval()
    with torch.no_grad():
        (ours,) = model([image])
    assert set(ours) == {"boxes", "labels", "scores", "masks"} and ours["masks"].shape[1:] == (1, 64, 64)
    loaded = load_model(save_weights(model, tmp_path / "m.safetensors"))
    assert loaded.config.backbone == backbone  # the file records the backbone; load_model rebuilt it
    with torch.no_grad():
        (again,) = loaded([image])
    for key in ours:
        assert torch.equal(ours[key], again[key]), key


def test_torchvision_body_holds_exactly_the_classifier_weights(tmp_path):
    from torchvision import models

    torch.manual_seed(1)
    classifier = models.convnext_tiny().eval()
    torch.save(classifier.state_dict(), tmp_path / "convnext.pth")
    backbone = build_backbone("torchvision:convnext_tiny", str(tmp_path / "convnext.pth")).eval()
    theirs = classifier.state_dict()
    body = backbone.body.state_dict()
    assert len(body) > 100 and all(torch.equal(body[k], theirs[k]) for k in body)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(backbone.body(x)["3"], classifier.features(x), atol=1e-5)


def test_torchvision_bn_body_holds_the_classifiers_statistics_in_frozen_bn(tmp_path):
    from torchvision import models

    torch.manual_seed(2)
    classifier = models.mobilenet_v3_small()
    with torch.no_grad():  # statistics of a trained net, not the init's zeros and ones
        for module in classifier.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    torch.save(classifier.state_dict(), tmp_path / "mnv3.pth")
    backbone = build_backbone("torchvision:mobilenet_v3_small", str(tmp_path / "mnv3.pth"))
    theirs = classifier.state_dict()
    body = backbone.body.state_dict()
    assert any(k.endswith("running_var") for k in body) and all(torch.equal(body[k], theirs[k]) for k in body)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(backbone.body(x)["3"], classifier.eval().features(x), atol=1e-5)


def _timm_key(key: str) -> str:
    """timm's features_only net flattens the first level of its sequential containers."""
    return re.sub(r"^([a-z_]+?)_(\d+)\.", r"\1.\2.", key)


@pytest.mark.parametrize("name", ["convnext_atto", "efficientnet_b0"])
def test_timm_body_holds_exactly_the_classifier_weights(tmp_path, name):
    torch.manual_seed(3)
    classifier = timm.create_model(name)
    torch.save(classifier.state_dict(), tmp_path / "classifier.pth")
    body = build_backbone(f"timm:{name}", str(tmp_path / "classifier.pth")).body.state_dict()
    theirs = classifier.state_dict()
    assert len(body) > 50
    for key, tensor in body.items():
        assert torch.equal(tensor, theirs[key if key in theirs else _timm_key(key)]), key


def test_levels_and_channels_are_what_the_library_reports():
    backbone = build_backbone("timm:regnety_002")
    reported = timm.create_model("regnety_002", features_only=True).feature_info
    wanted = [c for c, r in zip(reported.channels(), reported.reduction()) if r >= 4]
    assert [block[0].in_channels for block in backbone.fpn.inner_blocks] == wanted
    features = backbone(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]


def test_swin_levels_come_channels_last_and_reach_the_fpn_as_nchw():
    backbone = build_backbone("torchvision:swin_t")
    assert backbone.channels_last == [True] * 4
    features = backbone(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in features.values()] == [256] * 5 and features["0"].shape[-2:] == (16, 24)


@pytest.mark.parametrize("name", ["torchvision:convnext_tiny", "timm:convnext_atto", "torchvision:swin_t"])
def test_trainable_layers_count_stages_from_the_top_and_layer_norms_train_with_them(name):
    backbone = build_backbone(name, trainable_layers=1)
    trained = {n for n, p in backbone.body.named_parameters() if p.requires_grad}
    frozen = {n for n, p in backbone.body.named_parameters() if not p.requires_grad}
    # only the stride-32 stage trains: its norms too; the stem and stages 1-3 are frozen
    assert trained and frozen
    norms_trained = [n for n, m in backbone.body.named_modules() if is_norm_layer(m) and any(p.requires_grad for p in m.parameters())]
    assert norms_trained
    everything = build_backbone(name, trainable_layers=5)
    assert all(p.requires_grad for p in everything.body.parameters())
    nothing = build_backbone(name, trainable_layers=0)
    assert not any(p.requires_grad for p in nothing.body.parameters())


def test_stages_are_the_stem_then_one_per_stride():
    # EfficientNet-like: stem conv, a stride-2 block, then blocks at strides 4..32
    strides = {"stem": 2, "bn": 2, "block0": 2, "block1": 4, "block2": 8, "block3": 16, "block4": 32, "block5": 32}
    assert stage_of_pieces(strides) == {
        "stem": 0, "bn": 0, "block0": 0, "block1": 1, "block2": 2, "block3": 3, "block4": 4, "block5": 4,
    }
    # ConvNeXt-like: a stride-4 stem is the stem, its norm goes with it
    assert stage_of_pieces({"stem": 4, "stem_norm": 4, "stage0": 4, "stage1": 8}, {"stem_norm"}) == {
        "stem": 0, "stem_norm": 0, "stage0": 1, "stage1": 2,
    }


def test_batch_norm_is_frozen_in_every_library_body():
    for name in ("torchvision:regnet_y_400mf", "timm:regnety_002", "timm:efficientnet_b0"):
        backbone = build_backbone(name, trainable_layers=5)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()), name


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("torchvision:convnext_tinny", "convnext_tiny"), ("timm:convnext_tinny", "convnext_tiny"), ("torchvision:resnet5", "resnet50")],
)
def test_an_unknown_model_name_is_one_line_listing_close_names(name, suggestion):
    with pytest.raises(RefineMaskError, match=f"close names: .*{suggestion}") as info:
        build_backbone(name)
    assert "\n" not in str(info.value)


def test_an_unknown_library_is_one_line_naming_the_forms():
    with pytest.raises(RefineMaskError, match="torchvision:NAME or timm:NAME"):
        build_backbone("keras:convnext_tiny")


def test_a_plain_vit_is_refused_for_its_single_stride():
    with pytest.raises(RefineMaskError, match="four levels at strides 4, 8, 16, 32"):
        build_backbone("timm:vit_tiny_patch16_224")


def test_without_timm_a_timm_name_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(RefineMaskError, match=r'pip install "refinemask\[timm\]"'):
        build_backbone("timm:convnext_atto")


def test_offline_torchvision_weights_name_the_file_and_the_hub_folder(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*_args, **_kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(RefineMaskError) as info:
        build_backbone("torchvision:mobilenet_v3_small", "imagenet")
    text = str(info.value)
    assert "mobilenet_v3_small-047dcff4.pth" in text and str(tmp_path / "hub" / "checkpoints") in text
    assert "model.backbone_weights=PATH" in text and "\n" not in text


def test_offline_timm_weights_name_the_hub_repository_and_the_cache(monkeypatch):
    import timm.models._builder as builder

    def offline(*_args, **_kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(builder, "load_state_dict_from_hf", offline)
    with pytest.raises(RefineMaskError) as info:
        build_backbone("timm:convnext_atto", "imagenet")
    text = str(info.value)
    assert "timm/convnext_atto" in text and "Hugging Face cache" in text and "model.backbone_weights=PATH" in text


def test_a_torchvision_weights_name_that_does_not_exist_lists_those_that_do():
    with pytest.raises(RefineMaskError, match="has weights IMAGENET1K_V1"):
        build_backbone("torchvision:convnext_tiny", "IMAGENET22K")


def test_weights_of_another_network_are_refused_in_one_line(tmp_path):
    from torchvision import models

    torch.save(models.mobilenet_v3_small().state_dict(), tmp_path / "small.pth")
    with pytest.raises(RefineMaskError, match="not weights of this backbone"):
        build_backbone("torchvision:mobilenet_v3_large", str(tmp_path / "small.pth"))
    torch.save(timm.create_model("convnext_atto").state_dict(), tmp_path / "atto.pth")
    with pytest.raises(RefineMaskError, match="not weights of timm:convnext_femto"):
        build_backbone("timm:convnext_femto", str(tmp_path / "atto.pth"))
