"""Predict instance masks on images: the :class:`Predictor` API.

Shapes: N detections of one image; H x W the image size.

    >>> from refinemask import Predictor
    >>> predictor = Predictor("output/model_final.safetensors", score_thresh=0.5)
    >>> result = predictor("street.jpg")          # or a PIL image, an HxWx3 uint8 array, a CHW tensor
    >>> result["masks"].shape                      # (N, H, W) bool
    >>> results = predictor(["a.jpg", "b.png"])   # a list in, a list out
    >>> result = predictor("street.jpg", boxes=[[10, 20, 200, 180]], labels=[1])  # masks for your boxes
    >>> result = predictor("scene.tif", masks="rle")  # large images: COCO RLEs, no (N, H, W) map

``refinemask predict`` runs it over files (:mod:`refinemask.predict_files`) and draws the
overlays with :mod:`refinemask.overlay`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from refinemask.data.images import as_image_tensor
from refinemask.engine.inference import detect
from refinemask.errors import RefineMaskError
from refinemask.modeling.box_masks import MaskWindows


class Predictor:
    """A trained model ready to segment images.

    Args:
        model_or_path: a model (e.g. from :func:`refinemask.load_model`) or the path of a
            ``.safetensors`` weights file or training checkpoint.
        device: where to run ("cpu", "cuda", "cuda:1").
        score_thresh: keep detections scoring at least this; None keeps the model's own
            threshold (``model.box_score_thresh``).
        mask_threshold: probability at which a mask pixel counts as the object (0.5, as the
            official code).

    Calling it with one image returns one dict, with a list of images a list of dicts:
    ``boxes`` float32 (N, 4) XYXY pixels, ``labels`` int64 (N,) in 1..C, ``scores`` (N,),
    ``masks`` bool (N, H, W), on the CPU. ``category_names[label - 1]`` names a label;
    ``label_to_category`` maps it to the dataset's category id.

    Masks for boxes from elsewhere (another detector, hand-drawn): ``predictor(image,
    boxes=B, labels=L)`` with B (N, 4) XYXY in the image's pixels and L (N,) in 1..C (for a list
    of images, a list of each). The result has one mask per given box, in the given order:
    ``boxes`` are the given boxes, ``labels`` the given labels, and ``scores`` the box head's
    probability of each label; ``score_thresh`` does not apply. Without labels the box head
    classifies each box (its most probable class, and that probability as the score): the
    mask stages are class-specific, so a class is needed, and the box head is the model's own
    classifier of such boxes. A box without area or wholly outside the image is a one-line
    error; the part of a box outside the image is clipped (masks stop at the image border).

    After a call without given boxes, ``best_scores`` holds the highest score any box of each
    image had, kept or not: what a lower threshold would show when an image comes back empty
    (the latest call's: with threads sharing a Predictor, their results are each their own,
    ``best_scores`` the last one's).

    ``predictor(image, coarse=True)`` adds ``coarse_masks`` bool (N, H, W): RefineMask's 28 x 28
    stage (before the boundary refinement) of the same detections, pasted into the image as the
    final masks are (None for a Mask R-CNN model). ``refinemask serve`` shows them.

    ``predictor(image, tile=SIZE, overlap=FRACTION)`` predicts an image far larger than the
    model's input tile by tile, each tile at the model's own scale, and merges the objects that
    tiles share into one detection each (:mod:`refinemask.engine.tiling`): for aerial scenes,
    slides and other large images whose objects would vanish if the image were shrunk whole.

    ``masks=`` chooses the form of ``masks`` (and ``coarse_masks``): "image" (default) bool
    (N, H, W); "box" a :class:`~refinemask.modeling.box_masks.MaskWindows` (each mask a bool
    window at its box: memory grows with the boxes' areas, not with N x H x W); "rle" a list of
    N COCO compressed RLEs (``counts`` a str). Whatever the form, no full-image map per
    detection is made before it (the model returns box-local masks to the Predictor).
    """

    def __init__(
        self,
        model_or_path: torch.nn.Module | str | Path,
        device: str | torch.device = "cpu",
        score_thresh: float | None = None,
        mask_threshold: float = 0.5,
    ):
        self.device = torch.device(device)
        if isinstance(model_or_path, (str, Path)):
            from refinemask.model_files import load_model

            model = load_model(model_or_path, device=self.device)
        else:
            model = model_or_path.to(self.device).eval()
        self.model = model
        from refinemask.data.images import scaling_options
        from refinemask.model_files import model_categories

        self.label_to_category, self.category_names = model_categories(model)
        self.scaling = scaling_options(model.config)  # >8-bit images as in training
        self.score_thresh = score_thresh
        self.mask_threshold = mask_threshold
        self.best_scores: list[float] = []

    def __call__(
        self, images: Any, boxes: Any = None, labels: Any = None, coarse: bool = False, masks: str = "image",
        tile: int | None = None, overlap: float = 0.2,
    ) -> dict | list[dict]:
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        self.best_scores = []
        if masks not in MASK_FORMATS:
            raise RefineMaskError(f"masks={masks!r}: choose one of {', '.join(map(repr, MASK_FORMATS))}")
        if tile is not None:
            if boxes is not None or labels is not None or coarse:
                raise RefineMaskError("tile= is for the model's own detections: not with boxes=, labels= or coarse=True")
            outputs = [self._tiled(image, tile, overlap, masks) for image in batch]
            return outputs[0] if single else outputs
        if boxes is not None:
            if coarse:
                raise RefineMaskError("coarse=True is for the model's own detections, not for given boxes")
            return self._given_boxes(batch, single, boxes, labels, masks)
        if labels is not None:
            raise RefineMaskError("labels are for given boxes: pass boxes= as well")
        outputs, self.best_scores = self._own_detections(batch, coarse, masks)
        return outputs[0] if single else outputs

    def _own_detections(self, batch: list, coarse: bool, masks: str) -> tuple[list[dict], list[float]]:
        """The model's detections of each image, and each image's best score, kept or not.

        Everything this call needs goes to the model's forward as options (threshold, coarse
        stage, best score): nothing on the model or on ``self`` changes, so threads may share
        a Predictor.
        """
        heads = self.model.roi_heads
        # filtering before NMS keeps the same detections above the threshold and spares the
        # mask head the rest; the model's own threshold stays the floor
        thresh = None if self.score_thresh is None else max(float(heads.score_thresh), self.score_thresh)
        with_coarse = coarse and heads.mask_head.coarse_stage is not None
        outputs, best = [], []
        for image in batch:  # one image a forward
            output = detect(
                self.model, [as_image_tensor(image, **self.scaling)], self.device, mask_output="box",
                score_thresh=thresh, coarse=with_coarse, best_score=True,
            )[0]
            best.append(float(output.pop("best_score")))
            if coarse and not with_coarse:
                output["coarse_masks"] = None  # a head without a coarse stage (Mask R-CNN)
            outputs.append(self._binarise(output, masks))
        return outputs, best

    def _tiled(self, image: Any, tile: int, overlap: float, masks: str) -> dict:
        """One image predicted tile by tile and merged (:func:`refinemask.engine.tiling.predict_tiled`)."""
        from refinemask.engine.tiling import check_tiling, predict_tiled

        check_tiling(tile, overlap)
        tensor = as_image_tensor(image, **self.scaling)
        best: list[float] = []

        def predict_tile(part: torch.Tensor) -> dict:
            (result,), (score,) = self._own_detections([part], False, "box")
            best.append(score)
            return result

        result = predict_tiled(predict_tile, tensor, int(tile), float(overlap))
        self.best_scores = [max(best, default=0.0)]
        result["masks"] = mask_form(result["masks"], masks)
        return result

    def _given_boxes(self, batch: list, single: bool, boxes: Any, labels: Any, masks: str) -> dict | list[dict]:
        """One mask per given box: the model's forward with ``boxes``/``labels`` (see the class)."""
        per_image_boxes = [boxes] if single else list(boxes)
        per_image_labels = [labels] if single else (list(labels) if labels is not None else [None] * len(batch))
        if len(per_image_boxes) != len(batch) or len(per_image_labels) != len(batch):
            raise RefineMaskError(f"give one box list (and label list) per image: {len(batch)} images, {len(per_image_boxes)} box lists")
        outputs = []
        for image, image_boxes, image_labels in zip(batch, per_image_boxes, per_image_labels):
            tensor = as_image_tensor(image, **self.scaling)
            output = detect(
                self.model, [tensor], self.device, boxes=[image_boxes], labels=None if image_labels is None else [image_labels],
                mask_output="box",
            )[0]
            result = self._binarise(output, masks, threshold=False)
            # the boxes as given (the model returns them clipped to the image)
            result["boxes"] = torch.as_tensor(image_boxes, dtype=torch.float32).reshape(-1, 4).cpu()
            outputs.append(result)
        return outputs[0] if single else outputs

    def _binarise(self, output: dict, masks: str, threshold: bool = True) -> dict:
        """Detections kept (score threshold) on the CPU, masks binarised in the form ``masks``."""
        keep = torch.ones_like(output["scores"], dtype=torch.bool)
        if threshold and self.score_thresh is not None:
            keep = output["scores"] >= self.score_thresh
        result = {
            "boxes": output["boxes"][keep].float().cpu(),
            "labels": output["labels"][keep].cpu(),
            "scores": output["scores"][keep].cpu(),
        }
        for key in ("masks", "coarse_masks") if "coarse_masks" in output else ("masks",):
            if output[key] is None:
                result[key] = None
                continue
            result[key] = mask_form(output[key][keep].binarize(self.mask_threshold), masks)
        return result


MASK_FORMATS = ("image", "box", "rle")


def mask_form(windows: MaskWindows, form: str):
    """Binary masks as ``Predictor(...)(..., masks=form)`` returns them (see the class)."""
    if form == "box":
        return windows
    if form == "rle":
        from refinemask.evaluation.coco import encode_mask_windows

        return encode_mask_windows(windows)
    return windows.to_image()


