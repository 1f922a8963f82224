"""`refinemask check-data ANN.json --images DIR`: list every problem of a COCO-format dataset.

Exit status: 0 when nothing is wrong, 1 when problems were found (each printed on its own line
with its image / annotation / category id), 2 when the input cannot be checked at all (missing
file, invalid JSON, not a COCO document). LVIS v1 files (images with ``coco_url`` instead of
``file_name``) are understood too.

The checks are those a dataset runs when it loads (:mod:`refinemask.data.validation`), plus the
image files: each is decoded completely, in parallel (``--header-only`` reads headers only:
much faster, but does not notice a truncated file), and its size compared with the json's; the
result is cached as for training (:mod:`refinemask.data.scan`). A note line says when the
images of more than 8 bits use a small part of their range, and one when images are far larger
than the model's input (``--input-size``), pointing to training crops and tiled prediction. A
labelme, YOLO, VOC, CVAT or label-image export is named, with the ``refinemask import`` command
that converts it.
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from refinemask.data.images import DEFAULT_MAX_PIXELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ann_file", type=Path, metavar="ANN.json", help="COCO-format (or LVIS v1) annotation file")
    parser.add_argument(
        "--images", type=Path, metavar="DIR", default=None,
        help="directory the images' file_name entries are relative to; without it image files are not checked",
    )
    parser.add_argument(
        "--header-only", action="store_true",
        help="read only image headers (fast; truncated files go unnoticed)",
    )
    parser.add_argument(
        "--detections-per-img", type=int, default=100, metavar="N",
        help="say which images have more instances than a model keeping N detections finds "
        "(model.detections_per_img; default 100, the bundled configs')",
    )
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS:,})",
    )
    parser.add_argument(
        "--input-size", type=int, default=1333, metavar="PX",
        help="the long side the model resizes images to (model.max_size; default 1333), for the large-image note",
    )


def _looks_like_lvis(data: dict) -> bool:
    return any(isinstance(im, dict) and "file_name" not in im and "coco_url" in im for im in data["images"])


def _refuse_other_formats(path: Path) -> None:
    """One line naming the format and the import command when ``path`` is no COCO json."""
    from refinemask.errors import RefineMaskError

    if path.suffix.lower() == ".json" and path.is_file():
        # a COCO file can be large: look at the labelme shape only when it has no 'images'
        with path.open("rb") as handle:
            if b'"images"' in handle.read(1 << 20):
                return
    from refinemask.data.importers import detect_format

    detected = detect_format(path)
    if detected is not None:
        format, what = detected
        source = path.parent if format == "labelme" and path.is_file() else path
        raise RefineMaskError(
            f"{path} is {what}, not a COCO json; convert it first: "
            f"refinemask import {format} {source} OUT_DIR"
        )


def run(args: argparse.Namespace) -> int:
    from refinemask.data.scan import scan_image_files
    from refinemask.data.validation import dataset_notes, fill_image_sizes, iter_problems, large_image_note, load_annotation_json
    from refinemask.errors import RefineMaskError

    if args.images is not None and not args.images.is_dir():
        raise RefineMaskError(f"image directory not found: {args.images}")
    _refuse_other_formats(args.ann_file)
    data = load_annotation_json(args.ann_file)
    if _looks_like_lvis(data):
        # imported only for LVIS files: it brings torch, which the plain check does not need
        from refinemask.data.lvis import set_lvis_file_names

        set_lvis_file_names(data, args.images)

    filled = fill_image_sizes(data, args.images, args.max_pixels) if args.images is not None else 0
    problems = list(iter_problems(data))
    note = None
    if args.images is not None:
        scan = scan_image_files(data, args.images, args.ann_file, decode=not args.header_only, max_pixels=args.max_pixels)
        problems += scan.problems
        note = scan.range_note()

    for problem in problems:
        print(problem.message)
    if filled:
        print(f"note: {filled} images have no width/height in the json; read from their files (training does the same)")
    for line in dataset_notes(data, args.detections_per_img):
        print(f"note: {line}")
    if note:
        print(
            f"note: {note}; training and prediction stretch each such image (model.high_bit_scaling="
            "percentiles, the default); with model.high_bit_scaling=full the network would see them nearly black"
        )

    large = large_image_note(data["images"], args.input_size)
    if large:
        print(f"note: {large}")

    annotations = data.get("annotations", [])
    counts = (
        f"{len(data['images'])} images, {len(annotations)} annotations, "
        f"{len(data['categories'])} categories"
    )
    files = "image files checked" if args.images is not None else "image files not checked (no --images)"
    if not problems:
        print(f"{args.ann_file}: ok: {counts}; {files}")
        return 0
    kinds = Counter(p.kind for p in problems)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    print(f"{args.ann_file}: {len(problems)} problems ({summary}) in {counts}; {files}")
    return 1
