"""The faster-better RefineMask head (official ``SimpleRefineMaskHead``; docs/design.md §2.6).

Shapes: N RoIs; B images; S_k the side of stage k's input (14, 28, 56); C_k its channels
(256, 128, 64 in the official models: C_0 is the instance width); h, w the size of the stride-4
feature map P2.

The official repository added this head after the released checkpoints (commit ``bf81cac``,
config ``coco/r50-refinemask-1x-faster-better``); Co-DETR's instance-segmentation configs re-use
it. Against :class:`~refinemask.modeling.refinemask_head.RefineMaskHead` it:

* has no semantic logits and no semantic loss, so no semantic-mask input to the stages;
* pools the semantic features with ``SimpleRoIAlign``: one bilinear sample at each bin centre
  (:func:`point_roi_align`), where the original head averages adaptive sample grids;
* keeps ``semantic_transform_in`` (a 1×1 conv + ReLU over the whole P2 map, in every stage) but
  drops ``semantic_transform_out``;
* adds a global-average branch to the dilated fusion (:class:`MultiBranchFusionAvg`);
* appends only the instance mask after ``fuse_transform_out`` (C_k/2 − 1 channels + 1), and
  does so *before* the ×2 upsampling;
* computes every stage's logits from ``stage_instance_logits.k`` on the stage's input, and the
  last stage's at 56×56 from the third stage's un-upsampled output, then upsamples those
  logits ×2 (bilinear, align_corners=True) to 112×112 (official ``pre_upsample_last_stage=False``);
* has a class-agnostic last stage (``stage_num_classes=[80, 80, 80, 1]`` in both the official
  and Co-DETR's configs).

Attribute names follow the official class, so the ``state_dict`` has exactly its 62 keys.

Choices the configs leave open, taken from the official source (study only):

* ``SimpleRoIAlign`` is mmcv's point-sampling RoI op (``aligned=True``): the bin centres of the
  RoI are read with ``grid_sample(align_corners=False)`` and zero padding. A point within one
  pixel outside the map therefore reads a fraction of the border pixel, unlike
  ``roi_align``, which clamps. :func:`point_roi_align` reproduces the zero padding exactly.
* The global-average branch is the mean over the S_k×S_k window of the fusion input, added to
  the three dilated branches before ``merge_conv`` (``MultiBranchFusionAvg``).
* No ReLU after the ×2 upsampling here (the original stage has a no-op one).
* Inference assembles the stages exactly as the original head (``SimpleRefineRoIHead`` copies
  ``RefineRoIHead.simple_test_mask``): from the 28×28 stage, width-1 bands, cumulative.
* The loss is the same BAR loss without the semantic term (``BARCrossEntropyLoss``), with the
  config's stage weights [0.5, 0.75, 0.75, 1.0] (its code default is [0.25, 0.5, 0.75, 1.0]).
* ``pre_upsample_last_stage=True`` (upsample the features, then compute 112×112 logits) is an
  unused official option and is not offered.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refinemask.modeling.mask_head import MaskHeadInterface, SemanticOutput
from refinemask.modeling.ops import resize_bilinear, roi_align, upsample_logits
from refinemask.modeling.refinemask_head import MultiBranchFusion, conv_stack, plain_conv, select_class_logits


def point_roi_align(features: torch.Tensor, rois: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """mmcv's ``SimpleRoIAlign``: one bilinear sample at the centre of each of the size×size bins.

    The sample of bin (i, j) is at x = (x1 + (j + 0.5)·(x2 − x1)/size)/stride − 0.5 in map pixels
    (the same points as ``roi_align(aligned=True, sampling_ratio=1)``), read with zero padding
    as ``grid_sample(align_corners=False)`` reads it. ``roi_align`` instead clamps points in
    [−1, 0] to the border pixel; one zero row and column on each side, with the RoIs shifted by
    one map pixel, turn its clamping into grid_sample's zero padding, so this is one batched
    ``roi_align`` call (no loop over images, exportable to ONNX).

    Args:
        features: (B, C, h, w) map at ``stride``.
        rois: (N, 5) [batch_index, x1, y1, x2, y2] in input-image pixels.

    Returns:
        (N, C, size, size).
    """
    padded = F.pad(features, (1, 1, 1, 1))
    shift = torch.tensor([0.0, stride, stride, stride, stride], dtype=rois.dtype, device=rois.device)
    return roi_align(padded, rois + shift, size, 1.0 / stride, sampling_ratio=1, aligned=True)


class MultiBranchFusionAvg(MultiBranchFusion):
    """:class:`MultiBranchFusion` plus a global-average branch: the mean over the whole S×S
    window is added (broadcast) to the three dilated branches before ``merge_conv``. Same
    parameters as the plain fusion (the official ``fusion_type='MultiBranchFusionAvg'``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.mean(dim=(2, 3), keepdim=True)
        for i in range(1, self.num_branches + 1):
            total = total + getattr(self, f"dilation_conv_{i}")(x)
        return self.merge_conv(total)


class SimpleFusionStage(nn.Module):
    """One stage of the faster-better head: fuse at S_k, then upsample to 2·S_k (official ``SimpleSFMStage``).

    Args:
        in_channels: C_k.
        semantic_channels: C_s, the semantic convs' width (official 256).
        size: S_k, the side of the stage's input and of its semantic pooling.
        upsample: False for the last fusion stage, whose output stays at S_k (the last logits
            are computed there and upsampled instead).
    """

    def __init__(
        self,
        in_channels: int,
        semantic_channels: int,
        size: int,
        dilations: tuple[int, ...] = (1, 3, 5),
        semantic_stride: int = 4,
        upsample: bool = True,
    ):
        super().__init__()
        c = in_channels
        self.size = size
        self.semantic_stride = semantic_stride
        self.upsample = upsample
        self.semantic_transform_in = plain_conv(semantic_channels, c)
        self.fuse_conv = nn.ModuleList([plain_conv(2 * c + 1, c), MultiBranchFusionAvg(c, dilations)])
        self.fuse_transform_out = plain_conv(c, c // 2 - 1)

    def transform_semantic(self, semantic_feat: torch.Tensor) -> torch.Tensor:
        """``semantic_transform_in`` + ReLU over the whole P2-resolution map: (B,C_s,h,w) -> (B,C_k,h,w), C_s the semantic width."""
        return F.relu(self.semantic_transform_in(semantic_feat))

    def forward(
        self, instance_feats: torch.Tensor, logits: torch.Tensor, semantic_in: torch.Tensor, rois: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            instance_feats: (N, C_k, S_k, S_k).
            logits: (N, 1, S_k, S_k), this stage's logits (from ``stage_instance_logits.k``).
            semantic_in: (B, C_k, h, w), the output of :meth:`transform_semantic`.
            rois: (N, 5) [batch_index, x1, y1, x2, y2] in input-image pixels.

        Returns:
            the next features (N, C_k / 2, 2·S_k, 2·S_k), or (N, C_k / 2, S_k, S_k) without upsampling.
        """
        pooled = point_roi_align(semantic_in, rois, self.size, self.semantic_stride)
        instance_mask = logits.sigmoid()
        # official channel order: instance feature, pooled semantic feature, instance mask
        fused = torch.cat([instance_feats, pooled, instance_mask], dim=1)
        fused = F.relu(self.fuse_conv[0](fused))
        fused = F.relu(self.fuse_conv[1](fused))
        fused = F.relu(self.fuse_transform_out(fused))
        # the mask is appended before upsampling here ("same as paper", says the official code)
        fused = torch.cat([fused, instance_mask], dim=1)
        if self.upsample:
            fused = resize_bilinear(fused, 2 * self.size, align_corners=False)  # a Python int: traceable
        return fused


class SimpleRefineMaskHead(MaskHeadInterface, nn.Module):
    """The faster-better head: 14×14 RoI features + P2 -> mask logits at 14, 28, 56 and 112.

    Driven like :class:`~refinemask.modeling.refinemask_head.RefineMaskHead` (the same
    :meth:`semantic_forward` / :meth:`instance_forward` split, the mask-head interface of
    :mod:`refinemask.modeling.mask_head`), so the RoI heads, the ONNX export and the benchmarks
    treat every head alike.

    Args:
        stage_num_classes: classes of each stage's classifier; official [C, C, C, 1].
        in_channels: channels of the RoI features and of P2 (the FPN's width).
        instance_channels: C_0, the instance convs' width; stage k has C_0 / 2^k channels
            (official ``conv_out_channels_instance``, 256). None: ``in_channels``.
        semantic_channels: the semantic convs' width (official ``conv_out_channels_semantic``,
            256). None: ``in_channels``.
        num_convs_instance / num_convs_semantic: 3×3 conv+ReLU layers before the stages
            (official 2 and 4; Co-DETR 1 and 2).
        dilations: the dilated branches of each fusion stage.
        stage_sizes: supervision size of each stage (the first is the RoI feature size).
    """

    # official coco/r50-refinemask-1x-faster-better values for the config fields left None
    config_defaults = {"bar_stage_weights": (0.5, 0.75, 0.75, 1.0), "class_agnostic_last_stage": True}

    def __init__(
        self,
        stage_num_classes: tuple[int, ...] = (80, 80, 80, 1),
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
        stages, channels = [], [instance_channels]
        fusion_sizes = stage_sizes[:-1]
        for k, size in enumerate(fusion_sizes):
            last = k == len(fusion_sizes) - 1
            stages.append(SimpleFusionStage(channels[-1], semantic_channels, size, dilations, semantic_stride, upsample=not last))
            channels.append(channels[-1] // 2)
        self.stages = nn.ModuleList(stages)
        self.stage_instance_logits = nn.ModuleList(
            [plain_conv(c, n) for c, n in zip(channels, stage_num_classes)]
        )

    @property
    def class_agnostic_last_stage(self) -> bool:
        return self.stage_num_classes[-1] == 1

    def semantic_forward(self, p2: torch.Tensor) -> SemanticOutput:
        """The per-image part of the head, independent of the RoIs.

        Args:
            p2: (B, F, h, w), the stride-4 FPN map (F = in_channels, 256 in the official models).

        Returns:
            each stage's transformed semantic map ``stage_inputs`` (B, C_k, h, w); ``logits`` and
            ``probs`` are None (this head has no semantic logits, so there is no semantic loss).
        """
        x = p2
        for conv in self.semantic_convs:
            x = conv(x)
        return SemanticOutput(None, [stage.transform_semantic(x) for stage in self.stages], None)

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
            logits (N, 1, S, S) for each stage size S (14, 28, 56, 112).
        """
        stage_inputs = semantic.stage_inputs
        x = instance_feats
        for conv in self.instance_convs:
            x = conv(x)
        stage_logits = []
        for k, (stage, semantic_in) in enumerate(zip(self.stages, stage_inputs)):
            logits = select_class_logits(x, self.stage_instance_logits[k], labels)
            x = stage(x, logits, semantic_in, rois)
            stage_logits.append(logits)
        if self.class_agnostic_last_stage:
            labels = torch.zeros_like(labels)
        last = select_class_logits(x, self.stage_instance_logits[-1], labels)
        # computed at the third stage's size, then upsampled (official pre_upsample_last_stage=False)
        stage_logits.append(upsample_logits(last, self.stage_sizes[-1]))
        return stage_logits

    def forward(
        self, instance_feats: torch.Tensor, p2: torch.Tensor, rois: torch.Tensor, labels: torch.Tensor
    ) -> list[torch.Tensor]:
        """The official head's forward: per-stage logits (14, 28, 56, 112)."""
        return self.instance_forward(instance_feats, self.semantic_forward(p2), rois, labels)
