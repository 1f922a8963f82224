"""Cityscapes instance-segmentation AP, computed by the official cityscapesScripts.

Cityscapes' own AP differs from COCO's: overlaps 0.50:0.95 must be *strictly* exceeded, ground
truth smaller than 100 pixels and "group" regions (instance id < 1000) are ignored, a
prediction that is unmatched but lies mostly on void or ignored ground truth is not a false
positive, and AP is the area under the raw precision-recall curve (no 101-point
interpolation). It reports AP and AP50 only (no APs/APm/APl; the RefineMask README's Cityscapes
APs/APm/APl come from mmdetection's COCO-style evaluation of a Cityscapes json, which
:func:`refinemask.evaluation.coco.evaluate_coco` gives). This module drives
``cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling`` on the files it expects:

* ground truth: ``*_gtFine_instanceIds.png`` (16-bit; pixel value ``label_id * 1000 + k`` for
  instance k, or the plain label id for stuff, void and groups), read from the dataset;
* predictions: per image a text file of ``mask.png label_id score`` lines plus one binary PNG
  per detection, written here into a temporary directory.

Label ids are Cityscapes' ``id`` (person 24, rider 25, car 26, truck 27, bus 28, train 31,
motorcycle 32, bicycle 33), not train ids and not contiguous labels.

Shapes: N detections of one image; H x W the image size.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from refinemask.errors import RefineMaskError
from refinemask.evaluation.coco import (
    binary_masks,
    load_coco_ground_truth,
    load_coco_results,
    to_numpy,
)

GT_SUFFIX = "_gtFine_instanceIds.png"
_MISSING_SCRIPTS = "Cityscapes AP needs cityscapesScripts: pip install 'refinemask[cityscapes]'"


def evaluate_cityscapes(
    ground_truth: str | os.PathLike | Sequence[str | os.PathLike],
    predictions: Mapping[str, Mapping[str, Any]],
    label_to_cityscapes_id: Mapping[int, int] | None = None,
    mask_threshold: float = 0.5,
    work_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Official Cityscapes instance AP (cityscapesScripts) of per-image predictions.

    Args:
        ground_truth: a directory searched recursively for ``*_gtFine_instanceIds.png`` (e.g.
            ``gtFine/val``), or a list of such files. Every listed image is scored; one
            without predictions counts all its instances as missed.
        predictions: image name -> torchvision-style output dict with ``masks`` ((N, 1, H, W)
            probabilities or (N, H, W) binary, at the ground truth's size), ``labels`` (N,) and
            ``scores`` (N,). The name is any Cityscapes file name of the image or its stem
            ``<city>_<sequence>_<frame>`` (e.g. ``frankfurt_000000_000294``).
        label_to_cityscapes_id: maps ``labels`` to Cityscapes label ids (see
            :func:`cityscapes_label_ids`); by default labels already are Cityscapes ids.
        mask_threshold: probability masks are binarised with ``>= mask_threshold``.
        work_dir: where to write the prediction files (kept); a temporary directory by default.

    Returns:
        ``{"AP": float, "AP50": float, "classes": {name: {"AP": float, "AP50": float}}}`` in
        [0, 1]; a class with neither ground truth nor predictions is NaN, and the overall
        figures average the classes that are not NaN, as cityscapesScripts does.
    """
    gt_files = _ground_truth_files(ground_truth)
    gt_by_stem = {}
    for path in gt_files:
        stem = cityscapes_stem(path)
        if stem in gt_by_stem:
            raise RefineMaskError(
                f"two ground-truth files for image {stem}: {gt_by_stem[stem]}, {path}"
            )
        gt_by_stem[stem] = path
    by_stem: dict[str, Mapping[str, Any]] = {}
    for name, output in predictions.items():
        stem = cityscapes_stem(name)
        if stem not in gt_by_stem:
            raise RefineMaskError(
                f"predictions for image {name!r} have no ground truth {stem}{GT_SUFFIX} among the "
                f"{len(gt_by_stem)} ground-truth files"
            )
        by_stem[stem] = output

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="refinemask-cs-")))
        else:
            root = Path(work_dir)
            root.mkdir(parents=True, exist_ok=True)
        prediction_files = [
            _write_image_predictions(
                root,
                stem,
                gt_by_stem[stem],
                by_stem.get(stem),
                label_to_cityscapes_id,
                mask_threshold,
            )
            for stem in gt_by_stem
        ]
        averages = _run_cityscapes_scripts(
            [str(p) for p in prediction_files], [str(p) for p in gt_by_stem.values()], root
        )
    return {
        "AP": float(averages["allAp"]),
        "AP50": float(averages["allAp50%"]),
        "classes": {
            name: {"AP": float(values["ap"]), "AP50": float(values["ap50%"])}
            for name, values in averages["classes"].items()
        },
    }


def cityscapes_label_ids(category_names: Sequence[str]) -> dict[int, int]:
    """Contiguous label (1 + index into ``category_names``) -> Cityscapes label id, by name."""
    try:
        from cityscapesscripts.helpers.labels import name2label
    except ImportError:
        raise RefineMaskError(_MISSING_SCRIPTS) from None

    mapping = {}
    for index, name in enumerate(category_names):
        if name not in name2label or not name2label[name].hasInstances:
            raise RefineMaskError(
                f"category {name!r} is not a Cityscapes instance class (person, rider, car, "
                "truck, bus, train, motorcycle, bicycle)"
            )
        mapping[index + 1] = name2label[name].id
    return mapping


def cityscapes_predictions_from_coco(
    results: str | os.PathLike | Sequence[dict],
    coco_gt: str | os.PathLike | dict,
) -> dict[str, dict[str, np.ndarray]]:
    """COCO results on a Cityscapes COCO json -> the ``predictions`` of :func:`evaluate_cityscapes`.

    The json's images give each image's file name (hence its Cityscapes stem) and its
    categories' names give the Cityscapes label ids, so either category-id convention works
    (mmdetection's converter uses the Cityscapes ids, others 1..8).
    """
    from faster_coco_eval.core import mask as mask_api

    gt = load_coco_ground_truth(coco_gt)
    result_list = load_coco_results(results)
    categories = gt.dataset["categories"]
    label_ids = cityscapes_label_ids([c["name"] for c in categories])  # 1 + index -> Cityscapes id
    to_cityscapes = {c["id"]: label_ids[i + 1] for i, c in enumerate(categories)}
    per_image: dict[int, list[dict]] = defaultdict(list)
    for index, result in enumerate(result_list):
        if result["image_id"] not in gt.imgs:
            raise RefineMaskError(
                f"results entry {index}: image id {result['image_id']} is not in the json"
            )
        if "segmentation" not in result:
            raise RefineMaskError(
                f"results entry {index} has no 'segmentation'; Cityscapes AP scores masks"
            )
        if result["category_id"] not in to_cityscapes:
            raise RefineMaskError(
                f"results entry {index}: category id {result['category_id']} is not in the json"
            )
        per_image[result["image_id"]].append(result)

    predictions = {}
    for image_id, image_results in per_image.items():
        image = gt.imgs[image_id]
        if "file_name" not in image:
            raise RefineMaskError(
                f"image {image_id} has no 'file_name' to find its Cityscapes ground truth"
            )
        rles = [r["segmentation"] for r in image_results]
        masks = mask_api.decode(rles).transpose(2, 0, 1)  # (H, W, N) -> (N, H, W)
        predictions[image["file_name"]] = {
            "masks": masks,
            "labels": np.array([to_cityscapes[r["category_id"]] for r in image_results]),
            "scores": np.array([r["score"] for r in image_results], dtype=np.float64),
        }
    return predictions


def cityscapes_stem(name: str | os.PathLike) -> str:
    """``.../frankfurt_000000_000294_leftImg8bit.png`` -> ``frankfurt_000000_000294``."""
    parts = Path(name).name.split("_")
    if len(parts) < 3:
        raise RefineMaskError(
            f"{name!s} is not a Cityscapes image name (<city>_<sequence>_<frame>[_<type>.png])"
        )
    return "_".join(parts[:3]).split(".")[0]


def _ground_truth_files(
    ground_truth: str | os.PathLike | Sequence[str | os.PathLike],
) -> list[Path]:
    if isinstance(ground_truth, (str, os.PathLike)):
        root = Path(ground_truth)
        if not root.is_dir():
            raise RefineMaskError(f"Cityscapes ground-truth directory {root} does not exist")
        files = sorted(root.rglob(f"*{GT_SUFFIX}"))
        if not files:
            raise RefineMaskError(
                f"no *{GT_SUFFIX} under {root}; pass the gtFine/<split> directory of Cityscapes"
            )
        return files
    files = [Path(p) for p in ground_truth]
    if not files:
        raise RefineMaskError("no Cityscapes ground-truth files given")
    for path in files:
        if not path.is_file():
            raise RefineMaskError(f"Cityscapes ground-truth file {path} does not exist")
    return files


def _write_image_predictions(
    root: Path,
    stem: str,
    gt_file: Path,
    output: Mapping[str, Any] | None,
    label_to_cityscapes_id: Mapping[int, int] | None,
    mask_threshold: float,
) -> Path:
    """Write ``<stem>_pred.txt`` and one PNG per detection; returns the text file."""
    text_file = root / f"{stem}_pred.txt"
    lines = []
    if output is not None and output.get("masks") is not None:
        masks = binary_masks(output["masks"], mask_threshold)
        labels = to_numpy(output["labels"]).reshape(-1).tolist()
        scores = to_numpy(output["scores"]).reshape(-1).tolist()
        if not len(masks) == len(labels) == len(scores):
            raise ValueError(
                f"{stem}: {len(masks)} masks, {len(labels)} labels, {len(scores)} scores"
            )
        with Image.open(gt_file) as gt_image:
            gt_size = gt_image.size  # (W, H)
        if len(masks) and (masks.shape[2], masks.shape[1]) != gt_size:
            raise RefineMaskError(
                f"{stem}: predicted masks are {masks.shape[2]}x{masks.shape[1]} but the ground "
                f"truth {gt_file.name} is {gt_size[0]}x{gt_size[1]}; paste masks at full resolution"
            )
        for k, (mask, label, score) in enumerate(zip(masks, labels, scores)):
            if label_to_cityscapes_id is not None:
                if label not in label_to_cityscapes_id:
                    raise RefineMaskError(f"{stem}: label {label} is not in label_to_cityscapes_id")
                label = label_to_cityscapes_id[label]
            mask_name = f"{stem}_{k}.png"
            # 1-bit PNGs with light compression: these files exist only to be read back once
            Image.fromarray(mask.astype(bool)).save(root / mask_name, compress_level=1)
            lines.append(f"{mask_name} {int(label)} {float(score):.6f}\n")
    text_file.write_text("".join(lines))
    return text_file


class _NumpyWithIn1d:
    """numpy plus ``in1d``, which NumPy 2.4 removed and cityscapesScripts 2.3 still calls."""

    in1d = staticmethod(np.isin)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@contextlib.contextmanager
def _numpy_compat(module: Any) -> Iterator[None]:
    if hasattr(np, "in1d"):
        yield
        return
    saved = module.np
    module.np = _NumpyWithIn1d()
    try:
        yield
    finally:
        module.np = saved


def _run_cityscapes_scripts(prediction_files: list[str], gt_files: list[str], root: Path) -> dict:
    """cityscapesScripts' ``evaluateImgLists`` minus its side effects.

    We call its steps ourselves because the whole function writes ``matches.json`` into the
    working directory and caches the ground truth in ``gtInstances.json`` next to the
    installed package (stale as soon as another ground truth is scored). Its functions
    print and ``sys.exit`` on bad input: output is captured and an exit becomes our error.
    """
    try:
        from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as cs_eval
        from cityscapesscripts.evaluation.instances2dict import instances2dict
    except ImportError:
        raise RefineMaskError(_MISSING_SCRIPTS) from None

    args = cs_eval.CArgs()  # our own settings object, not the module-wide one
    args.predictionPath = os.path.abspath(root)
    args.predictionWalk = None
    args.overlaps = np.arange(0.5, 1.0, 0.05)
    args.minRegionSizes = np.array([100, 1000, 1000])
    args.distanceThs = np.array([float("inf"), 100, 50])
    args.distanceConfs = np.array([-float("inf"), 0.5, 0.5])
    args.distanceAvailable = False
    args.JSONOutput = False
    args.quiet = True
    args.csv = False
    args.colorized = False
    args.instLabels = []

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), _numpy_compat(cs_eval):
            cs_eval.setInstanceLabels(args)
            gt_instances = instances2dict(gt_files, False)
            matches = cs_eval.matchGtWithPreds(prediction_files, gt_files, gt_instances, args)
            ap_scores = cs_eval.evaluateMatches(matches, args)
            return cs_eval.computeAverages(ap_scores, args)
    except SystemExit:
        message = captured.getvalue().strip().splitlines()
        raise RefineMaskError(
            "cityscapesScripts stopped: " + (message[-1] if message else "no message")
        ) from None
