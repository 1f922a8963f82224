"""COCO-style scoring of instance predictions: box AP, mask AP and Boundary AP.

Scoring is done by faster-coco-eval (``COCO`` + ``COCOeval_faster``), which also computes
Boundary AP (Cheng et al. 2021, "Boundary IoU"): the COCO AP machinery run with
``min(mask IoU, boundary IoU)`` for every non-crowd ground truth, where the boundary is the inner
band of width ``d = max(1, round(ratio * image diagonal))`` pixels (:func:`boundary_band_width`,
rounding half to even as the official boundary-iou-api does). Objects narrower than about
``2 d`` are eroded away entirely, so for them Boundary IoU equals mask IoU; the band also depends
on the image size, so always score at the original resolution.

Every metric is a fraction in [0, 1], not a percentage. A metric that is undefined on the given
ground truth (``APs`` when there are no small objects, ``APr`` without rare categories) is NaN.

Shapes: N detections of one image; H x W the image size.

Ground truth is scored as COCO means it, whatever tool wrote the file
(:func:`load_coco_ground_truth`): annotation ids are renumbered 1..M internally when they are
not unique positive integers (faster-coco-eval, like pycocotools, marks "unmatched" with id 0,
so an annotation with id 0, as labelme and Label Studio write, could never be matched); a
missing ``area``, or one that differs from the segmentation's pixel area by more than
:data:`~refinemask.data.validation.AREA_TOLERANCE`, is taken from the segmentation (the size
ranges APs/APm/APl are read from it); and a box-only annotation (no segmentation, as CVAT rectangles) is box ground truth for
box AP and a crowd region of its box for mask and boundary AP, so a detection on it counts
neither as right nor as wrong (:func:`refinemask.data.validation.is_box_only`). None of this
changes a result file we write: results carry image and category ids only.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_api

from refinemask.data.validation import annotation_area, is_box_only, wrong_area_note, wrong_areas
from refinemask.errors import RefineMaskError
from refinemask.jsonfile import read_json

logger = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm", "boundary")
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LVIS_FREQUENCY_METRICS = ("APr", "APc", "APf")
STANDARD_BOUNDARY_DILATION = 0.02
LVIS_MAX_DETECTIONS_PER_IMAGE = 300

# faster-coco-eval's stats_as_dict names -> ours (detectron2's short names)
_STAT_NAMES = {
    "AP_all": "AP",
    "AP_50": "AP50",
    "AP_75": "AP75",
    "AP_small": "APs",
    "AP_medium": "APm",
    "AP_large": "APl",
    "APr": "APr",
    "APc": "APc",
    "APf": "APf",
}


def predictions_to_coco_results(
    outputs: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    label_to_category: Mapping[int, int],
    mask_threshold: float = 0.5,
) -> list[dict]:
    """Convert torchvision-style detections to COCO results (one dict per detection).

    Args:
        outputs: one dict per image, as a torchvision detector returns in eval mode:
            ``boxes`` (N, 4) XYXY absolute pixels, ``labels`` (N,) int contiguous 1..C,
            ``scores`` (N,), and optionally ``masks``: float (N, 1, H, W) or (N, H, W)
            probabilities in 0-1, or already binary bool/uint8 (N, H, W). Tensors (any device)
            or numpy arrays; or box-local masks (``BoxMasks``, binarised here, or
            ``MaskWindows``, see :mod:`refinemask.modeling.box_masks`), encoded window by
            window without a full-image map.
        image_ids: the COCO image id of each entry of ``outputs``.
        label_to_category: contiguous label -> COCO category id (the dataset's mapping).
        mask_threshold: probability masks are binarised with ``>= mask_threshold``, as the
            official RefineMask (mmdetection ``mask_thr_binary``) does.

    Returns:
        COCO results: ``image_id``, ``category_id``, ``bbox`` as XYWH, ``score`` and, when masks
        are given, ``segmentation`` as compressed RLE whose ``counts`` is a str, so the list is
        JSON-serialisable as is.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"got {len(outputs)} outputs for {len(image_ids)} image ids")
    results: list[dict] = []
    for output, image_id in zip(outputs, image_ids):
        boxes = to_numpy(output["boxes"]).astype(np.float64).reshape(-1, 4)
        labels = to_numpy(output["labels"]).reshape(-1)
        scores = to_numpy(output["scores"]).astype(np.float64).reshape(-1)
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(
                f"image {image_id}: {len(boxes)} boxes, {len(labels)} labels and "
                f"{len(scores)} scores; they must have one entry per detection"
            )
        categories = []
        for label in labels.tolist():
            if label not in label_to_category:
                raise RefineMaskError(
                    f"image {image_id}: predicted label {label} has no COCO category in "
                    f"label_to_category (labels {sorted(label_to_category)}); the model and "
                    "the dataset have different classes"
                )
            categories.append(int(label_to_category[label]))

        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]

        rles: list[dict] | None = None
        masks = output.get("masks")
        if masks is not None:
            from refinemask.modeling.box_masks import BoxMasks, MaskWindows

            if isinstance(masks, (BoxMasks, MaskWindows)):
                rles = encode_mask_windows(masks.binarize(mask_threshold) if isinstance(masks, BoxMasks) else masks)
            else:
                rles = encode_masks(binary_masks(masks, mask_threshold))
            if len(rles) != len(boxes):
                raise ValueError(f"image {image_id}: {len(rles)} masks for {len(boxes)} boxes")

        for i in range(len(boxes)):
            result = {
                "image_id": int(image_id),
                "category_id": categories[i],
                "bbox": [float(v) for v in xywh[i]],
                "score": float(scores[i]),
            }
            if rles is not None:
                result["segmentation"] = rles[i]
            results.append(result)
    return results


def binary_masks(masks: Any, threshold: float = 0.5) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) masks -> uint8 (N, H, W) of 0/1.

    Floating-point masks are probabilities and binarised with ``>= threshold``; bool and
    integer masks are taken as already binary (non-zero = object).
    """
    if hasattr(masks, "detach"):  # torch tensor: threshold where it lives, move only bits
        masks = masks.detach()
        masks = (masks >= threshold) if masks.is_floating_point() else (masks != 0)
        masks = masks.cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be (N, 1, H, W) or (N, H, W), got {masks.shape}")
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, 1, H, W) or (N, H, W), got {masks.shape}")
    if np.issubdtype(masks.dtype, np.floating):
        masks = masks >= threshold
    elif masks.dtype != bool:
        masks = masks != 0
    return np.ascontiguousarray(masks).view(np.uint8)  # bool -> 0/1 bytes without a copy


def encode_masks(masks: np.ndarray) -> list[dict]:
    """uint8 (N, H, W) binary masks -> N compressed RLEs with str ``counts``."""
    if len(masks) == 0:
        return []
    # RLE runs go down columns: one (H, W, N) Fortran-ordered block encodes all N at once
    rles = mask_api.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for rle in rles:
        if isinstance(rle["counts"], bytes):
            rle["counts"] = rle["counts"].decode("ascii")
    return rles


def encode_mask_windows(windows) -> list[dict]:
    """:class:`~refinemask.modeling.box_masks.MaskWindows` -> N compressed RLEs with str ``counts``.

    The same RLEs as :func:`encode_masks` of the full-image masks, built from each window alone
    (pycocotools encodes full arrays only). COCO's runs go down the columns of the H x W image;
    a window of h x w at (top, left) is, column-major, a run of left·H + top zeros, then each
    window column followed by the H - h zeros that lead to the next one, and the zeros after
    the last. Each window is flattened with one "gap" cell before each of its columns, each cell
    weighted by how many pixels it stands for, and the runs are sums of those weights.
    """
    height, width = windows.image_size
    rles = []
    for (top, left), mask in zip(windows.origins, windows.masks):
        h, w = (int(v) for v in mask.shape)
        cells = np.zeros((w, h + 1), dtype=np.uint8)
        weights = np.ones((w, h + 1), dtype=np.int64)
        if w:
            cells[:, 1:] = np.asarray(mask, dtype=bool).T
            weights[:, 0] = height - h
            weights[0, 0] = left * height + top
        cells = np.append(cells.ravel(), np.uint8(0))
        weights = np.append(weights.ravel(), 0)
        weights[-1] = height * width - weights.sum()  # the zeros after the window
        keep = weights > 0  # a zero-pixel gap (a window of full height) must not split a run
        cells, weights = cells[keep], weights[keep]
        ends = np.flatnonzero(np.diff(cells.astype(np.int8))) + 1  # where a new run starts
        totals = np.cumsum(weights)
        bounds = np.concatenate([[0], totals[ends - 1], [totals[-1]]]) if len(cells) else np.zeros(1, np.int64)
        counts = np.diff(bounds).tolist()
        if len(cells) and cells[0] == 1:
            counts = [0] + counts  # COCO's runs start with the zeros
        rle = mask_api.frPyObjects({"counts": counts or [0], "size": [height, width]}, height, width)
        if isinstance(rle["counts"], bytes):
            rle["counts"] = rle["counts"].decode("ascii")
        rles.append(rle)
    return rles


def evaluate_coco(
    gt: str | os.PathLike | dict | COCO,
    results: str | os.PathLike | Sequence[dict],
    iou_types: Sequence[str] = IOU_TYPES,
    boundary_dilation_ratios: Sequence[float] = (STANDARD_BOUNDARY_DILATION,),
    lvis_style: bool = False,
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """Score COCO results against COCO ground truth with faster-coco-eval.

    Args:
        gt: ground truth: a COCO-format json path, its loaded dict, or a faster-coco-eval COCO.
        results: COCO results (a list of dicts, or a json path), e.g. from
            :func:`predictions_to_coco_results`. Every ``image_id`` must be in ``gt``.
        iou_types: any of "bbox", "segm", "boundary" (Boundary AP).
        boundary_dilation_ratios: band widths for Boundary AP, as fractions of the image
            diagonal. 0.02 (the paper's) is reported under "boundary", any other ratio under
            "boundary@<ratio>", e.g. "boundary@0.008" (about 3 px at 256x256).
        lvis_style: federated LVIS rules (detections of categories neither present nor in an
            image's ``neg_category_ids`` are dropped, unmatched ones in
            ``not_exhaustive_category_ids`` are ignored, at most 300 detections per image) and
            APr/APc/APf from the categories' ``frequency``. See :mod:`refinemask.evaluation.lvis`.
        image_ids: score only these images (those the model ran on); default all of ``gt``.
            A results file cannot tell an image with no detections from one never run.
        verbose: print faster-coco-eval's summaries; silent otherwise.

    Returns:
        ``{key: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}`` in [0, 1] (not percent), one key
        per IoU type (and dilation), in the order asked; LVIS style adds APr, APc, APf.
        Undefined metrics are NaN. No detections at all gives AP 0.

    Detections' ``area`` (for APs/APm/APl) is the box area when results carry a ``bbox``, as in
    pycocotools and the official (mmdetection) evaluation.
    """
    coco_gt = load_coco_ground_truth(gt)
    result_list = load_coco_results(results)
    return score_checked_results(
        coco_gt,
        result_list,
        iou_types=iou_types,
        boundary_dilation_ratios=boundary_dilation_ratios,
        lvis_style=lvis_style,
        image_ids=image_ids,
        verbose=verbose,
        results_name=describe_source(results, "results"),
        gt_name=describe_source(gt, "the ground truth"),
    )


def metric_key(iou_type: str, dilation_ratio: float | None = None) -> str:
    """Key of one IoU type's metrics: "segm", "boundary", "boundary@0.008"."""
    if iou_type != "boundary" or dilation_ratio is None:
        return iou_type
    if math.isclose(dilation_ratio, STANDARD_BOUNDARY_DILATION):
        return "boundary"
    return f"boundary@{dilation_ratio:g}"


def load_coco_ground_truth(gt: str | os.PathLike | dict | COCO) -> COCO:
    """A faster-coco-eval COCO from a json path, a loaded dict, or a COCO, ready to score.

    Ids, areas and box-only annotations are settled as the module docstring says; a COCO that
    needs none of it is returned as is, otherwise one built on a settled copy of its dict.
    """
    if isinstance(gt, COCO):
        if not _needs_settling(gt.dataset):
            return gt
        gt = gt.dataset
    if isinstance(gt, (str, os.PathLike)):
        data = read_json(gt, "annotation file")
        name = str(gt)
    elif isinstance(gt, Mapping) or isinstance(getattr(gt, "dataset", None), Mapping):
        # a dict, or another COCO API object (pycocotools') holding its dict in .dataset
        data = copy.deepcopy(dict(gt if isinstance(gt, Mapping) else gt.dataset))  # evaluation writes into it
        name = "the ground-truth dict"
    else:
        raise TypeError(f"gt must be a path, a dict or a COCO, got {type(gt).__name__}")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise RefineMaskError(
            f"{name}: not a COCO annotation file (no 'images' list); pass the dataset's "
            "instances json"
        )
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise RefineMaskError(f"{name}: not a COCO annotation file (no '{key}' list)")
    for image in data["images"]:
        if not isinstance(image, dict) or not {"id", "height", "width"} <= image.keys():
            raise RefineMaskError(
                f"{name}: image entry {_short(image)} needs 'id', 'height' and 'width'"
            )
    settle_ground_truth(data, name)
    return COCO(data, print_function=_silent)


def settle_ground_truth(data: dict, name: str = "the ground truth") -> dict:
    """Renumber annotation ids and fix areas of a COCO dict, in place (see the module docstring).

    Returns ``data``. Logs one warning line when areas were wrong.
    """
    annotations = [a for a in data["annotations"] if isinstance(a, dict)]
    ids = [a.get("id") for a in annotations]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids) or len(set(ids)) != len(ids):
        for number, annotation in enumerate(annotations, 1):
            annotation["id"] = number
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    wrong = wrong_areas(data)  # after the renumbering: ids are unique
    wrong_ids = {w[0] for w in wrong}
    for annotation in annotations:
        given = annotation.get("area")
        missing = not isinstance(given, (int, float)) or isinstance(given, bool)
        if not missing and annotation.get("id") not in wrong_ids:
            continue
        size = sizes.get(annotation.get("image_id"))
        if size is None or "bbox" not in annotation:
            continue  # scoring refuses or skips it; nothing to settle
        try:
            annotation["area"] = annotation_area(annotation, *size)
        except (TypeError, ValueError, KeyError, IndexError):
            continue  # a malformed segmentation: faster-coco-eval names it
    if wrong:
        logger.warning("%s: %s", name, wrong_area_note(wrong))
    return data


def _needs_settling(data: Mapping) -> bool:
    """Whether a COCO's dict has ids, areas or box-only annotations to settle before scoring."""
    annotations = data.get("annotations", [])
    ids = [a.get("id") for a in annotations]
    if any(not isinstance(i, int) or i <= 0 for i in ids) or len(set(ids)) != len(ids):
        return True
    return any("area" not in a for a in annotations)


def mask_ground_truth(coco_gt: COCO) -> COCO:
    """The ground truth of mask and boundary AP: box-only annotations become crowd boxes.

    A detection inside a crowd region is neither a true nor a false positive, which is what
    "ignored for masks" means in scoring. Returns ``coco_gt`` itself when it has no box-only
    annotation.
    """
    box_only = [a for a in coco_gt.dataset["annotations"] if is_box_only(a) and not a.get("iscrowd", 0)]
    if not box_only:
        return coco_gt
    data = dict(coco_gt.dataset)
    ignored = {id(a) for a in box_only}
    annotations = []
    for annotation in data["annotations"]:
        if id(annotation) in ignored:
            x, y, w, h = annotation["bbox"]
            annotation = dict(
                annotation, iscrowd=1, segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]
            )
        else:
            annotation = dict(annotation)
        annotations.append(annotation)
    data["annotations"] = annotations
    return COCO(data, print_function=_silent)


def load_coco_results(results: str | os.PathLike | Sequence[dict]) -> list[dict]:
    """A list of COCO result dicts from a json path or a list; checks each entry's keys."""
    name = describe_source(results, "results")
    if isinstance(results, (str, os.PathLike)):
        results = read_json(results, "results file")
    if isinstance(results, dict) and "annotations" in results:
        raise RefineMaskError(
            f"{name} holds COCO annotations, not results; give the detections file (a list)"
        )
    if not isinstance(results, (list, tuple)):
        raise RefineMaskError(
            f"{name}: COCO results must be a list of detections, got a {type(results).__name__}"
        )
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise RefineMaskError(f"{name}: entry {index} is not a detection dict")
        missing = {"image_id", "category_id", "score"} - result.keys()
        if missing:
            raise RefineMaskError(
                f"{name}: entry {index} lacks {', '.join(sorted(missing))}; each detection needs "
                "image_id, category_id, score and a bbox or segmentation"
            )
        if "bbox" not in result and "segmentation" not in result:
            raise RefineMaskError(f"{name}: entry {index} has neither 'bbox' nor 'segmentation'")
    return list(results)


def score_checked_results(
    coco_gt: COCO,
    results: list[dict],
    *,
    iou_types: Sequence[str],
    boundary_dilation_ratios: Sequence[float],
    lvis_style: bool,
    image_ids: Sequence[int] | None,
    verbose: bool,
    results_name: str,
    gt_name: str,
) -> dict[str, dict[str, float]]:
    """Shared by COCO, LVIS and AP* scoring; ``results`` are already checked dicts."""
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    unknown_types = [t for t in iou_types if t not in IOU_TYPES]
    if unknown_types or not iou_types:
        raise RefineMaskError(
            f"IoU types must be some of {', '.join(IOU_TYPES)}, got {', '.join(iou_types) or 'none'}"
        )
    if "boundary" in iou_types:
        if not boundary_dilation_ratios:
            raise RefineMaskError("Boundary AP needs at least one dilation ratio (e.g. 0.02)")
        for ratio in boundary_dilation_ratios:
            if not 0 < ratio < 1:
                raise RefineMaskError(
                    f"boundary dilation ratio {ratio} must be a fraction of the image diagonal "
                    "in (0, 1), e.g. 0.02"
                )
    mask_types = [t for t in iou_types if t != "bbox"]
    if mask_types:
        without_mask = next((i for i, r in enumerate(results) if "segmentation" not in r), None)
        if without_mask is not None:
            raise RefineMaskError(
                f"{results_name}: entry {without_mask} has no 'segmentation', so "
                f"{'/'.join(mask_types)} AP cannot be computed; score boxes only (iou types: bbox)"
            )

    gt_image_ids = set(coco_gt.getImgIds())
    unknown_images = sorted({r["image_id"] for r in results} - gt_image_ids)
    if unknown_images:
        raise RefineMaskError(
            f"{results_name}: {len(unknown_images)} image id(s) are not in {gt_name} "
            f"(e.g. {', '.join(map(str, unknown_images[:5]))}); score the results against the "
            "annotation file the predictions were made on"
        )
    gt_category_ids = set(coco_gt.getCatIds())
    unknown_categories = sorted({r["category_id"] for r in results} - gt_category_ids)
    if unknown_categories:
        raise RefineMaskError(
            f"{results_name}: category id(s) {', '.join(map(str, unknown_categories[:5]))} are not "
            f"in {gt_name}; results need the dataset's category ids, not contiguous labels"
        )
    if image_ids is not None:
        missing = sorted(set(image_ids) - gt_image_ids)
        if missing:
            raise RefineMaskError(
                f"image id(s) {', '.join(map(str, missing[:5]))} to score are not in {gt_name}"
            )
    if lvis_style:
        _check_lvis_ground_truth(coco_gt, gt_name)
        results = keep_top_detections_per_image(results, LVIS_MAX_DETECTIONS_PER_IMAGE)
        # faster-coco-eval drops these itself, but (1.8.0) crashes with "unordered_map::at" when
        # an image without ground truth has only such detections: drop them first
        results = drop_unverified_detections(coco_gt, results)

    metrics: dict[str, dict[str, float]] = {}
    mask_gt = mask_ground_truth(coco_gt) if mask_types else coco_gt
    for iou_type in iou_types:
        ratios = boundary_dilation_ratios if iou_type == "boundary" else (None,)
        for ratio in ratios:
            metrics[metric_key(iou_type, ratio)] = _run_cocoeval(
                coco_gt if iou_type == "bbox" else mask_gt, results, iou_type, ratio, lvis_style, image_ids, verbose
            )
    return metrics


def _run_cocoeval(
    coco_gt: COCO,
    results: list[dict],
    iou_type: str,
    dilation_ratio: float | None,
    lvis_style: bool,
    image_ids: Sequence[int] | None,
    verbose: bool,
) -> dict[str, float]:
    printer = print if verbose else _silent
    # loadRes writes id/area/iscrowd into each dict and evaluation adds rle/boundary: give it
    # shallow copies so the caller's list (and the next IoU type) stays untouched
    coco_dt = coco_gt.loadRes([dict(r) for r in results])
    for ann in coco_gt.anns.values():  # bands cached by an earlier run may have another width
        ann.pop("boundary", None)
    evaluator = OfficialBandCOCOeval(
        coco_gt,
        coco_dt,
        iouType=iou_type,
        print_function=printer,
        lvis_style=lvis_style,
        boundary_dilation_ratio=dilation_ratio or STANDARD_BOUNDARY_DILATION,
    )
    if image_ids is not None:
        evaluator.params.imgIds = sorted({int(i) for i in image_ids})
    if lvis_style:
        # LVIS caps detections per image (done above), not per (image, category) pair at 100
        evaluator.params.maxDets = [LVIS_MAX_DETECTIONS_PER_IMAGE]
    if verbose:
        print(f"--- {iou_type}" + (f" (dilation {dilation_ratio:g})" if dilation_ratio else ""))
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    stats = evaluator.stats_as_dict
    return {
        ours: (float("nan") if stats[theirs] < 0 else float(stats[theirs]))
        for theirs, ours in _STAT_NAMES.items()
        if theirs in stats
    }


def boundary_band_width(height: int, width: int, dilation_ratio: float) -> int:
    """Pixels of the Boundary IoU band of an image of ``height`` x ``width``, as the official
    boundary-iou-api computes it: Python's ``round`` of ratio x diagonal (half to even), at least 1.

    E.g. 8 at 225 x 300 (0.02 x 375 = 7.5) but 2 at 75 x 100 (0.02 x 125 = 2.5).
    """
    return max(1, int(round(dilation_ratio * math.sqrt(height * height + width * width))))


class OfficialBandCOCOeval(COCOeval_faster):
    """``COCOeval_faster`` whose Boundary IoU bands have the official width on every image.

    faster-coco-eval (1.8.0) rounds ratio x diagonal half down, the official code half to even,
    so where the product is exactly k + 1/2 with k odd (225 x 300, 105 x 140, 45 x 60 at 0.02)
    its band is a pixel narrower: 7 px against 8 at 225 x 300, and AP50 points apart on such a
    set. Its dilation ratio is one number for all images, so no ratio can fix a set that has
    both kinds of half. After it has made its bands, those of the images whose product is
    within 1e-6 of a half are made again with a ratio of exactly the official width over the
    diagonal; elsewhere every rounding rule gives the same width, and its bands stand.
    """

    def _prepare(self):
        super()._prepare()
        if self.params.iouType != "boundary":
            return
        ratio = self.boundary_dilation_ratio
        for coco in (self.cocoGt, self.cocoDt):
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=self.params.imgIds)):
                if "boundary" not in ann:  # not taking part (e.g. dropped by LVIS rules)
                    continue
                height, width = ann["rle"]["size"]
                diagonal = math.sqrt(height * height + width * width)
                product = ratio * diagonal
                if abs(product - math.floor(product) - 0.5) < 1e-6:
                    official = boundary_band_width(height, width, ratio)
                    ann["boundary"] = mask_api.rleToBoundary(ann["rle"], official / diagonal)


def keep_top_detections_per_image(results: list[dict], max_detections: int) -> list[dict]:
    """The ``max_detections`` highest-scoring results of each image (LVIS: 300)."""
    per_image: dict[int, list[dict]] = defaultdict(list)
    for result in results:
        per_image[result["image_id"]].append(result)
    if all(len(v) <= max_detections for v in per_image.values()):
        return results
    kept: list[dict] = []
    for image_results in per_image.values():
        image_results.sort(key=lambda r: r["score"], reverse=True)
        kept.extend(image_results[:max_detections])
    return kept


def drop_unverified_detections(coco_gt: COCO, results: list[dict]) -> list[dict]:
    """LVIS: keep detections of categories an image verifies, present or absent.

    A category is verified present in an image when it has an annotation there, and verified
    absent when it is in the image's ``neg_category_ids``; detections of any other category
    are neither right nor wrong and do not count.
    """
    verified: dict[int, set[int]] = defaultdict(set)
    for image_id, image in coco_gt.imgs.items():
        verified[image_id].update(image.get("neg_category_ids", []))
    for ann in coco_gt.anns.values():
        verified[ann["image_id"]].add(ann["category_id"])
    return [r for r in results if r["category_id"] in verified[r["image_id"]]]


def _check_lvis_ground_truth(coco_gt: COCO, gt_name: str) -> None:
    for category in coco_gt.dataset["categories"]:
        if category.get("frequency") not in ("r", "c", "f"):
            raise RefineMaskError(
                f"{gt_name}: category {category.get('id')} has no LVIS 'frequency' (r, c or f); "
                "LVIS-style scoring needs an LVIS annotation file"
            )


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array from a tensor (on any device) or anything ``np.asarray`` takes."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def describe_source(source: Any, default: str) -> str:
    """How error messages name ``source``: its path when it is one, else ``default``."""
    return str(source) if isinstance(source, (str, os.PathLike)) else default


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _silent(*args: Any, **kwargs: Any) -> None:
    pass
