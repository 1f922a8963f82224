"""Masks for another detector's boxes: ``refinemask predict --boxes BOXES.json``.

BOXES.json is a COCO results file with bbox entries (``image_id``, ``category_id``, ``bbox``
as XYWH pixels, ``score``), as any COCO-style detector writes. :func:`segment_box_results`
gives every entry a mask from :class:`~refinemask.engine.predict.Predictor` called with the
entries' boxes and writes the same entries, in the same order, with ``segmentation`` (RLE) added.

Which image file an entry belongs to:

* an entry with a ``file_name`` (as ``refinemask predict`` writes them) names its file;
* otherwise its ``image_id`` is looked up among the input images' ids: those of ``--annotations
  GT.json`` (matched by file name) when given; else the number in each file's name when every
  name is a number (COCO's ``000000000139.jpg`` is image 139); else 1..N in the input order,
  as ``refinemask predict`` numbers them.

Boxes for an image that is not among the inputs are a one-line error, as are entries without a
usable bbox. Input images that have no entry are skipped.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from refinemask.errors import RefineMaskError
from refinemask.jsonfile import read_json


def read_box_results(path: str | Path, need_categories: bool = True) -> list[dict]:
    """The entries of a COCO results file, each checked for a bbox (and a category id)."""
    entries = read_json(path, "boxes file")
    if isinstance(entries, dict) and "annotations" in entries:
        raise RefineMaskError(
            f"{path} is a COCO data set (images/annotations), not a results file: give a list of "
            "{image_id, category_id, bbox, score} entries"
        )
    if not isinstance(entries, list):
        raise RefineMaskError(f"{path}: a COCO results file is a JSON list of entries, got a {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise RefineMaskError(f"{path} entry {i}: not an object")
        if "image_id" not in entry and "file_name" not in entry:
            raise RefineMaskError(f"{path} entry {i}: no image_id (or file_name)")
        bbox = entry.get("bbox")
        if not (
            isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        ):
            raise RefineMaskError(f"{path} entry {i}: bbox must be [x, y, width, height], got {bbox!r}")
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise RefineMaskError(f"{path} entry {i}: bbox {bbox} has no area (COCO boxes are [x, y, width, height])")
        if need_categories and not isinstance(entry.get("category_id"), int):
            raise RefineMaskError(f"{path} entry {i}: no integer category_id (or pass --classify)")
    return entries


def _ids_of_files(files: Sequence[Path], annotations: str | Path | None) -> tuple[list[int], str]:
    """The image id of each input file, and how they were found (for error messages)."""
    from refinemask.data.image_files import image_ids

    if annotations is not None:
        return image_ids(files, annotations), f"ids from {annotations}"
    if all(path.stem.isdigit() for path in files):
        return [int(path.stem) for path in files], "ids from the numbers in the file names"
    return list(range(1, len(files) + 1)), "ids 1..N in the input order"


def group_by_image(
    entries: Sequence[dict], files: Sequence[Path], annotations: str | Path | None, source: str | Path
) -> tuple[list[list[int]], list[int]]:
    """Per input file the indices of its entries, and each file's image id.

    Raises a one-line error for entries of an image that is not among ``files``.
    """
    ids, how = _ids_of_files(files, annotations)
    by_id = {image_id: k for k, image_id in enumerate(ids)}
    by_name = {}
    for k, path in enumerate(files):
        by_name.setdefault(path.name, k)
    groups: list[list[int]] = [[] for _ in files]
    missing: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        if "file_name" in entry:
            k = by_name.get(Path(str(entry["file_name"])).name)
            key = f"file {entry['file_name']}"
        else:
            k = by_id.get(entry["image_id"]) if isinstance(entry["image_id"], int) else None
            key = f"image id {entry['image_id']!r}"
        if k is None:
            missing.setdefault(key, []).append(i)
        else:
            groups[k].append(i)
    if missing:
        key, indices = next(iter(missing.items()))
        shown = ", ".join(map(str, indices[:3])) + (", ..." if len(indices) > 3 else "")
        more = f" (and {len(missing) - 1} more images)" if len(missing) > 1 else ""
        raise RefineMaskError(
            f"{source}: {len(indices)} boxes (entries {shown}) are for {key}{more}, which is not among the "
            f"{len(files)} input images ({how}; pass --annotations GT.json to match ids by file name)"
        )
    return groups, ids


def segment_box_results(
    predictor,
    inputs: Sequence[str | Path],
    boxes_file: str | Path,
    out_dir: str | Path,
    annotations: str | Path | None = None,
    classify: bool = False,
    overlays: bool = True,
    progress: bool = True,
) -> Path:
    """Add a mask to every entry of ``boxes_file``; write ``out_dir/results.json`` (and overlays).

    Args:
        predictor: a :class:`~refinemask.engine.predict.Predictor`.
        inputs: image files and folders.
        classify: ignore the entries' ``category_id``; the model's box head classifies each
            box and its category replaces the entry's (the detector's is kept as
            ``detector_category_id``). Without it, every category id must be one of the model's.

    Returns:
        the results path. Entries keep their fields and order; ``segmentation`` is added.
    """
    from PIL import Image
    from tqdm import tqdm

    from refinemask.data.images import load_image
    from refinemask.data.image_files import collect_images
    from refinemask.overlay import draw_overlay, overlay_path
    from refinemask.evaluation import predictions_to_coco_results

    files = collect_images(inputs)
    entries = read_box_results(boxes_file, need_categories=not classify)
    groups, ids = group_by_image(entries, files, annotations, boxes_file)
    category_to_label = {int(c): int(label) for label, c in predictor.label_to_category.items()}
    if not classify:
        for i, entry in enumerate(entries):
            if entry["category_id"] not in category_to_label:
                raise RefineMaskError(
                    f"{boxes_file} entry {i}: category_id {entry['category_id']} is not a category of the model "
                    f"({len(category_to_label)} categories); pass --classify to let the model's box head choose"
                )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [dict(entry) for entry in entries]
    used_names: set[str] = set()
    work = [(path, image_id, group) for path, image_id, group in zip(files, ids, groups) if group]
    for path, image_id, group in tqdm(work, desc="masks for boxes", unit="image", disable=not progress):
        image = load_image(path, **predictor.scaling)
        boxes = torch.tensor([entries[i]["bbox"] for i in group], dtype=torch.float64)
        boxes[:, 2:] += boxes[:, :2]  # XYWH -> XYXY
        labels = None if classify else [category_to_label[entries[i]["category_id"]] for i in group]
        try:
            prediction = predictor(image, boxes=boxes.float(), labels=labels, masks="box")
        except RefineMaskError as err:
            raise RefineMaskError(f"{boxes_file}, image {path.name}: {err}") from None
        rows = predictions_to_coco_results([prediction], [image_id], predictor.label_to_category)
        for i, row in zip(group, rows):
            results[i]["segmentation"] = row["segmentation"]
            if classify:
                if "category_id" in results[i]:
                    results[i]["detector_category_id"] = results[i]["category_id"]
                results[i]["category_id"] = row["category_id"]
        if overlays:
            scores = [float(entries[i].get("score", 1.0)) for i in group]
            drawn = draw_overlay(image, {**prediction, "scores": torch.tensor(scores)}, predictor.category_names)
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(overlay_path(out_dir, path, used_names))
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(results))
    skipped = sum(1 for g in groups if not g)
    if progress:
        print(f"{len(entries)} boxes of {len(work)} images segmented" + (f"; {skipped} input images had no boxes" if skipped else ""))
    return results_path
