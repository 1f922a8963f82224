"""RoI heads: torchvision's box path with mmdetection's pooling and loss weights, plus a mask branch.

Shapes: B images; R sampled RoIs; N positive RoIs or detections; S a stage size.

torchvision's ``RoIHeads.forward`` wires the stock mask head in by hand, and the semantic
branch needs the whole P2 map, so the forward is rewritten here while the box sampling,
matching and post-processing are reused from the parent class. ``mask_head`` is the
:class:`RefineMaskHead`, the faster-better :class:`SimpleRefineMaskHead` (each ``state_dict``
with its official keys) or torchvision's Mask R-CNN head (:class:`MaskRCNNMaskHead`, with its
predictor as ``mask_predictor``), all driven through one interface
(:mod:`refinemask.modeling.mask_head`); all see the same features, RoIs and targets, so they
can be compared with everything else equal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from refinemask.modeling.losses import bar_loss, box_head_loss, semantic_loss
from refinemask.modeling.ops import boxes_to_rois, multilevel_roi_align
from refinemask.modeling.mask_head import foreground_index
from refinemask.modeling.rpn import Float32BoxCoder
from refinemask.modeling.targets import instance_union, semantic_ignore_weight, semantic_target, stage_mask_targets


class MultiLevelRoIPool(nn.Module):
    """RoIAlign over P2–P5 with mmdetection's level rule; by default aligned=True, sampling_ratio=0.

    Called like torchvision's ``MultiScaleRoIAlign``: ``(features, boxes, image_shapes)``.
    ``sampling_ratio=2, aligned=False`` are torchvision's settings.
    """

    def __init__(self, output_size: int, featmap_names=("0", "1", "2", "3"), strides=(4, 8, 16, 32), finest_scale=56.0,
                 sampling_ratio: int = 0, aligned: bool = True):
        super().__init__()
        self.output_size = output_size
        self.featmap_names = list(featmap_names)
        self.strides = list(strides)
        self.finest_scale = finest_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: dict, boxes: list[torch.Tensor], image_shapes=None) -> torch.Tensor:
        rois = boxes_to_rois(boxes).to(features[self.featmap_names[0]].device)
        return self.pool_rois(features, rois)

    def pool_rois(self, features: dict, rois: torch.Tensor) -> torch.Tensor:
        maps = [features[name] for name in self.featmap_names]
        return multilevel_roi_align(
            maps, rois, self.output_size, self.strides, self.finest_scale, self.sampling_ratio, self.aligned
        )


def mask_positives(labels: torch.Tensor, matched_idxs: torch.Tensor, target: dict) -> torch.Tensor:
    """Indices of the positive RoIs (labels > 0) whose matched instance has a mask.

    RoIs matched to a box-only instance (``target["has_mask"]`` False) train the box head only:
    their mask is unknown, not empty.
    """
    positive = torch.nonzero(labels > 0).squeeze(1)
    has_mask = target.get("has_mask")
    if has_mask is None or bool(has_mask.all()):
        return positive
    return positive[has_mask.to(positive.device)[matched_idxs[positive]]]


def classify_given_boxes(
    class_logits: torch.Tensor, labels: list[torch.Tensor | None], counts: list[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Scores and labels of given boxes from the box head's class logits.

    Args:
        class_logits: (R, C+1) of all images' given boxes, background first.
        labels: per image (N_i,) given labels in 1..C, or None to take each box's most probable
            foreground class (the class-specific mask stages need a class; the box head is the
            model's own classifier of exactly such boxes).
        counts: N_i per image, summing to R.

    Returns:
        per image scores (N_i,), the probability of each box's label, and labels (N_i,) int64.
    """
    out_scores, out_labels = [], []
    for probs, lab in zip(F.softmax(class_logits, -1).split(counts), labels):
        if lab is None:
            scores, lab = probs[:, 1:].max(dim=1)
            lab = lab + 1
        else:
            scores = probs.gather(1, lab[:, None].long())[:, 0]
        out_scores.append(scores)
        out_labels.append(lab.long())
    return out_scores, out_labels


def best_foreground_score(class_logits: torch.Tensor) -> torch.Tensor:
    """(R, C+1) box-classifier logits of one image, background first -> () the highest class
    probability of any RoI (0 without RoIs)."""
    if class_logits.numel() == 0:
        return class_logits.new_zeros(())
    return class_logits.softmax(-1)[:, 1:].max()


class MaskRoIHeads(RoIHeads):
    """Box head + a RefineMask or Mask R-CNN mask branch.

    Args (beyond torchvision's ``RoIHeads``):
        box_loss_weight: weight of both box-head losses (2.0 in the RefineMask configs).
        box_reg_loss: ``"l1"`` (COCO/LVIS configs) or ``"smooth_l1"`` (Cityscapes).
        mask_chunk_size: detections per mask-head call at inference (bounds memory; the
            official code uses 100).
        bar_stage_weights, boundary_width: the BAR loss settings (docs/design.md §4.1, §4.4).
        semantic_loss_weight: weight of ``loss_semantic`` (RefineMaskHead only; the
            faster-better head has no semantic logits, so its loss dict has no such entry).
        mask_loss_to_features: the mask losses' gradients reach the features (FPN, backbone),
            as officially; False detaches the features the mask branch reads in training, so
            only the RPN and box losses train them (a study option: docs/benchmarks.md).
        box_min_size: detections narrower or shorter than this are dropped (torchvision's
            1e-2); 0 keeps them all, as mmdetection v2.3 does (set for converted models).
    """

    def __init__(
        self,
        *args,
        box_loss_weight: float = 2.0,
        box_reg_loss: str = "l1",
        mask_chunk_size: int = 100,
        mask_positives_per_image: int = 0,
        bar_stage_weights=(0.25, 0.5, 0.75, 1.0),
        boundary_width: int = 2,
        semantic_loss_weight: float = 1.0,
        mask_loss_to_features: bool = True,
        box_min_size: float = 1e-2,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.box_coder = Float32BoxCoder.like(self.box_coder)
        self.box_loss_weight = box_loss_weight
        self.box_reg_loss = box_reg_loss
        self.mask_chunk_size = mask_chunk_size
        self.mask_positives_per_image = mask_positives_per_image
        self.bar_stage_weights = tuple(bar_stage_weights)
        self.boundary_width = boundary_width
        self.semantic_loss_weight = semantic_loss_weight
        self.mask_loss_to_features = mask_loss_to_features
        self.box_min_size = box_min_size

    @property
    def is_refinemask(self) -> bool:
        """Either RefineMask head (multi-stage logits, assembled to 112×112), not Mask R-CNN's."""
        return bool(self.mask_head.refines_boundaries)

    def forward(
        self, features, proposals, image_shapes, targets=None, given=None,
        score_thresh: float | None = None, coarse: bool = False, best_score: bool = False,
    ):
        """Losses in training; in eval per image ``dict(boxes, labels, scores, masks)``.

        Args:
            given: eval only, per image ``{"boxes": (N_i, 4)}`` in (resized) image pixels, with
                ``"labels"`` (N_i,) in 1..C or not; replaces ``proposals``. The given boxes are
                the detections: the box head only classifies them (and scores the given labels),
                then the mask branch runs as for the detector's own detections.
            score_thresh: eval only, the score a detection must exceed in this call instead of
                ``self.score_thresh`` (no state changes: concurrent calls may differ).
            coarse: eval only, adds ``coarse_masks`` (N_i, 1, S, S), the head's coarse stage of
                the same detections (RefineMask's 28×28, before the boundary refinement).
            best_score: eval only, adds ``best_score``, a 0-dim tensor per image: the highest
                foreground probability any of its RoIs had before any threshold (what a lower
                threshold would show when nothing is kept).
        """
        if self.training and (score_thresh is not None or coarse or best_score):
            raise ValueError("score_thresh, coarse and best_score are eval options")
        if given is not None:
            if self.training:
                raise ValueError("boxes can be given in eval mode only")
            # clipped as the detector clips its own detections
            proposals = [box_ops.clip_boxes_to_image(g["boxes"], shape) for g, shape in zip(given, image_shapes)]
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            for t in targets:
                if "masks" not in t:
                    raise ValueError("every training target needs 'masks'")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            losses = box_head_loss(
                class_logits, box_regression, labels, regression_targets,
                self.box_loss_weight, self.box_loss_weight, self.box_reg_loss,
            )
            positive = [
                self._mask_samples(mask_positives(lab, m, t)) for lab, m, t in zip(labels, matched_idxs, targets)
            ]
            pos_boxes = [p[i] for p, i in zip(proposals, positive)]
            pos_labels = [lab[i] for lab, i in zip(labels, positive)]
            pos_gt = [m[i] for m, i in zip(matched_idxs, positive)]
            losses.update(self.mask_loss(features, pos_boxes, pos_labels, pos_gt, targets, image_shapes))
            return [], losses

        if given is None:
            boxes, scores, labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes, score_thresh
            )
        else:
            boxes = proposals
            scores, labels = classify_given_boxes(class_logits, [g.get("labels") for g in given], [len(b) for b in boxes])
        masks = self.predict_masks(features, boxes, labels)
        result = [
            {"boxes": b, "labels": lab, "scores": s, "masks": m}
            for b, lab, s, m in zip(boxes, labels, scores, masks)
        ]
        if coarse:
            for r, m in zip(result, self.predict_masks(features, boxes, labels, coarse=True)):
                r["coarse_masks"] = m
        if best_score:
            counts = [p.shape[0] for p in proposals]
            for r, logits in zip(result, class_logits.split(counts)):
                r["best_score"] = best_foreground_score(logits)
        return result, {}

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes, score_thresh=None):
        """Per image: decode, clip, score > thresh, per-class NMS, the best ``detections_per_img``.

        torchvision's post-processing, with its small-box filter as ``box_min_size``; ``thresh``
        is ``score_thresh``, or ``self.score_thresh`` when None.

        Args:
            class_logits: (R, C+1), background first.
            box_regression: (R, 4(C+1)).
            proposals: per image (R_i, 4).

        Returns:
            per image boxes (K_i, 4), scores (K_i,) and labels (K_i,) in 1..C, best first.
        """
        num_classes = class_logits.shape[-1]
        counts = [p.shape[0] for p in proposals]  # not len(): stays dynamic under ONNX tracing
        all_boxes = self.box_coder.decode(box_regression, proposals).split(counts)
        all_scores = F.softmax(class_logits, -1).split(counts)
        thresh = self.score_thresh if score_thresh is None else score_thresh
        out_boxes, out_scores, out_labels = [], [], []
        for boxes, scores, shape in zip(all_boxes, all_scores, image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            labels = torch.arange(num_classes, device=scores.device).expand_as(scores)
            # one candidate per (RoI, foreground class), RoI-major
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            keep = torch.where(scores > thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            if self.box_min_size > 0:
                keep = box_ops.remove_small_boxes(boxes, self.box_min_size)
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out_boxes.append(boxes[keep])
            out_scores.append(scores[keep])
            out_labels.append(labels[keep])
        return out_boxes, out_scores, out_labels

    # -- training ---------------------------------------------------------------------------

    def _mask_samples(self, positive: torch.Tensor) -> torch.Tensor:
        """The positive RoIs that train the mask head: all, or a random subset of the cap."""
        cap = self.mask_positives_per_image
        if cap <= 0 or positive.numel() <= cap:
            return positive
        return positive[torch.randperm(positive.numel(), device=positive.device)[:cap]]

    def mask_loss(self, features, boxes, labels, gt_index, targets, image_shapes) -> dict[str, torch.Tensor]:
        """The mask head's losses: ``loss_instance`` (BAR) and ``loss_semantic``, or ``loss_mask``."""
        head = self.mask_head
        if not self.mask_loss_to_features:
            # the mask head still learns; the shared features see only the box and RPN losses
            features = {name: level.detach() for name, level in features.items()}
        rois = boxes_to_rois(boxes).to(features["0"].device)
        all_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
        pooled = self.mask_roi_pool.pool_rois(features, rois)
        per_image = [
            stage_mask_targets(b, g, t, head.stage_sizes, tuple(shape))
            for b, g, t, shape in zip(boxes, gt_index, targets, image_shapes)
        ]
        stage_targets = [torch.cat([img[k] for img in per_image], dim=0) for k in range(len(head.stage_sizes))]

        p2 = features["0"]
        semantic = head.semantic_forward(p2)
        stage_logits = head.instance_forward(pooled, semantic, rois, foreground_index(all_labels))
        if rois.shape[0] == 0:
            # no positive RoI: keep the graph connected (DDP needs every parameter used)
            loss = sum(s.sum() for s in stage_logits) * 0.0
        elif head.refines_boundaries:
            loss = bar_loss(stage_logits, stage_targets, self.bar_stage_weights, self.boundary_width)
        else:
            loss = F.binary_cross_entropy_with_logits(stage_logits[0][:, 0], stage_targets[0])
        if not head.refines_boundaries:
            return {"loss_mask": loss}
        if semantic.logits is None:  # the faster-better head: BAR loss only (docs/design.md §4.4)
            return {"loss_instance": loss}
        padded = (p2.shape[-2] * head.semantic_stride, p2.shape[-1] * head.semantic_stride)
        sem_target = semantic_target([instance_union(t) for t in targets], padded, tuple(p2.shape[-2:]))
        box_only = [t["boxes"][~t["has_mask"]] if "has_mask" in t else t["boxes"][:0] for t in targets]
        weight = semantic_ignore_weight(box_only, padded, tuple(p2.shape[-2:]))
        return {
            "loss_instance": loss,
            "loss_semantic": self.semantic_loss_weight * semantic_loss(semantic.logits, sem_target, weight),
        }

    # -- inference --------------------------------------------------------------------------

    def predict_masks(self, features, boxes: list[torch.Tensor], labels: list[torch.Tensor], coarse: bool = False):
        """Mask probabilities (N_i, 1, M, M) per image for the given detections (labels in 1..C).

        ``coarse=True`` returns the head's coarse stage (RefineMask's 28×28) instead of its final
        map (the assembled 112×112), to show what the refinement adds.
        """
        head = self.mask_head
        if coarse and head.coarse_stage is None:
            raise ValueError(f"{type(head).__name__} has no coarse stage")
        counts = [len(b) for b in boxes]
        rois = boxes_to_rois(boxes).to(features["0"].device)
        all_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
        # once per batch, not once per chunk as in the official code: same result, less work
        semantic = head.semantic_forward(features["0"])
        size = head.coarse_size if coarse else head.output_size
        chunks = []
        for start in range(0, rois.shape[0], self.mask_chunk_size):
            r = rois[start : start + self.mask_chunk_size]
            lab = all_labels[start : start + self.mask_chunk_size]
            chunks.append(self.mask_logits(features, r, lab, semantic, coarse).sigmoid())
        if not chunks:
            probs = features["0"].new_zeros((0, 1, size, size))
        else:
            probs = torch.cat(chunks, dim=0)
        return list(probs.split(counts, dim=0))

    def mask_logits(self, features, rois: torch.Tensor, labels: torch.Tensor, semantic=None, coarse: bool = False):
        """Mask logits (N, 1, M, M) of the given RoIs, with no loop: the part exports trace.

        Args:
            rois: (N, 5) [batch_index, x1, y1, x2, y2]; labels: (N,) in 1..C.
            semantic: the mask head's ``semantic_forward`` output, computed here when not given.
        """
        head = self.mask_head
        pooled = self.mask_roi_pool.pool_rois(features, rois)
        if semantic is None:
            semantic = head.semantic_forward(features["0"])
        stage_logits = head.instance_forward(pooled, semantic, rois, foreground_index(labels))
        return stage_logits[head.coarse_stage] if coarse else head.final_logits(stage_logits)
