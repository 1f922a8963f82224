"""Build the detector: backbone + FPN, RPN, box head and a RefineMask, faster-better RefineMask
or Mask R-CNN mask head.

The result is a torchvision ``GeneralizedRCNN`` with torchvision's contract:
``model(images, targets)`` returns a loss dict in training; ``model(images)`` returns one
``dict(boxes, labels, scores, masks)`` per image in eval, masks (N, 1, H, W) in 0–1 at the
input image's size. Every part is built here, where it can be seen.

``model.mask_output = "box"`` returns each image's ``masks`` as a
:class:`~refinemask.modeling.box_masks.BoxMasks` instead (the head's squares and their boxes):
memory then grows with the detections, not with detections × pixels, for large images.

In eval, ``model(images, boxes=..., labels=...)`` segments boxes that come from elsewhere (another
detector, the ground truth) instead of the RPN's: the same forward with the proposals replaced
(see :meth:`RefineMaskRCNN.forward` and :func:`check_given_boxes`).
"""
from __future__ import annotations

import dataclasses

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import boxes as box_ops

from refinemask.config import ModelConfig, from_dict
from refinemask.errors import RefineMaskError
from refinemask.modeling.anchors import ExactAnchorGenerator
from refinemask.modeling.backbone import build_backbone
from refinemask.modeling.box_masks import check_mask_output
from refinemask.modeling.mask_head import MaskRCNNMaskHead
from refinemask.modeling.refinemask_head import RefineMaskHead
from refinemask.modeling.roi_heads import MaskRoIHeads, MultiLevelRoIPool
from refinemask.modeling.rpn import ProposalNetwork
from refinemask.modeling.simple_refinemask_head import SimpleRefineMaskHead
from refinemask.modeling.transform import DetectionTransform

# the class of each ``model.mask_head``; each holds its official values of the fields left None
MASK_HEAD_CLASSES = {"refinemask": RefineMaskHead, "simple_refinemask": SimpleRefineMaskHead, "maskrcnn": MaskRCNNMaskHead}
MASK_HEADS = tuple(MASK_HEAD_CLASSES)
# the FPN level of each stride ('pool' is P6, the max-pooled P5)
FEATURE_NAMES = {4: "0", 8: "1", 16: "2", 32: "3", 64: "pool"}


def head_setting(cfg: ModelConfig, name: str):
    """``cfg.<name>``, or the mask head's official value when the config leaves it None."""
    value = getattr(cfg, name)
    return MASK_HEAD_CLASSES[cfg.mask_head].config_defaults[name] if value is None else value


def mask_roi_pool(strides, sampling_ratio: int = 0, aligned: bool = True) -> MultiLevelRoIPool:
    """The 14×14 mask RoI pooler over the FPN levels of ``strides`` (mmdetection's level rule)."""
    strides = [int(s) for s in strides]
    unknown = [s for s in strides if s not in FEATURE_NAMES]
    if unknown or not strides or strides != sorted(set(strides)):
        raise RefineMaskError(
            f"model.mask_roi_strides: {strides} must be increasing FPN strides among 4, 8, 16, 32, 64"
        )
    return MultiLevelRoIPool(
        14, [FEATURE_NAMES[s] for s in strides], strides, sampling_ratio=sampling_ratio, aligned=aligned
    )


class RefineMaskRCNN(GeneralizedRCNN):
    """A two-stage instance segmenter; ``config`` holds everything needed to rebuild it."""

    def __init__(self, config: ModelConfig):
        cfg = config
        backbone = build_backbone(
            cfg.backbone, cfg.backbone_weights, cfg.trainable_backbone_layers, cfg.fpn_channels, cfg.backbone_drop_path
        )
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
            box_roi_pool=MultiLevelRoIPool(7, sampling_ratio=cfg.roi_sampling_ratio, aligned=cfg.roi_aligned),
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
            mask_roi_pool=mask_roi_pool(cfg.mask_roi_strides, cfg.roi_sampling_ratio, cfg.roi_aligned),
            box_loss_weight=cfg.box_loss_weight,
            box_reg_loss=cfg.box_reg_loss,
            mask_chunk_size=cfg.mask_chunk_size,
            mask_positives_per_image=cfg.mask_positives_per_image,
            bar_stage_weights=head_setting(cfg, "bar_stage_weights"),
            boundary_width=cfg.boundary_width,
            semantic_loss_weight=cfg.semantic_loss_weight,
            mask_loss_to_features=cfg.mask_loss_to_features,
            box_min_size=cfg.box_min_size,
        )
        if cfg.mask_head in ("refinemask", "simple_refinemask"):
            last = 1 if head_setting(cfg, "class_agnostic_last_stage") else cfg.num_classes
            roi_heads.mask_head = MASK_HEAD_CLASSES[cfg.mask_head](
                stage_num_classes=(cfg.num_classes,) * 3 + (last,),
                in_channels=backbone.out_channels,
                instance_channels=cfg.mask_instance_channels,
                semantic_channels=cfg.mask_semantic_channels,
                num_convs_instance=cfg.mask_instance_convs,
                num_convs_semantic=cfg.mask_semantic_convs,
                dilations=tuple(cfg.dilations),
            )
            roi_heads.mask_predictor = None
            if cfg.mask_logits_init == "small":
                for conv in logit_convs(roi_heads.mask_head):
                    torch.nn.init.normal_(conv.weight, std=0.001)
                    torch.nn.init.zeros_(conv.bias)
        else:
            # the head's width follows the FPN's, as RefineMask's does (256 in the official models)
            width = backbone.out_channels
            roi_heads.mask_head = MaskRCNNMaskHead(width, classes_with_bg)
            roi_heads.mask_predictor = roi_heads.mask_head.predictor  # registered here: torchvision's keys
            if cfg.mask_logits_init == "small":
                torch.nn.init.normal_(roi_heads.mask_predictor.mask_fcn_logits.weight, std=0.001)
                torch.nn.init.zeros_(roi_heads.mask_predictor.mask_fcn_logits.bias)
        transform = DetectionTransform(cfg.min_size, cfg.max_size)
        super().__init__(backbone, rpn, roi_heads, transform)
        self.config = config

    def forward(
        self, images, targets=None, boxes=None, labels=None, *,
        score_thresh: float | None = None, coarse: bool = False, best_score: bool = False, mask_output: str | None = None,
    ):
        """torchvision's ``GeneralizedRCNN.forward``, plus boxes given from elsewhere and call options.

        Args:
            images: list of (3, H_i, W_i) float images in 0-1.
            targets: training targets (see the README); not used in eval.
            boxes: eval only, per image (N_i, 4) XYXY boxes in that image's pixels, to segment
                instead of the RPN's proposals. Each comes back with a mask, in the given order;
                no score threshold, NMS or box regression applies.
            labels: with ``boxes``, per image (N_i,) classes in 1..C; None lets the box head
                classify each given box (its most probable foreground class).

        Eval-only options, for this call alone (the model is not changed, so threads may share it):
            score_thresh: the score a detection must exceed, instead of ``box_score_thresh``.
            coarse: add ``coarse_masks``, the head's coarse stage (RefineMask's 28×28) of the same
                detections, in the form of ``masks``; an error for a head without one (Mask R-CNN).
            best_score: add ``best_score``, a 0-dim tensor per image: the highest class score any
                RoI had before the threshold (own detections) or of the given boxes' RoIs.
            mask_output: "image" or "box" (see :attr:`mask_output`) instead of the model's setting.

        Returns:
            the loss dict in training; in eval one ``dict(boxes, labels, scores, masks)`` per
            image. For given boxes, ``boxes`` are the given ones clipped to the image (masks are
            pasted into those), and
            ``scores`` the box head's probability of each box's label.
        """
        if self.training:
            if boxes is not None:
                raise RefineMaskError("boxes can be given in eval mode only: call model.eval() first")
            if score_thresh is not None or coarse or best_score or mask_output is not None:
                raise RefineMaskError(
                    "score_thresh, coarse, best_score and mask_output are eval options: call model.eval() first"
                )
            return super().forward(images, targets)
        if coarse and self.roi_heads.mask_head.coarse_stage is None:
            raise RefineMaskError(f"coarse=True: the {self.config.mask_head} mask head has no coarse stage")
        if mask_output is not None:
            check_mask_output(mask_output, "mask_output")
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        given, clipped = (None, None) if boxes is None else self._given_boxes(images, boxes, labels, original_sizes)
        # the transform scales the given boxes with the image, as it scales training targets
        image_list, given = self.transform(images, given)
        features = self.backbone(image_list.tensors)
        proposals = self.rpn(image_list, features)[0] if given is None else None
        detections, _ = self.roi_heads(
            features, proposals, image_list.image_sizes, given=given,
            score_thresh=score_thresh, coarse=coarse, best_score=best_score,
        )
        return self.transform.postprocess(
            detections, image_list.image_sizes, original_sizes, original_boxes=clipped, mask_output=mask_output
        )

    def _given_boxes(self, images, boxes, labels, original_sizes) -> tuple[list[dict], list[torch.Tensor]]:
        """Checked given boxes (and labels) per image on its device, and the boxes clipped to it."""
        if len(boxes) != len(images) or (labels is not None and len(labels) != len(images)):
            raise RefineMaskError(
                f"give one box tensor{' and one label tensor' if labels is not None else ''} per image: "
                f"{len(images)} images, {len(boxes)} box tensors"
                + (f", {len(labels)} label tensors" if labels is not None else "")
            )
        given, clipped = [], []
        for i, size in enumerate(original_sizes):
            b, lab = check_given_boxes(boxes[i], None if labels is None else labels[i], size, self.config.num_classes)
            device = images[i].device
            given.append({"boxes": b.to(device)} if lab is None else {"boxes": b.to(device), "labels": lab.to(device)})
            clipped.append(box_ops.clip_boxes_to_image(b, size).to(device))
        return given, clipped

    @property
    def mask_output(self) -> str:
        """"image" (default): masks (N, 1, H, W) in the image; "box": :class:`BoxMasks` per image."""
        return self.transform.mask_output

    @mask_output.setter
    def mask_output(self, value: str) -> None:
        self.transform.mask_output = check_mask_output(value, "model.mask_output")

    def eager_outputs(self, losses, detections):
        # always the contract's output, also under scripting/tracing
        return losses if self.training else detections


def check_given_boxes(
    boxes, labels, image_size: tuple[int, int], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Given boxes (and labels) of one image as tensors, or a one-line error saying what is wrong.

    Args:
        boxes: (N, 4) XYXY in pixels of an image of ``image_size`` (H, W); anything
            ``torch.as_tensor`` takes. N may be 0.
        labels: (N,) ints in 1..num_classes, or None.

    Returns:
        boxes float32 (N, 4) and labels int64 (N,) or None, on the CPU.

    A box must have a positive width and height (x2 > x1, y2 > y1: XYXY, not COCO's XYWH) and
    overlap the image; the part outside the image is clipped later, as the detector clips its own.
    """
    height, width = image_size
    b = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu()
    if b.numel() == 0:
        b = b.reshape(0, 4)
    if b.dim() != 2 or b.shape[1] != 4:
        raise RefineMaskError(f"boxes must be (N, 4) XYXY, got shape {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        i = int((~torch.isfinite(b)).any(dim=1).nonzero()[0])
        raise RefineMaskError(f"box {i} {b[i].tolist()} is not finite")
    empty = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if empty.any():
        i = int(empty.nonzero()[0])
        raise RefineMaskError(
            f"box {i} {b[i].tolist()} has no area: boxes are XYXY (x1, y1, x2, y2) with x2 > x1 and y2 > y1"
        )
    clipped = box_ops.clip_boxes_to_image(b, (height, width))
    outside = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if outside.any():
        i = int(outside.nonzero()[0])
        raise RefineMaskError(f"box {i} {b[i].tolist()} lies outside the {width}x{height} image")
    if labels is None:
        return b, None
    lab = torch.as_tensor(labels).detach().cpu()
    if lab.dim() != 1 or lab.shape[0] != b.shape[0]:
        raise RefineMaskError(f"labels must be ({b.shape[0]},), one per box, got shape {tuple(lab.shape)}")
    if lab.is_floating_point() and not torch.equal(lab, lab.round()):
        raise RefineMaskError("labels must be integers in 1..C")
    lab = lab.long()
    bad = (lab < 1) | (lab > num_classes)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise RefineMaskError(f"label {int(lab[i])} of box {i} is not a class of this model (1..{num_classes})")
    return b, lab


def logit_convs(head: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """The 1×1 convs of a RefineMask head that produce logits (what ``mask_logits_init`` sets)."""
    if isinstance(head, SimpleRefineMaskHead):
        return list(head.stage_instance_logits)
    return [s.instance_logits for s in head.stages] + [head.final_instance_logits, head.semantic_logits]


def build_model(
    num_classes: int = 80, backbone: str = "resnet50", mask_head: str = "refinemask", **options
) -> RefineMaskRCNN:
    """Build a detector; any :class:`~refinemask.config.ModelConfig` field can be given.

    Examples:
        >>> model = build_model(num_classes=80, backbone="resnet50", mask_head="refinemask")
        >>> faster = build_model(num_classes=80, backbone="resnet50", mask_head="simple_refinemask")
        >>> baseline = build_model(num_classes=80, backbone="resnet50", mask_head="maskrcnn")
    """
    if mask_head not in MASK_HEADS:
        raise RefineMaskError(f"unknown mask_head {mask_head!r}; choose one of: {', '.join(MASK_HEADS)}")
    if int(num_classes) < 1:
        raise RefineMaskError(f"num_classes must be at least 1, got {num_classes}")
    config = from_dict(ModelConfig, {"num_classes": num_classes, "backbone": backbone, "mask_head": mask_head, **options}, "model")
    return build_model_from_config(config)


def build_model_from_config(config: ModelConfig) -> RefineMaskRCNN:
    if config.num_classes is None:
        raise RefineMaskError("model.num_classes is not set (training takes it from data.train_annotations)")
    if config.num_classes < 1:
        raise RefineMaskError(f"model.num_classes must be at least 1, got {config.num_classes}")
    return RefineMaskRCNN(dataclasses.replace(config))

