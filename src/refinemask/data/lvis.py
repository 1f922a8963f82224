"""LVIS v1 datasets.

An LVIS v1 json is a COCO json with three differences that matter here:

* images have no ``file_name``; their ``coco_url`` (``http://images.cocodataset.org/train2017/
  000000391895.jpg``) names the COCO file, and LVIS v1 *val* mixes images of COCO train2017 and
  val2017. ``image_dir`` may therefore be either one folder holding all the files, or the COCO
  root holding ``train2017/`` and ``val2017/``: when ``image_dir/<folder in the url>`` exists the
  file is looked for there.
* images list ``not_exhaustive_category_ids`` and ``neg_category_ids`` (used by LVIS evaluation;
  kept untouched in :attr:`LvisDetection.coco`), and categories carry a ``frequency`` (``r``,
  ``c``, ``f``: rare, common, frequent).
* annotations have no ``iscrowd``; it is filled in as 0.

The official LVIS schedule trains with repeat-factor sampling at threshold 1e-3:
``RepeatFactorSampler(repeat_factors(dataset.labels_per_image(), 1e-3))`` (see
:mod:`refinemask.data.samplers`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from refinemask.data.coco import CocoDetection
from refinemask.data.validation import load_annotation_json


def set_lvis_file_names(data: dict[str, Any], image_dir: str | Path | None) -> dict[str, Any]:
    """Give every LVIS image entry a ``file_name`` taken from its ``coco_url``, in place.

    The name is the url's last part, prefixed by its folder (``train2017``/``val2017``) when
    ``image_dir`` has a sub-directory of that name. Entries that already have a file name, or
    have no usable url, are left alone (validation reports the latter).
    """
    folders_present: dict[str, bool] = {}
    for image in data["images"]:
        if not isinstance(image, dict) or image.get("file_name") or not isinstance(image.get("coco_url"), str):
            continue
        parts = [p for p in image["coco_url"].split("/") if p]
        if not parts:
            continue
        name = parts[-1]
        folder = parts[-2] if len(parts) > 1 else ""
        if folder and folder not in folders_present:
            folders_present[folder] = image_dir is not None and (Path(image_dir) / folder).is_dir()
        image["file_name"] = f"{folder}/{name}" if folder and folders_present[folder] else name
    return data


class LvisDetection(CocoDetection):
    """An LVIS v1 json as a :class:`~refinemask.data.coco.CocoDetection` (same arguments).

    Additional attribute ``label_frequency``: contiguous label -> ``"r"``, ``"c"`` or ``"f"``
    (empty for categories without a frequency).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label_frequency: dict[int, str] = {
            label: str(self.coco.cats[category].get("frequency", ""))
            for label, category in self.label_to_category.items()
        }

    def _read_json(self) -> dict[str, Any]:
        return set_lvis_file_names(load_annotation_json(self.ann_file), self.image_dir)
