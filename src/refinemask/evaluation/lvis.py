"""LVIS-style scoring: LVIS AP (with APr/APc/APf) and AP* (COCO predictions on LVIS masks).

LVIS is labelled *federatedly*: each image lists the categories verified present (its
annotations), verified absent (``neg_category_ids``) and present-but-not-all-instances-labelled
(``not_exhaustive_category_ids``). Scoring follows the LVIS API (``lvis.LVISEval``): a detection
of a category the image says nothing about is dropped, an unmatched detection of a
not-exhaustive category is ignored rather than counted as a false positive, and each image keeps
its 300 highest-scoring detections. APr/APc/APf average the categories whose ``frequency`` is
"r" (rare), "c" (common) or "f" (frequent).

We run faster-coco-eval with ``lvis_style=True`` (and 300 detections per image) rather than
``lvis.LVISEval``: it adds Boundary AP, and lvis 0.5.3 (the last PyPI release) no longer runs on
NumPy >= 1.24 without patching (it uses ``np.float``). On segm and bbox the two agree on every
metric, AP to APf, to 1e-9 on the constructed cases of tests/evaluation/test_lvis.py; no
difference was found.

All metrics are fractions in [0, 1], NaN where undefined (e.g. APr with no rare category).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from faster_coco_eval import COCO

from refinemask.errors import RefineMaskError
from refinemask.evaluation.coco import (
    STANDARD_BOUNDARY_DILATION,
    describe_source,
    load_coco_ground_truth,
    load_coco_results,
    score_checked_results,
)


def evaluate_lvis(
    gt: str | os.PathLike | dict | COCO,
    results: str | os.PathLike | Sequence[dict],
    iou_types: Sequence[str] = ("segm", "bbox", "boundary"),
    boundary_dilation_ratios: Sequence[float] = (STANDARD_BOUNDARY_DILATION,),
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """Score results on an LVIS annotation file, LVIS-style.

    Args:
        gt: LVIS annotation json path, dict or faster-coco-eval COCO. Categories need
            ``frequency``; images may carry ``neg_category_ids`` and
            ``not_exhaustive_category_ids`` (missing lists count as empty).
        results: COCO-format results with LVIS category ids (list or json path).
        iou_types, boundary_dilation_ratios, image_ids, verbose: as in
            :func:`refinemask.evaluation.coco.evaluate_coco`.

    Returns:
        ``{key: {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}}`` in [0, 1].
    """
    return score_checked_results(
        load_coco_ground_truth(gt),
        load_coco_results(results),
        iou_types=iou_types,
        boundary_dilation_ratios=boundary_dilation_ratios,
        lvis_style=True,
        image_ids=image_ids,
        verbose=verbose,
        results_name=describe_source(results, "results"),
        gt_name=describe_source(gt, "the LVIS ground truth"),
    )


def evaluate_ap_star(
    cocofied_lvis_gt: str | os.PathLike | dict | COCO,
    coco_results: str | os.PathLike | Sequence[dict],
    iou_types: Sequence[str] = ("segm",),
    boundary_dilation_ratios: Sequence[float] = (STANDARD_BOUNDARY_DILATION,),
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """AP*: COCO predictions scored against LVIS's finer masks of the same images.

    The RefineMask paper's headline number (also PointRend's): COCO val2017 predictions scored
    with the LVIS v0.5 val annotations restricted to the 80 COCO classes ("cocofied"), LVIS-style
    because those labels are not exhaustive. The official code does it in
    ``mmdet/datasets/coco.py::eval_cocofied_lvis_result`` with ``lvis.LVISEval``.

    Args:
        cocofied_lvis_gt: ``lvis_v0.5_val_cocofied.json`` (made by detectron2's
            ``datasets/prepare_cocofied_lvis.py`` or RefineMask's ``tools/cocofied_lvis.py``):
            an LVIS-format file (images with ``neg_category_ids`` and
            ``not_exhaustive_category_ids``, categories with ``frequency``) whose category ids
            have already been replaced by the **COCO** category ids (1-90), and which keeps only
            LVIS categories that correspond to a COCO class.
        coco_results: the same COCO results (COCO category ids, COCO image ids) one scores
            against ``instances_val2017.json``. Detections of COCO classes absent from the
            cocofied file, and detections on images it does not cover, are left out, as
            LVISEval does for categories.
        iou_types: "segm" by default (AP* is a mask metric); "boundary" and "bbox" also work.
        boundary_dilation_ratios, image_ids, verbose: as in
            :func:`refinemask.evaluation.coco.evaluate_coco`.

    Returns:
        ``{"segm": {"AP", ..., "APr", "APc", "APf"}}`` in [0, 1]; "AP" is AP*.
    """
    coco_gt = load_coco_ground_truth(cocofied_lvis_gt)
    results = load_coco_results(coco_results)
    gt_name = describe_source(cocofied_lvis_gt, "the cocofied LVIS ground truth")
    results_name = describe_source(coco_results, "results")
    if results:
        gt_images = set(coco_gt.getImgIds())
        gt_categories = set(coco_gt.getCatIds())
        covered = [r for r in results if r["image_id"] in gt_images]
        if not covered:
            raise RefineMaskError(
                f"{results_name}: no result is on an image of {gt_name}; AP* needs COCO val2017 "
                "predictions and the cocofied LVIS v0.5 val file"
            )
        results = [r for r in covered if r["category_id"] in gt_categories]
        if covered and not results:
            raise RefineMaskError(
                f"{results_name}: no result has a category id of {gt_name}; AP* expects COCO "
                "category ids in both (a cocofied file, not the raw LVIS one)"
            )
    return score_checked_results(
        coco_gt,
        results,
        iou_types=iou_types,
        boundary_dilation_ratios=boundary_dilation_ratios,
        lvis_style=True,
        image_ids=image_ids,
        verbose=verbose,
        results_name=results_name,
        gt_name=gt_name,
    )
