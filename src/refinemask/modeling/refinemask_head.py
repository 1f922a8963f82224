"""The RefineMask mask head: semantic head, instance convs and semantic fusion stages (docs/design.md §2).

Shapes: N RoIs; B images; S_k the side of stage k's input (14, 28, 56); C_k its channels
(256, 128, 64 in the official models: C_0 is the instance width); h, w the size of the stride-4
feature map P2.

Attribute names follow the official ``RefineMaskHead`` so that its ``state_dict`` has exactly
the official keys (docs/design.md §7.1, without the ``roi_head.mask_head.`` prefix). That is
why small wrappers such as :class:`ConvReLU` exist: mmcv's ``ConvModule`` stores its convolution
as ``.conv``, and the official checkpoints carry that extra level in their key names.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refinemask.modeling.mask_head import MaskHeadInterface, SemanticOutput
from refinemask.modeling.ops import resize_bilinear, roi_align


class ConvReLU(nn.Module):
    """A conv with its weights under ``.conv`` (mmcv ``ConvModule`` naming), then an optional ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1, relu: bool = True):
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation)
        self.relu = relu
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


def conv_stack(in_channels: int, width: int | None, depth: int, name: str) -> nn.ModuleList:
    """``depth`` 3×3 conv+ReLU layers, ``in_channels`` -> ``width`` (None: ``in_channels``) -> ... -> ``width``.

    The official heads' ``instance_convs`` / ``semantic_convs``: the first conv changes the width
    (``conv_in_channels_*`` -> ``conv_out_channels_*``), the others keep it.
    """
    width = width or in_channels
    if depth == 0 and width != in_channels:
        raise ValueError(f"{name} width {width} needs at least one {name} conv to reach it from {in_channels}")
    return nn.ModuleList([ConvReLU(in_channels if i == 0 else width, width, 3) for i in range(depth)])


def plain_conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    """A 1x1 conv with the official head's initialisation (Kaiming, fan-out; zero bias)."""
    conv = nn.Conv2d(in_ch, out_ch, 1)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


class MultiBranchFusion(nn.Module):
    """Three parallel 3×3 dilated conv+ReLU branches, summed, then a 1×1 ``merge_conv``.

    The dilated part of the semantic fusion module: dilations 1, 3, 5 see a growing context
    at the same resolution. No activation after ``merge_conv``; the caller applies it.
    """

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        self.num_branches = len(dilations)
        for i, d in enumerate(dilations):
            # official names: dilation_conv_1, dilation_conv_2, ...
            self.add_module(f"dilation_conv_{i + 1}", ConvReLU(channels, channels, 3, dilation=d))
        self.merge_conv = ConvReLU(channels, channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = getattr(self, "dilation_conv_1")(x)
        for i in range(2, self.num_branches + 1):
            total = total + getattr(self, f"dilation_conv_{i}")(x)
        return self.merge_conv(total)


def select_class_logits(features: torch.Tensor, conv: nn.Conv2d, labels: torch.Tensor) -> torch.Tensor:
    """The 1×1 ``conv``'s output channel of each RoI's label: (N, C, S, S) -> (N, 1, S, S).

    Equal to ``conv(features)[arange(N), labels]`` (the official selection), but computes one
    channel per RoI instead of all of them: 80× less work on COCO, 1203× on LVIS.
    """
    weight = conv.weight[labels, :, 0, 0]  # (N, C)
    bias = conv.bias[labels]  # (N,)
    logits = torch.einsum("nchw,nc->nhw", features, weight) + bias[:, None, None]
    return logits[:, None]


class SemanticFusionStage(nn.Module):
    """One SFM stage: fuse instance, semantic and mask cues at S_k, then upsample to 2·S_k (docs/design.md §2.3).

    Keeps the official attribute names (the official class is ``SFMStage``).
    """

    def __init__(
        self,
        in_channels: int,
        semantic_channels: int,
        num_classes: int,
        out_size: int,
        dilations: tuple[int, ...] = (1, 3, 5),
        semantic_stride: int = 4,
    ):
        super().__init__()
        c = in_channels
        self.out_size = out_size
        self.semantic_stride = semantic_stride
        self.semantic_transform_in = plain_conv(semantic_channels, c)
        self.semantic_transform_out = plain_conv(c, c)
        self.instance_logits = plain_conv(c, num_classes)
        self.fuse_conv = nn.ModuleList([plain_conv(2 * c + 2, c), MultiBranchFusion(c, dilations)])
        self.fuse_transform_out = plain_conv(c, c // 2 - 2)

    def transform_semantic(self, semantic_feat: torch.Tensor) -> torch.Tensor:
        """``semantic_transform_in`` + ReLU over the whole P2-resolution map: (B,C_s,h,w) -> (B,C_k,h,w), C_s the semantic width."""
        return F.relu(self.semantic_transform_in(semantic_feat))

    def forward(
        self,
        instance_feats: torch.Tensor,
        semantic_in: torch.Tensor,
        semantic_prob: torch.Tensor,
        rois: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            instance_feats: (N, C_k, S_k, S_k).
            semantic_in: (B, C_k, h, w), the output of :meth:`transform_semantic`.
            semantic_prob: (B, 1, h, w), sigmoid of the semantic logits.
            rois: (N, 5) [batch_index, x1, y1, x2, y2] in input-image pixels.
            labels: (N,) class index of each RoI, 0-based.

        Returns:
            this stage's logits (N, 1, S_k, S_k) and the next stage's features
            (N, C_k / 2, 2·S_k, 2·S_k).
        """
        # the stage size as a Python int (instance_feats.shape[-1] would be a tensor under ONNX
        # tracing, which roi_align's output_size does not accept)
        size = self.out_size
        scale = 1.0 / self.semantic_stride
        logits = select_class_logits(instance_feats, self.instance_logits, labels)
        instance_mask = logits.sigmoid()
        pooled = roi_align(semantic_in, rois, size, scale, sampling_ratio=0, aligned=True)
        pooled = F.relu(self.semantic_transform_out(pooled))
        semantic_mask = roi_align(semantic_prob, rois, size, scale, sampling_ratio=0, aligned=True)
        # official channel order: instance feature, pooled semantic feature, instance mask, semantic mask
        fused = torch.cat([instance_feats, pooled, instance_mask, semantic_mask], dim=1)
        fused = F.relu(self.fuse_conv[0](fused))
        fused = F.relu(self.fuse_conv[1](fused))
        fused = F.relu(self.fuse_transform_out(fused))
        # feature upsampling uses align_corners=False (nn.Upsample's default in the official code)
        up = 2 * size
        fused = resize_bilinear(fused, up, align_corners=False)
        # the masks are re-appended with align_corners=True, as in the official code
        masks = torch.cat([instance_mask, semantic_mask], dim=1)
        masks = resize_bilinear(masks, up, align_corners=True)
        return logits, torch.cat([fused, masks], dim=1)


class RefineMaskHead(MaskHeadInterface, nn.Module):
    """RefineMask's mask head: 14×14 RoI features + P2 -> mask logits at 14, 28, 56 and 112.

    Driven through the mask-head interface (:mod:`refinemask.modeling.mask_head`).

    Args:
        stage_num_classes: classes of each stage's classifier; [C]*4 for COCO/Cityscapes,
            [C, C, C, 1] for a class-agnostic last stage (the LVIS setting).
        in_channels: channels of the RoI features and of P2 (the FPN's width).
        instance_channels: C_0, the instance convs' width; stage k has C_0 / 2^k channels
            (official ``conv_out_channels_instance``, 256). None: ``in_channels``.
        semantic_channels: the semantic convs' width (official ``conv_out_channels_semantic``,
            256). None: ``in_channels``.
        num_convs_instance / num_convs_semantic: 3×3 conv+ReLU layers before the stages.
        dilations: the dilated branches of each fusion stage.
        stage_sizes: supervision size of each stage (the first is the RoI feature size).
    """

    # official coco/r50-refinemask-1x values for the config fields left None
    config_defaults = {"bar_stage_weights": (0.25, 0.5, 0.75, 1.0), "class_agnostic_last_stage": False}

    def __init__(
        self,
        stage_num_classes: tuple[int, ...] = (80, 80, 80, 80),
        in_channels: int = 256,
        instance_channels: int | None = None,
        semantic_channels: int | None = None,
        num_convs_instance: int = 2,
        num_convs_semantic: int = 4,
        dilations: tuple[int, ...] = (1, 3, 5),
        stage_sizes: tuple[int, ...] = (14, 28, 56, 112),
        semantic_stride: int = 4,
    ):
        super().__init__()
        if len(stage_num_classes) != len(stage_sizes):
            raise ValueError("stage_num_classes and stage_sizes must have one entry per stage")
        self.stage_num_classes = tuple(stage_num_classes)
        self.stage_sizes = tuple(stage_sizes)
        self.semantic_stride = semantic_stride
        self.instance_convs = conv_stack(in_channels, instance_channels, num_convs_instance, "instance")
        self.semantic_convs = conv_stack(in_channels, semantic_channels, num_convs_semantic, "semantic")
        instance_channels, semantic_channels = instance_channels or in_channels, semantic_channels or in_channels
        stages = []
        channels = instance_channels
        for num_classes, size in zip(stage_num_classes[:-1], stage_sizes[:-1]):
            stages.append(SemanticFusionStage(channels, semantic_channels, num_classes, size, dilations, semantic_stride))
            channels //= 2
        self.stages = nn.ModuleList(stages)
        self.final_instance_logits = plain_conv(channels, stage_num_classes[-1])
        self.semantic_logits = plain_conv(semantic_channels, 1)

    @property
    def class_agnostic_last_stage(self) -> bool:
        return self.stage_num_classes[-1] == 1

    def semantic_forward(self, p2: torch.Tensor) -> SemanticOutput:
        """The per-image part of the head, independent of the RoIs.

        Args:
            p2: (B, F, h, w), the stride-4 FPN map (F = in_channels, 256 in the official models).

        Returns:
            ``logits`` (B, 1, h, w), each stage's transformed semantic map ``stage_inputs``
            (B, C_k, h, w), and the semantic probabilities ``probs`` (B, 1, h, w).
        """
        x = p2
        for conv in self.semantic_convs:
            x = conv(x)
        semantic_logits = self.semantic_logits(x)
        stage_inputs = [stage.transform_semantic(x) for stage in self.stages]
        return SemanticOutput(semantic_logits, stage_inputs, semantic_logits.sigmoid())

    def instance_forward(
        self,
        instance_feats: torch.Tensor,
        semantic: SemanticOutput,
        rois: torch.Tensor,
        labels: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The per-RoI part of the head.

        Args:
            instance_feats: (N, F, 14, 14) RoI features.
            semantic: the output of :meth:`semantic_forward`.
            rois: (N, 5) [batch_index, x1, y1, x2, y2] in input-image pixels.
            labels: (N,) 0-based class index of each RoI.

        Returns:
            logits (N, 1, S, S) for each stage size S.
        """
        _, stage_inputs, semantic_prob = semantic  # a SemanticOutput, or the plain tuple it is
        x = instance_feats
        for conv in self.instance_convs:
            x = conv(x)
        stage_logits = []
        for stage, semantic_in in zip(self.stages, stage_inputs):
            logits, x = stage(x, semantic_in, semantic_prob, rois, labels)
            stage_logits.append(logits)
        if self.class_agnostic_last_stage:
            labels = torch.zeros_like(labels)
        stage_logits.append(select_class_logits(x, self.final_instance_logits, labels))
        return stage_logits

    def forward(
        self, instance_feats: torch.Tensor, p2: torch.Tensor, rois: torch.Tensor, labels: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The official head's forward: per-stage logits and the semantic logits (B, 1, h, w)."""
        semantic = self.semantic_forward(p2)
        return self.instance_forward(instance_feats, semantic, rois, labels), semantic.logits
