"""The traceable modules that go into ONNX: the detector, the given-boxes model, the mask head.

Shapes: D the fixed number of output rows (``detections_per_img``); K <= D real detections;
N RoIs or given boxes; M the side of the mask prediction (112 for RefineMask, 28 for Mask
R-CNN); h x w the resized image and Hp x Wp it padded to a multiple of 32.

Each graph shares the model's modules (nothing is copied) and calls them as the model's
``forward`` does, minus what a trace cannot follow: the resize before the graph and the mask
paste after it, which stay in numpy (:mod:`refinemask.export.glue`).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from refinemask.modeling.mask_head import foreground_index
from refinemask.modeling.ops import boxes_to_rois

# the graphs' input and output names, in order: what a runtime feeds and reads
DETECTOR_INPUTS = ("images", "image_size")
DETECTOR_OUTPUTS = ("boxes", "scores", "labels", "masks", "num_detections")
HEAD_INPUTS = ("roi_features", "p2", "rois", "labels")
HEAD_OUTPUTS = ("mask_logits",)
BOXES_INPUTS = ("images", "image_size", "boxes", "labels")
BOXES_OUTPUTS = ("masks", "scores")


def _pad_rows(x: torch.Tensor, rows: int, trailing: tuple[int, ...]) -> torch.Tensor:
    """(K, *trailing) -> (rows, *trailing) for K <= rows, zeros after the K rows.

    Concatenate-then-slice keeps every shape static under tracing (K is only known at run time).
    """
    return torch.cat([x, x.new_zeros((rows, *trailing))], dim=0)[:rows]


class DetectorGraph(nn.Module):
    """The part of a :class:`~refinemask.modeling.detector.RefineMaskRCNN` that goes into ONNX.

    The model's own modules and functions, called as its ``forward`` calls them for one image,
    minus the transform (see the module docstring) and with outputs padded to D rows.

    Args:
        model: a RefineMask or Mask R-CNN model (shares its modules; nothing is copied).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads
        self.max_detections = int(model.config.detections_per_img)
        self.mask_size = mask_size_of(model)

    def forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """
        Args:
            images: (1, 3, Hp, Wp) normalised, resized, zero-padded image (:func:`preprocess`).
            image_size: (2,) int64 [h, w], the resized image's size before padding; boxes are
                clipped to it.

        Returns:
            boxes (D, 4) XYXY in resized-image pixels, scores (D,), labels (D,) int64 in 1..C,
            masks (D, 1, M, M) probabilities, and num_detections () int64 = K. Rows K..D-1 are
            zeros (label 0 = background = no detection).
        """
        heads = self.roi_heads
        features = self.backbone(images)
        # 0-d tensors, not ints: clipping against them stays dynamic in the trace
        image_sizes = [(image_size[0], image_size[1])]
        image_list = ImageList(images, image_sizes)
        proposals, _ = self.rpn(image_list, features)
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals, image_sizes)
        boxes, scores, labels = boxes[0], scores[0], labels[0]
        # MaskRoIHeads.predict_masks loops over chunks of detections in Python, which a trace
        # would unroll to the example's count; here all K detections go through at once
        logits = heads.mask_logits(features, boxes_to_rois([boxes]), labels)
        d, m = self.max_detections, self.mask_size
        labels = _pad_rows(labels, d, ())
        return (
            _pad_rows(boxes, d, (4,)),
            _pad_rows(scores, d, ()),
            labels,
            _pad_rows(logits.sigmoid(), d, (1, m, m)),
            (labels > 0).sum(),
        )


class BoxesGraph(nn.Module):
    """The model's forward for given boxes (``model(images, boxes=, labels=)``) that goes into ONNX.

    :class:`DetectorGraph` with the RPN and the box post-processing replaced by the given boxes,
    as :meth:`MaskRoIHeads.forward <refinemask.modeling.roi_heads.MaskRoIHeads.forward>` does
    with ``given``; labels must be given (no box-head classification in the graph).

    Args:
        model: a RefineMask or Mask R-CNN model (shares its modules; nothing is copied).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.roi_heads = model.roi_heads

    def forward(
        self, images: torch.Tensor, image_size: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            images: (1, 3, Hp, Wp) normalised, resized, zero-padded image (:func:`preprocess`).
            image_size: (2,) int64 [h, w], the resized image's size before padding.
            boxes: (N, 4) XYXY in resized-image pixels (clipped to ``image_size`` here).
            labels: (N,) int64 in 1..C.

        Returns:
            masks (N, 1, M, M) probabilities and scores (N,), the box head's probability of
            each label.
        """
        from torchvision.ops import boxes as box_ops

        from refinemask.modeling.roi_heads import classify_given_boxes

        heads = self.roi_heads
        features = self.backbone(images)
        image_sizes = [(image_size[0], image_size[1])]
        boxes = box_ops.clip_boxes_to_image(boxes, image_sizes[0])
        class_logits, _ = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, [boxes], image_sizes)))
        (scores,), _ = classify_given_boxes(class_logits, [labels], [class_logits.shape[0]])
        logits = heads.mask_logits(features, boxes_to_rois([boxes]), labels)
        return logits.sigmoid(), scores


class MaskHeadGraph(nn.Module):
    """RefineMask's mask head and stage assembly as one tensor function, for ONNX.

    Args:
        head: a :class:`~refinemask.modeling.refinemask_head.RefineMaskHead` or the faster-better
            :class:`~refinemask.modeling.simple_refinemask_head.SimpleRefineMaskHead` (shared, not
            copied); both assemble their stages the same way.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(
        self, roi_features: torch.Tensor, p2: torch.Tensor, rois: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            roi_features: (N, 256, 14, 14) RoIAlign of the FPN level of each RoI.
            p2: (B, 256, h/4, w/4), the stride-4 FPN map.
            rois: (N, 5) [batch_index, x1, y1, x2, y2] in (resized) input-image pixels.
            labels: (N,) int64 class of each RoI in 1..C (the detector's labels).

        Returns:
            (N, 1, 112, 112) assembled mask logits.
        """
        semantic = self.head.semantic_forward(p2)
        return self.head.final_logits(self.head.instance_forward(roi_features, semantic, rois, foreground_index(labels)))


def mask_size_of(model: nn.Module) -> int:
    """M: the side of the model's mask predictions (the mask head's ``output_size``)."""
    return model.roi_heads.mask_head.output_size
