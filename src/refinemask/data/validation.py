"""Checks of COCO-format annotation files, shared by `refinemask check-data` and the datasets.

A COCO file that is not even the right shape (missing file, invalid JSON, no ``images`` list, no
categories) is *unusable* and raises :class:`~refinemask.errors.RefineMaskError` at once.
Everything else is a :class:`Problem` attached to one image, annotation or category entry:

==========================  ==================================================================
kind                        meaning
==========================  ==================================================================
``bad_category``            a category entry without an integer id
``duplicate_category``      a category id seen before (the first entry is kept)
``bad_image``               an image entry without an integer id, a file name or a positive size
``duplicate_image``         an image id seen before (the first entry is kept)
``bad_annotation``          an annotation entry without an integer id or with an invalid iscrowd
``duplicate_annotation``    an annotation id seen before (the first entry is kept)
``unknown_image``           an annotation whose image_id names no (valid) image
``unknown_category``        an annotation whose category_id names no (valid) category
``bad_box``                 a bbox that is not 4 finite numbers, has zero area, or lies outside
                            the image by more than ``BOX_TOLERANCE`` pixels
``bad_polygon``             a polygon with fewer than 3 points, an odd number of coordinates,
                            values that are not finite numbers, or points far outside the image
                            (beyond one image size: wrong units)
``bad_rle``                 an RLE whose size is not the image's, or whose counts are malformed
``bad_segmentation``        an unrecognised segmentation (a missing or empty one is a box-only
                            annotation, see :func:`is_box_only`, except on a crowd region)
``missing_file``            (file checks only) the image file does not exist
``unreadable_file``         (file checks only) the image file cannot be decoded
``image_size``              (file checks only) the file's size differs from the json's width/height
==========================  ==================================================================

:func:`iter_problems` yields problems lazily (so ``strict`` loading can stop at the first one);
:func:`remove_problems` returns the json without the entries they concern, which is
what a dataset trains and evaluates on.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refinemask.data.images import DEFAULT_MAX_PIXELS, integer_white_point, open_image, read_image_size
from refinemask.errors import RefineMaskError
from refinemask.jsonfile import read_json

# An ``area`` this far (relative) from the segmentation's pixel area is wrong (bbox areas, other
# units); closer ones are polygon (shoelace) areas against pixel areas, and are kept.
AREA_TOLERANCE = 0.25

# Boxes may overshoot the image by rounding (COCO has boxes ending at x + w = width + 0.5);
# beyond this many pixels the box is reported.
BOX_TOLERANCE = 1.0


@dataclass(frozen=True)
class Problem:
    """One problem of an annotation file.

    ``message`` is one line naming the entry (image id, annotation id, category id) and what is
    wrong. The ``*_index`` fields are positions in the json lists: ids can be duplicated or
    missing, positions cannot. Exactly one of them is set; that entry is what gets skipped.
    """

    kind: str
    message: str
    image_index: int | None = None
    annotation_index: int | None = None
    category_index: int | None = None

    def __str__(self) -> str:
        return self.message


def load_annotation_json(path: str | Path) -> dict[str, Any]:
    """Read a COCO-format json file and check it has the shape of one.

    Raises :class:`RefineMaskError` (one line) for a missing or unreadable file, invalid JSON, or a
    document without ``images`` / ``categories`` lists. A missing ``annotations`` list is taken as
    empty (test-set files have none).
    """
    data = read_json(path, "annotation file")
    check_structure(data, str(path))
    return data


def check_structure(data: Any, source: str) -> None:
    """Raise :class:`RefineMaskError` unless ``data`` has the top-level shape of a COCO file."""
    if not isinstance(data, dict):
        raise RefineMaskError(
            f"{source}: expected a JSON object with 'images', 'annotations' and 'categories', "
            f"got a {type(data).__name__}"
        )
    for key in ("images", "categories"):
        if key not in data:
            raise RefineMaskError(f"{source}: no '{key}' list; is this a COCO-format annotation file?")
        if not isinstance(data[key], list):
            raise RefineMaskError(f"{source}: '{key}' must be a list, got a {type(data[key]).__name__}")
    if not isinstance(data.get("annotations", []), list):
        raise RefineMaskError(
            f"{source}: 'annotations' must be a list, got a {type(data['annotations']).__name__}"
        )
    if not data["categories"]:
        raise RefineMaskError(f"{source}: the 'categories' list is empty; add the object categories")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_NUMBER_TYPES = frozenset({int, float})


def _all_finite_numbers(values: list[Any]) -> bool:
    """Whether every value is a finite int or float (not bool); fast for long polygons.

    The type test runs at C speed; a finite sum implies finite terms (a nan or an infinity
    makes the sum nan or infinite).
    """
    return set(map(type, values)) <= _NUMBER_TYPES and math.isfinite(sum(values))


def _image_label(image: dict[str, Any]) -> str:
    name = image.get("file_name")
    return f"image {image.get('id')!r} ({name})" if isinstance(name, str) else f"image {image.get('id')!r}"


def _annotation_label(annotation: dict[str, Any]) -> str:
    return f"annotation {annotation.get('id')!r} (image {annotation.get('image_id')!r})"


def _category_problems(categories: list[Any]) -> tuple[list[Problem], set[int]]:
    problems: list[Problem] = []
    valid: set[int] = set()
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            shown = category.get("id") if isinstance(category, dict) else category
            problems.append(Problem(
                "bad_category",
                f"category entry {index} has no integer id (got {shown!r}); give every category an integer id",
                category_index=index,
            ))
        elif category["id"] in valid:
            problems.append(Problem(
                "duplicate_category",
                f"category {category['id']} appears more than once (entry {index}); ids must be unique",
                category_index=index,
            ))
        else:
            valid.add(category["id"])
    return problems, valid


def _image_entry_problem(index: int, image: Any) -> str | None:
    if not isinstance(image, dict):
        return f"image entry {index} is not a JSON object"
    if not _is_int(image.get("id")):
        return f"image entry {index} has no integer id (got {image.get('id')!r})"
    name = image.get("file_name")
    if not isinstance(name, str) or not name:
        return f"image {image['id']} has no file_name"
    for key in ("width", "height"):
        value = image.get(key)
        if value is None:
            return (
                f"{_image_label(image)} has no {key}; give the image folder (check-data --images DIR) "
                "and it is read from the file"
            )
        if not _is_int(value) or value <= 0:
            return f"{_image_label(image)} has no positive integer {key} (got {value!r})"
    return None


def _box_problem(bbox: Any, width: int, height: int) -> str | None:
    if not isinstance(bbox, list) or len(bbox) != 4 or not _all_finite_numbers(bbox):
        return f"bbox {bbox!r} is not 4 finite numbers [x, y, width, height]"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {list(bbox)} has zero area (width and height must be > 0)"
    t = BOX_TOLERANCE
    outside = x < -t or y < -t or x + w > width + t or y + h > height + t
    # a box within the tolerance can still miss the image entirely (x = -0.9, w = 0.5)
    misses = min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0)
    if outside or misses:
        return f"bbox {list(bbox)} lies outside the {width}x{height} image"
    return None


def _segmentation_problem(segmentation: Any, width: int, height: int) -> tuple[str, str] | None:
    """(kind, text) of what is wrong with a segmentation, or None."""
    if isinstance(segmentation, list):
        if not segmentation:
            return "bad_segmentation", "segmentation is an empty list; give polygons or an RLE"
        for part, polygon in enumerate(segmentation):
            if not isinstance(polygon, list) or not _all_finite_numbers(polygon):
                return "bad_polygon", f"polygon {part} is not a flat list of finite numbers [x0, y0, x1, y1, ...]"
            if len(polygon) % 2:
                return "bad_polygon", f"polygon {part} has an odd number of coordinates ({len(polygon)})"
            if len(polygon) < 6:
                return "bad_polygon", f"polygon {part} has {len(polygon) // 2} points; a polygon needs at least 3"
            # Points a little outside the image are clipped by rasterisation and fine; far
            # outside means wrong units, and pycocotools would allocate memory in proportion.
            xs, ys = polygon[0::2], polygon[1::2]
            if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
                return "bad_polygon", (
                    f"polygon {part} reaches far outside the {width}x{height} image "
                    f"(x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g}); coordinates must be pixels"
                )
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) for v in size):
            return "bad_rle", f"RLE size {size!r} is not [height, width]"
        if list(size) != [height, width]:
            return "bad_rle", f"RLE size {list(size)} (height, width) does not match the {width}x{height} image"
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts):
                return "bad_rle", "uncompressed RLE counts must be non-negative integers"
            if sum(counts) != height * width:
                return "bad_rle", (
                    f"uncompressed RLE counts cover {sum(counts)} pixels, not height*width = {height * width}"
                )
            return None
        if isinstance(counts, str):
            total = _compressed_rle_total(counts)
            if total is None:
                return "bad_rle", "compressed RLE counts string is malformed"
            if total != height * width:
                return "bad_rle", f"compressed RLE counts cover {total} pixels, not height*width = {height * width}"
            return None
        return "bad_rle", "RLE counts must be a list of integers or a compressed (COCO) string"
    return "bad_segmentation", (
        "segmentation is missing or not polygons / RLE" if segmentation is None
        else f"segmentation of type {type(segmentation).__name__} is neither polygons (a list) nor RLE (a dict)"
    )


def _compressed_rle_total(counts: str) -> int | None:
    """Number of pixels a COCO compressed RLE string covers, or None if it is malformed.

    pycocotools decodes a malformed string without complaint (reading past its buffer), so it is
    checked here first. The format: each run length is written as the difference to the run two
    before it (from the third run on), in little-endian groups of 5 bits, one character per group
    (value + 48); bit 0x20 of a character means "more groups follow", and bit 0x10 of the last
    group is the sign.
    """
    runs: list[int] = []
    position, length = 0, len(counts)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                return None  # the string ends inside a number
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value -= 1 << shift  # sign-extend
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
    return sum(runs)


def iter_problems(data: dict[str, Any]) -> Iterator[Problem]:
    """Yield every problem of a COCO dict whose structure passed :func:`check_structure`.

    Image files are not looked at (see :func:`check_image_files`). Order: categories, images,
    then annotations in file order.
    """
    category_problems, category_ids = _category_problems(data["categories"])
    yield from category_problems

    images: dict[int, dict[str, Any]] = {}
    broken_image_ids: set[int] = set()
    for index, image in enumerate(data["images"]):
        text = _image_entry_problem(index, image)
        if text is not None:
            yield Problem("bad_image", f"{text}; fix or remove the entry", image_index=index)
            if isinstance(image, dict) and _is_int(image.get("id")):
                broken_image_ids.add(image["id"])
        elif image["id"] in images:
            yield Problem(
                "duplicate_image",
                f"{_image_label(image)}: image id {image['id']} appears more than once (entry {index}); "
                "ids must be unique",
                image_index=index,
            )
        else:
            images[image["id"]] = image

    annotation_ids: set[int] = set()
    for index, annotation in enumerate(data.get("annotations", [])):
        if not isinstance(annotation, dict):
            yield Problem("bad_annotation", f"annotation entry {index} is not a JSON object", annotation_index=index)
            continue

        def problem(kind: str, text: str, annotation: dict = annotation, index: int = index) -> Problem:
            return Problem(kind, f"{_annotation_label(annotation)}: {text}", annotation_index=index)

        ann_id = annotation.get("id")
        if not _is_int(ann_id):
            yield problem("bad_annotation", f"entry {index} has no integer id (got {ann_id!r})")
        elif ann_id in annotation_ids:
            yield problem(
                "duplicate_annotation",
                f"annotation id {ann_id} appears more than once (entry {index}); ids must be unique",
            )
        else:
            annotation_ids.add(ann_id)
        if annotation.get("iscrowd", 0) not in (0, 1) or isinstance(annotation.get("iscrowd"), bool):
            yield problem("bad_annotation", f"iscrowd must be 0 or 1, got {annotation.get('iscrowd')!r}")
        if not _is_int(annotation.get("category_id")) or annotation["category_id"] not in category_ids:
            yield problem("unknown_category", f"unknown category id {annotation.get('category_id')!r}")
        image = images.get(annotation.get("image_id")) if _is_int(annotation.get("image_id")) else None
        if image is None:
            if _is_int(annotation.get("image_id")) and annotation["image_id"] in broken_image_ids:
                text = f"its image entry {annotation['image_id']} is broken (see that image's problem)"
            else:
                text = f"image id {annotation.get('image_id')!r} is not in 'images'"
            yield problem("unknown_image", text)
            continue  # the box and segmentation checks need the image size
        width, height = image["width"], image["height"]
        box_text = _box_problem(annotation.get("bbox"), width, height)
        if box_text is not None:
            yield problem("bad_box", box_text)
        if is_box_only(annotation):
            if annotation.get("iscrowd", 0) == 1:
                yield problem("bad_segmentation", "a crowd region needs a segmentation (polygons or RLE), not a box only")
            continue  # a box without a mask: a box target, ignored for masks (see is_box_only)
        seg = _segmentation_problem(annotation.get("segmentation"), width, height)
        if seg is not None:
            yield problem(*seg)


# (lowest value, highest value, top of the pixel type's range) of an image of more than 8 bits
ValueRange = tuple[int, int, int]


def check_image_file(
    index: int,
    image: dict[str, Any],
    image_dir: str | Path,
    decode: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[Problem | None, ValueRange | None]:
    """(problem or None, value range of a >8-bit image or None) of the file of entry ``index``.

    With ``decode=True`` the file is decoded completely (finds truncated files) and the value
    range of a 16-bit or 32-bit integer image is measured; otherwise only its header is read.
    """
    path = Path(image_dir) / image["file_name"]
    where = _image_label(image)
    if not path.is_file():
        return Problem("missing_file", f"{where}: file not found: {path}{_doubled_prefix_hint(image_dir, image['file_name'])}",
                       image_index=index), None
    value_range = None
    try:
        if decode:
            with open_image(path, max_pixels) as opened:
                height, width = opened.height, opened.width
                value_range = high_bit_range(opened)
        else:
            height, width = read_image_size(path, max_pixels)
    except RefineMaskError as err:
        return Problem("unreadable_file", f"{where}: {err}", image_index=index), None
    if (height, width) != (image["height"], image["width"]):
        return Problem(
            "image_size",
            f"{where}: the file is {width}x{height} (after EXIF orientation) but the json says "
            f"{image['width']}x{image['height']}; fix width/height or the file",
            image_index=index,
        ), value_range
    return None, value_range


def _doubled_prefix_hint(image_dir: str | Path, file_name: str) -> str:
    """A hint when the file names already start with the image folder's name (images/images/...)."""
    image_dir = Path(image_dir)
    first = Path(file_name).parts[0] if Path(file_name).parts else ""
    if first and first == image_dir.name and (image_dir.parent / file_name).is_file():
        return (
            f"; the file names already start with {first}/, so the image folder is {image_dir.parent}, "
            f"not {image_dir}"
        )
    return ""


def check_image_files(
    data: dict[str, Any],
    image_dir: str | Path,
    decode: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 0,
) -> Iterator[Problem]:
    """Yield problems of the image files of ``data`` under ``image_dir``, in file order.

    Entries that are themselves broken (see :func:`iter_problems`) are not looked at. With
    ``decode=True`` every file is decoded completely (finds truncated files; slow on big sets);
    otherwise only headers are read. ``workers`` threads check files in parallel (0: a few per
    core); :func:`refinemask.data.scan.scan_image_files` adds a cache and value ranges.
    """
    for problem, _ in map_image_files(data, image_dir, decode, max_pixels, workers).values():
        if problem is not None:
            yield problem


def map_image_files(
    data: dict[str, Any],
    image_dir: str | Path,
    decode: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 0,
) -> dict[int, tuple[Problem | None, ValueRange | None]]:
    """:func:`check_image_file` of every valid, first-seen image entry, by entry index, in parallel.

    Threads suffice: PIL decodes with the GIL released.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    seen: set[int] = set()
    entries = []
    for index, image in enumerate(data["images"]):
        if _image_entry_problem(index, image) is not None or image["id"] in seen:
            continue
        seen.add(image["id"])
        entries.append((index, image))
    workers = workers or min(16, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checked = pool.map(lambda entry: check_image_file(entry[0], entry[1], image_dir, decode, max_pixels), entries)
        return {index: result for (index, _), result in zip(entries, checked)}


def high_bit_range(image) -> ValueRange | None:
    """(min, max, white point) of a decoded 16-bit or 32-bit integer PIL image, else None.

    The white point is the loader's (:func:`~refinemask.data.images.integer_white_point`), so
    that the range note speaks of the range the model will see.
    """
    import numpy as np

    if image.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return None
    values = np.asarray(image)
    if values.size == 0:
        return None
    low, high = int(values.min()), int(values.max())
    return low, high, int(integer_white_point(max(high, 0)))


# the long side the bundled configs resize to (the official 1333 x 800)
MODEL_LONG_SIDE = 1333


def large_image_note(images: list[Any], long_side: int = MODEL_LONG_SIDE, factor: float = 2.0) -> str | None:
    """A note when images are far larger than the model's input, or None.

    ``images``: the json's image entries (``width``/``height``). An image whose long side is more
    than ``factor`` times ``long_side`` is shrunk that much as a whole, and its small objects
    with it; crops (training) and tiles (prediction) keep them at the model's scale.
    """
    sides = [
        max(int(im["width"]), int(im["height"]))
        for im in images
        if isinstance(im, dict) and _is_int(im.get("width")) and _is_int(im.get("height"))
    ]
    large = [s for s in sides if s > factor * long_side]
    if not large:
        return None
    shrink = max(large) / long_side
    return (
        f"{len(large)} of {len(sides)} images have a long side over {factor:g}x the model's {long_side} px input "
        f"(up to {max(large)} px: shrunk whole, {shrink:.1f}x smaller); train on crops (data.crop_size=800) "
        f"and predict in tiles (refinemask predict --tile 800) to keep objects at the model's scale"
    )


def remove_problems(data: dict[str, Any], problems: Iterable[Problem]) -> dict[str, Any]:
    """``data`` without the entries the problems concern, with COCO defaults filled in.

    Returns a new top-level dict with new lists; the entries themselves are shared with
    ``data``. Skipped: the entries named by the problems' indices, then every annotation whose
    image or category was skipped. Filled in, in place on the kept annotation dicts (pycocotools
    evaluation needs them): ``iscrowd`` = 0 and ``area`` (the segmentation's pixel area) where
    missing. Other keys are kept unchanged.
    """
    problems = list(problems)
    bad_images = {p.image_index for p in problems if p.image_index is not None}
    bad_annotations = {p.annotation_index for p in problems if p.annotation_index is not None}
    bad_categories = {p.category_index for p in problems if p.category_index is not None}

    categories = [c for i, c in enumerate(data["categories"]) if i not in bad_categories]
    images = [im for i, im in enumerate(data["images"]) if i not in bad_images]
    category_ids = {c["id"] for c in categories}
    image_by_id = {im["id"]: im for im in images}

    annotations = []
    for index, annotation in enumerate(data.get("annotations", [])):
        if index in bad_annotations:
            continue
        image = image_by_id.get(annotation["image_id"])
        if image is None or annotation["category_id"] not in category_ids:
            continue
        # filled in place, not on copies: LVIS has over a million annotations
        annotation.setdefault("iscrowd", 0)
        if "area" not in annotation:
            annotation["area"] = annotation_area(annotation, image["height"], image["width"])
        annotations.append(annotation)

    cleaned = dict(data)
    cleaned.update(categories=categories, images=images, annotations=annotations)
    return cleaned


def fill_image_sizes(data: dict[str, Any], image_dir: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """Give image entries without ``width``/``height`` the size of their file, in place.

    Some exports leave the sizes out; a header read (fast, no decoding) gives them, after EXIF
    orientation as everywhere else. Entries whose file is missing or unreadable are left as
    they are (their problem names them). Returns how many entries were filled.
    """
    filled = 0
    for image in data["images"]:
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            continue
        if _is_int(image.get("width")) and _is_int(image.get("height")):
            continue
        if image.get("width") is not None or image.get("height") is not None:
            continue  # a size given but wrong is the file's problem to report, not to guess
        try:
            height, width = read_image_size(Path(image_dir) / image["file_name"], max_pixels)
        except RefineMaskError:
            continue
        image["width"], image["height"] = width, height
        filled += 1
    return filled


def dataset_notes(
    data: dict[str, Any], detections_per_img: int | None = None, include_box_only: bool = True
) -> list[str]:
    """Lines about a (checked) COCO dict that are no problem of one entry but change results.

    * categories without any annotation: each becomes a class nothing teaches (labelme's
      ``_background_``, the project category 0 of Roboflow exports);
    * the same file under several image ids: trained twice, or in train and val alike;
    * images with more instances than ``detections_per_img``: the model cannot find them all;
    * ``area`` values far from the segmentation's pixel area (:func:`wrong_areas`);
    * box-only annotations (:func:`is_box_only`): how they are used.
    """
    notes = []
    annotations = [a for a in data.get("annotations", []) if isinstance(a, dict)]
    used = {a.get("category_id") for a in annotations}
    unused = [c for c in data["categories"] if isinstance(c, dict) and c.get("id") not in used]
    if unused:
        names = ", ".join(f"{c.get('id')} ({c.get('name', '?')})" for c in unused[:5])
        notes.append(
            f"{len(unused)} of {len(data['categories'])} categories have no annotation: {names}"
            f"{' ...' if len(unused) > 5 else ''}; each is still a class the model predicts but nothing teaches; "
            "delete them from 'categories' unless later data fills them"
        )
    by_file: dict[str, list[Any]] = {}
    for image in data["images"]:
        if isinstance(image, dict) and isinstance(image.get("file_name"), str):
            by_file.setdefault(image["file_name"], []).append(image.get("id"))
    doubled = {name: ids for name, ids in by_file.items() if len(ids) > 1}
    if doubled:
        name, ids = next(iter(doubled.items()))
        notes.append(
            f"{len(doubled)} files are listed under more than one image id (e.g. {name}: ids "
            f"{', '.join(map(str, ids))}); they are trained on as often, or leak between splits: keep one entry each"
        )
    if detections_per_img:
        counts: dict[Any, int] = {}
        for annotation in annotations:
            if not annotation.get("iscrowd", 0):
                counts[annotation.get("image_id")] = counts.get(annotation.get("image_id"), 0) + 1
        crowded = {i: n for i, n in counts.items() if n > detections_per_img}
        if crowded:
            most = max(crowded.values())
            notes.append(
                f"{len(crowded)} images have more instances than model.detections_per_img={detections_per_img} "
                f"(up to {most}); the model keeps at most {detections_per_img} per image: "
                f"set model.detections_per_img={max(most, 2 * detections_per_img)} or more"
            )
    wrong = wrong_areas(data)
    if wrong:
        notes.append(wrong_area_note(wrong))
    box_only = sum(1 for a in annotations if is_box_only(a))
    if box_only and include_box_only:
        notes.append(box_only_note(box_only, len(annotations)))
    return notes


def wrong_areas(data: dict[str, Any]) -> list[tuple[Any, float, float]]:
    """(annotation id, its ``area``, the segmentation's pixel area) where the two differ by more
    than ``AREA_TOLERANCE``; annotations without ``area`` or that cannot be measured are skipped.
    """
    sizes = {im.get("id"): (im.get("height"), im.get("width")) for im in data["images"] if isinstance(im, dict)}
    wrong = []
    for annotation in data.get("annotations", []):
        if not isinstance(annotation, dict):
            continue
        given, size = annotation.get("area"), sizes.get(annotation.get("image_id"))
        if not isinstance(given, (int, float)) or isinstance(given, bool) or size is None or "bbox" not in annotation:
            continue
        try:
            area = annotation_area(annotation, *size)
        except (TypeError, ValueError, KeyError, IndexError):
            continue  # a malformed entry: its problem says so
        if abs(given - area) > AREA_TOLERANCE * max(area, 1.0):
            wrong.append((annotation.get("id"), float(given), area))
    return wrong


def wrong_area_note(wrong: list[tuple[Any, float, float]]) -> str:
    """The one line about wrong ``area`` values, for check-data and scoring alike."""
    example_id, given, area = wrong[0]
    return (
        f"{len(wrong)} annotations' 'area' differs from their segmentation's pixel area by more than "
        f"{round(100 * AREA_TOLERANCE)}% (annotation {example_id}: {given:g}, the segmentation covers {area:g} px); "
        "scored with the segmentation's area, as COCO defines it (APs/APm/APl would otherwise put objects "
        "in the wrong size range)"
    )


def box_only_note(count: int, total: int) -> str:
    """The one line that says how box-only annotations are used, wherever they are counted."""
    return (
        f"{count} of {total} annotations have a box but no segmentation: they train and score as boxes "
        "and are ignored for masks (no mask loss, not counted in mask AP)"
    )


def is_box_only(annotation: dict[str, Any]) -> bool:
    """Whether an annotation has a box but no mask (``"segmentation": []``, ``null`` or none).

    CVAT writes rectangles this way, and detection sets mix them into segmentation sets. One
    rule everywhere: such an object is a box target and box ground truth, and is *ignored* for
    masks: no mask loss on the RoIs matched to it, no semantic loss inside its box, and in mask
    and boundary AP a detection on it counts neither as right nor as wrong (it is scored as a
    crowd region of its box; see :mod:`refinemask.evaluation.coco`).
    """
    segmentation = annotation.get("segmentation")
    return segmentation is None or (isinstance(segmentation, list) and not segmentation)


def annotation_area(annotation: dict[str, Any], height: int, width: int) -> float:
    """The pixel area COCO means by ``area``: the segmentation's, or the box's when box-only.

    The size ranges of COCO evaluation (APs, APm, APl) are read from it, so a missing or wrong
    ``area`` moves objects between them.
    """
    from pycocotools import mask as mask_utils  # here: pycocotools is only needed for areas

    if is_box_only(annotation):
        _, _, w, h = annotation["bbox"]
        return float(w * h)
    return float(mask_utils.area(segmentation_to_rle(annotation["segmentation"], height, width)))


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """Compressed RLE of a valid COCO segmentation (polygons, uncompressed or compressed RLE).

    Polygons are rasterised with pycocotools (frPyObjects, merge), exactly as COCO evaluation
    does, so masks agree with the evaluator pixel for pixel.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation
