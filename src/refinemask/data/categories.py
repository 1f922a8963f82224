"""Labels, category ids and names: the one place that maps between them.

Labels are contiguous (1..C) in category-id order (:func:`categories_from_entries`, which the
datasets and ``refinemask convert --categories`` use), which is also the order of the official
models' classifier rows. A model carries its label → category-id mapping and class names (see
:func:`refinemask.model_files.model_categories`), so its predictions can be scored
against the data set's own annotation files; :func:`default_categories` gives those of the
data sets the official checkpoints were trained on, and of a model that has none.

Where a name is missing it is spelled here and nowhere else: a label without a name is
``class_<label>`` (:func:`label_name`), a category entry without one ``category_<id>``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# COCO 2017 detection categories: the 80 ids (1..90 with gaps) and their names, in id order.
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)
COCO_CATEGORY_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# Cityscapes instance classes: the label ids of cityscapesScripts are the category ids of the
# COCO-format json (refinemask.data.cityscapes), in the order of the official 8-way classifier.
CITYSCAPES_CATEGORY_IDS = (24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_CATEGORY_NAMES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")

# LVIS v1.0 has 1203 categories with ids 1..1203. Their names are not shipped here (no LVIS
# file offline); a checkpoint whose meta lists its CLASSES, or --categories, supplies them.
LVIS_NUM_CATEGORIES = 1203


def default_categories(dataset: str, num_classes: int) -> tuple[dict[int, int], list[str]]:
    """(label → category id, names) of ``dataset`` ("coco", "lvis", "cityscapes" or "custom")."""
    if dataset == "coco":
        ids, names = COCO_CATEGORY_IDS, COCO_CATEGORY_NAMES
    elif dataset == "cityscapes":
        ids, names = CITYSCAPES_CATEGORY_IDS, CITYSCAPES_CATEGORY_NAMES
    elif dataset == "lvis":
        ids = tuple(range(1, num_classes + 1))
        names = tuple(f"lvis_{i}" for i in ids)
    else:
        ids = tuple(range(1, num_classes + 1))
        names = tuple(unnamed_label(label) for label in ids)
    return {label: int(cat) for label, cat in enumerate(ids, 1)}, list(names)


def unnamed_label(label: int) -> str:
    """The name of label ``label`` when nothing names it: ``class_<label>``."""
    return f"class_{label}"


def label_name(label: int, category_names: Sequence[str]) -> str:
    """The name of ``label`` (1..C): ``category_names[label - 1]``, else :func:`unnamed_label`."""
    return category_names[label - 1] if 0 < label <= len(category_names) else unnamed_label(label)


def categories_from_entries(entries: Iterable[Mapping[str, Any]]) -> tuple[dict[int, int], list[str]]:
    """(label → category id, names) from COCO ``categories`` entries: labels 1..C in id order.

    Raises ``KeyError``, ``ValueError`` or ``TypeError`` for an entry without an integer ``id``;
    the caller names the file.
    """
    ordered = sorted(entries, key=lambda entry: int(entry["id"]))
    ids = [int(entry["id"]) for entry in ordered]
    names = [str(entry.get("name", f"category_{entry['id']}")) for entry in ordered]
    return {label: cat for label, cat in enumerate(ids, 1)}, names
