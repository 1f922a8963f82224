"""Build the detector: backbone + FPN, RPN, box head and a RefineMask or Mask R-CNN mask head.

The result is a torchvision ``GeneralizedRCNN`` with torchvision's contract:
``model(images, targets)`` returns a loss dict in training; ``model(images)`` returns one
``dict(boxes, labels, scores, masks)`` per image in eval, masks (N, 1, H, W) in 0–1 at the
input image's size. Every part is built here, where it can be seen.
"""
from __future__ import annotations

import dataclasses

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead

from refinemask.config import ModelConfig, from_dict
from refinemask.errors import RefineMaskError
from refinemask.modeling.anchors import ExactAnchorGenerator
from refinemask.modeling.backbone import build_backbone
from refinemask.modeling.refinemask_head import RefineMaskHead
from refinemask.modeling.roi_heads import MaskRoIHeads, MultiLevelRoIPool
from refinemask.modeling.rpn import ProposalNetwork
from refinemask.modeling.transform import DetectionTransform

MASK_HEADS = ("refinemask", "maskrcnn")


class RefineMaskRCNN(GeneralizedRCNN):
    """A two-stage instance segmenter; ``config`` holds everything needed to rebuild it."""

    def __init__(self, config: ModelConfig):
        cfg = config
        backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.trainable_backbone_layers, cfg.fpn_channels)
        anchors = ExactAnchorGenerator() if cfg.exact_anchors else AnchorGenerator(
            sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5
        )
        rpn = ProposalNetwork(
            anchors,
            RPNHead(backbone.out_channels, 3),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=cfg.rpn_batch_size_per_image,
            positive_fraction=0.5,
            pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
            nms_thresh=0.7,
            rank_by_sigmoid=cfg.rpn_rank_by_sigmoid,
            min_size=cfg.rpn_min_box_size,
        )
        classes_with_bg = cfg.num_classes + 1
        roi_heads = MaskRoIHeads(
            box_roi_pool=MultiLevelRoIPool(7),
            box_head=TwoMLPHead(backbone.out_channels * 7 * 7, 1024),
            box_predictor=FastRCNNPredictor(1024, classes_with_bg),
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=cfg.box_batch_size_per_image,
            positive_fraction=cfg.box_positive_fraction,
            bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
            score_thresh=cfg.box_score_thresh,
            nms_thresh=cfg.box_nms_thresh,
            detections_per_img=cfg.detections_per_img,
            mask_roi_pool=MultiLevelRoIPool(14),
            box_loss_weight=cfg.box_loss_weight,
            box_reg_loss=cfg.box_reg_loss,
            mask_chunk_size=cfg.mask_chunk_size,
            mask_positives_per_image=cfg.mask_positives_per_image,
            bar_stage_weights=cfg.bar_stage_weights,
            boundary_width=cfg.boundary_width,
            semantic_loss_weight=cfg.semantic_loss_weight,
            box_min_size=cfg.box_min_size,
        )
        if cfg.mask_head == "refinemask":
            last = 1 if cfg.class_agnostic_last_stage else cfg.num_classes
            roi_heads.mask_head = RefineMaskHead(
                stage_num_classes=(cfg.num_classes,) * 3 + (last,),
                in_channels=backbone.out_channels,
                dilations=tuple(cfg.dilations),
            )
            roi_heads.mask_predictor = None
            if cfg.mask_logits_init == "small":
                head = roi_heads.mask_head
                logit_convs = [s.instance_logits for s in head.stages] + [head.final_instance_logits, head.semantic_logits]
                for conv in logit_convs:
                    torch.nn.init.normal_(conv.weight, std=0.001)
                    torch.nn.init.zeros_(conv.bias)
            elif cfg.mask_logits_init != "official":
                raise RefineMaskError(f"model.mask_logits_init: {cfg.mask_logits_init!r} is not one of official, small")
        else:
            # the head's width follows the FPN's, as RefineMask's does (256 in the official models)
            width = backbone.out_channels
            roi_heads.mask_head = MaskRCNNHeads(width, [width] * 4, 1)
            roi_heads.mask_predictor = MaskRCNNPredictor(width, width, classes_with_bg)
            if cfg.mask_logits_init == "small":
                torch.nn.init.normal_(roi_heads.mask_predictor.mask_fcn_logits.weight, std=0.001)
                torch.nn.init.zeros_(roi_heads.mask_predictor.mask_fcn_logits.bias)
        transform = DetectionTransform(cfg.min_size, cfg.max_size)
        super().__init__(backbone, rpn, roi_heads, transform)
        self.config = config

    def eager_outputs(self, losses, detections):
        # always the contract's output, also under scripting/tracing
        return losses if self.training else detections


def build_model(
    num_classes: int = 80, backbone: str = "resnet50", mask_head: str = "refinemask", **options
) -> RefineMaskRCNN:
    """Build a detector; any :class:`~refinemask.config.ModelConfig` field can be given.

    Examples:
        >>> model = build_model(num_classes=80, backbone="resnet50", mask_head="refinemask")
        >>> baseline = build_model(num_classes=80, backbone="resnet50", mask_head="maskrcnn")
    """
    if mask_head not in MASK_HEADS:
        raise RefineMaskError(f"unknown mask_head {mask_head!r}; choose one of: {', '.join(MASK_HEADS)}")
    if int(num_classes) < 1:
        raise RefineMaskError(f"num_classes must be at least 1, got {num_classes}")
    config = from_dict(ModelConfig, {"num_classes": num_classes, "backbone": backbone, "mask_head": mask_head, **options}, "model")
    return build_model_from_config(config)


def build_model_from_config(config: ModelConfig) -> RefineMaskRCNN:
    return RefineMaskRCNN(dataclasses.replace(config))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
