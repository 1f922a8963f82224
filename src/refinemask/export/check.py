"""Check an exported file against PyTorch: run both on the same images and compare.

``refinemask export`` calls these after writing a file; a comparison that matched no detection
checked nothing, and says so (:attr:`ExportCheck.num_matched`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from refinemask.data.images import as_image_tensor, as_rgb_array
from refinemask.engine.inference import detect
from refinemask.errors import RefineMaskError
from refinemask.export.onnx import DEFAULT_OPSET, export_onnx
from refinemask.export.runtime import OnnxBoxesPredictor, OnnxPredictor

@dataclass
class ExportCheck:
    """How an exported detector's detections compare with PyTorch's on some images."""

    num_images: int
    num_detections: int  # PyTorch's, summed over the images
    count_mismatches: int  # images where the two give a different number of detections
    max_box_difference: float  # pixels, over matched pairs
    min_mask_iou: float  # over matched pairs (1.0 when there is no detection)
    num_matched: int = 0  # pairs compared; 0 means the check checked nothing
    mean_mask_iou: float = 1.0  # over matched pairs: the figure for an int8 graph, whose worst pair says little
    mean_box_difference: float = 0.0  # pixels, the largest coordinate difference of a pair, averaged


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def match_detections(boxes_a: np.ndarray, labels_a: np.ndarray, boxes_b: np.ndarray, labels_b: np.ndarray) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (i, j) of same-label boxes, highest IoU first.

    Equal scores can leave two runtimes' outputs in different orders; pairing by overlap makes
    the comparison independent of that order.
    """
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return []
    iou = _box_iou(boxes_a, boxes_b)
    iou[labels_a[:, None] != labels_b[None, :]] = -1
    pairs = []
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < 0:
            break
        if all(i != p and j != q for p, q in pairs):
            pairs.append((i, j))
    return pairs


def compare_detections(reference: Callable[[np.ndarray], dict], candidate: Callable[[np.ndarray], dict],
                       arrays: Sequence[np.ndarray]) -> ExportCheck:
    """Run two predictors on the same (H, W, 3) float images and compare their detections.

    Each returns ``boxes``, ``labels``, ``masks`` (bool, the image's size), as tensors or
    arrays; detections are paired by :func:`match_detections`.
    """
    count_mismatches, total, box_diffs, ious = 0, 0, [], []
    for array in arrays:
        ours = {k: np.asarray(v) for k, v in reference(array).items()}
        theirs = {k: np.asarray(v) for k, v in candidate(array).items()}
        total += len(ours["boxes"])
        count_mismatches += int(len(ours["boxes"]) != len(theirs["boxes"]))
        for i, j in match_detections(ours["boxes"], ours["labels"], theirs["boxes"], theirs["labels"]):
            box_diffs.append(float(np.abs(ours["boxes"][i] - theirs["boxes"][j]).max()))
            union = np.logical_or(ours["masks"][i], theirs["masks"][j]).sum()
            inter = np.logical_and(ours["masks"][i], theirs["masks"][j]).sum()
            ious.append(float(inter / union) if union else 1.0)
    return ExportCheck(
        len(arrays), total, count_mismatches, max(box_diffs, default=0.0), min(ious, default=1.0), len(ious),
        float(np.mean(ious)) if ious else 1.0, float(np.mean(box_diffs)) if box_diffs else 0.0,
    )


def check_export(model: nn.Module, onnx_path: str | Path, images: Sequence[Any], runtime: str = "onnxruntime") -> ExportCheck:
    """Run the model (PyTorch) and the exported file (``runtime``) on ``images``; compare."""
    from refinemask.engine.predict import Predictor

    torch_predictor = Predictor(model)
    onnx_predictor = OnnxPredictor(onnx_path, runtime=runtime)
    arrays = [as_rgb_array(image, **torch_predictor.scaling) for image in images]  # one input for both
    return compare_detections(torch_predictor, onnx_predictor.predict_array, arrays)


def check_quantized(fp32_path: str | Path, int8_path: str | Path, images: Sequence[Any]) -> ExportCheck:
    """How an int8 copy agrees with its fp32 graph on ``images`` (both in onnxruntime): detections
    paired by overlap, mask IoU and box error of the pairs, and the images whose count differs.
    Read ``mean_mask_iou`` and ``mean_box_difference``; int8 is not expected to match exactly."""
    reference = OnnxPredictor(fp32_path)
    candidate = OnnxPredictor(int8_path)
    arrays = [as_rgb_array(image, **reference.scaling) for image in images]
    return compare_detections(reference.predict_array, candidate.predict_array, arrays)


def threshold_keeping(model: nn.Module, image: np.ndarray, count: int = 10) -> float:
    """A box score threshold at which ``model`` keeps its ``count`` best detections of ``image``.

    Halfway between the count-th and the next score of the detections at threshold 0 (all
    candidates), so that a score rounding differently in another runtime does not move a
    detection across it; half the lowest score when there are no more than ``count``.
    """
    # a call option, so the model is left as it was
    scores = detect(model, [as_image_tensor(image)], score_thresh=0.0)[0]["scores"].sort(descending=True).values.tolist()
    if not scores:
        raise RefineMaskError("the model gives no detection at all, even at score threshold 0")
    if len(scores) <= count:
        return scores[-1] / 2
    return (scores[count - 1] + scores[count]) / 2


def check_export_at_threshold(model: nn.Module, images: Sequence[Any], threshold: float, opset: int = DEFAULT_OPSET,
                              runtime: str = "onnxruntime") -> ExportCheck:
    """Export a copy of the detector with box score threshold ``threshold`` to a temporary
    file and compare it with PyTorch at that threshold (:func:`check_export`).

    The copy's graph is the written one's except for that one constant. Checking it is how
    the export is checked when the written file's threshold leaves no detection on the
    example image: a comparison over no detection compares nothing.
    """
    import tempfile

    heads = model.roi_heads
    saved = heads.score_thresh
    heads.score_thresh = float(threshold)
    try:
        with tempfile.TemporaryDirectory(prefix="refinemask-export-check-") as folder:
            path = export_onnx(model, Path(folder) / "check.onnx", opset=opset)
            return check_export(model, path, images, runtime=runtime)
    finally:
        heads.score_thresh = saved


def check_boxes_export(model: nn.Module, onnx_path: str | Path, images: Sequence[Any]) -> tuple[float, float]:
    """Compare a given-boxes export with PyTorch on ``images``, for three boxes spread over each
    image (one per corner region and the centre, labels cycling 1..C).

    Returns the smallest mask IoU and the largest score difference over all boxes.
    """
    from refinemask.engine.predict import Predictor

    torch_predictor = Predictor(model)
    onnx_predictor = OnnxBoxesPredictor(onnx_path)
    min_iou, score_diff = 1.0, 0.0
    for image in images:
        array = as_rgb_array(image, **torch_predictor.scaling)  # one input for both runtimes
        h, w = array.shape[:2]
        boxes = np.asarray([[0.05, 0.1, 0.5, 0.6], [0.4, 0.3, 0.95, 0.9], [0.2, 0.2, 0.8, 0.8]], dtype=np.float32)
        boxes = boxes * np.asarray([w, h, w, h], dtype=np.float32)
        labels = (np.arange(len(boxes)) % int(model.config.num_classes)) + 1
        ours = torch_predictor(array, boxes=boxes, labels=labels)
        theirs = onnx_predictor(array, boxes, labels)
        score_diff = max(score_diff, float(np.abs(ours["scores"].numpy() - theirs["scores"]).max()))
        for a, b in zip(ours["masks"].numpy(), theirs["masks"]):
            union = np.logical_or(a, b).sum()
            min_iou = min(min_iou, float(np.logical_and(a, b).sum() / union) if union else 1.0)
    return min_iou, score_diff
