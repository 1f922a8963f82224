"""Annotations as other tools write them, turned into the COCO json the rest of refinemask reads.

``refinemask import FORMAT SRC OUT_DIR`` (:func:`import_dataset`) writes one COCO json per split
into ``OUT_DIR``. Image files are not copied: every ``file_name`` is relative to the folder
printed with the result (the ``--images`` of ``check-data``, ``data.*_images`` of training).

=================  ====================================================  =====================
format             SRC                                                   splits
=================  ====================================================  =====================
``yolo``           Ultralytics / Roboflow ``data.yaml`` (polygon txt)    the yaml's train/val/test
``labelme``        a folder of labelme ``.json`` files                   one (``--val-fraction``)
``voc``            a Pascal VOC root (``SegmentationObject`` PNGs)        ImageSets/Segmentation
``cvat``           CVAT for images 1.1 ``annotations.xml``                one (``--val-fraction``)
``label-images``   a folder of images + instance label images            one (``--val-fraction``)
=================  ====================================================  =====================

Category ids start at 1 (YOLO's class ``k`` is category ``k + 1``; names come from the tool),
annotation and image ids at 1. A box without a mask (a YOLO detection line, a labelme or CVAT
rectangle) becomes a box-only annotation (``"segmentation": []``), which trains and scores as a
box and is ignored for masks (:func:`refinemask.data.validation.is_box_only`). Shapes that are
no region (points, lines) are left out and counted.

Why written here and not taken from a converter library: datumaro reads most of these formats
but brings pandas, pyarrow, shapely and opencv (hundreds of MB) and reads no instance label
images; supervision reads YOLO only of these (and loads every image to do it). Each format here
is a small parser of a documented file layout on numpy, Pillow, tifffile and pycocotools,
which refinemask needs anyway.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from refinemask.data.importers.common import CocoBuilder, Imported, split_images
from refinemask.errors import RefineMaskError

__all__ = ["FORMATS", "CocoBuilder", "Imported", "import_dataset"]


def _importers() -> dict[str, Callable[..., Imported]]:
    from refinemask.data.importers import cvat, label_images, labelme, voc, yolo

    return {
        "yolo": yolo.read,
        "labelme": labelme.read,
        "voc": voc.read,
        "cvat": cvat.read,
        "label-images": label_images.read,
    }


FORMATS = ("yolo", "labelme", "voc", "cvat", "label-images")


def import_dataset(
    format: str, source: str | Path, out_dir: str | Path, val_fraction: float = 0.0, seed: int = 0, **options: Any
) -> tuple[dict[str, Path], Imported]:
    """Read ``source`` in ``format`` and write ``OUT_DIR/<split>.json``; returns the files and what was read.

    ``val_fraction`` > 0 splits an unsplit source into ``train.json`` and ``val.json``.
    ``options`` go to the format's reader (label images: ``category``, ``channel``).
    """
    readers = _importers()
    if format not in readers:
        raise RefineMaskError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    source = Path(source)
    if not source.exists():
        raise RefineMaskError(f"{source}: not found; give the {format} export to import")
    imported = readers[format](source, **options)
    if not imported.builder.images:
        raise RefineMaskError(f"{source}: no image found to import as {format}")
    splits = imported.splits
    if val_fraction:
        if set(splits) != {"annotations"}:
            raise RefineMaskError(
                f"{source} has its own splits ({', '.join(splits)}); leave out --val-fraction"
            )
        splits = split_images(sorted(splits["annotations"]), val_fraction, seed)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RefineMaskError(f"cannot create {out_dir}: {err.strerror or err}") from None
    written = {}
    for name, ids in splits.items():
        path = out_dir / f"{name}.json"
        try:
            path.write_text(json.dumps(imported.builder.to_dict(ids)))
        except OSError as err:
            raise RefineMaskError(f"cannot write {path}: {err.strerror or err}") from None
        written[name] = path
    return written, imported


def detect_format(path: str | Path) -> tuple[str, str] | None:
    """(format, what it looks like) of an export :func:`import_dataset` reads, or None.

    Cheap: reads the file itself (or a folder's listing), never the images. A COCO json gives
    None, as does anything unknown.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "SegmentationObject").is_dir() or any(path.glob("VOC*/SegmentationObject")):
            return "voc", "a Pascal VOC folder"
        if any(path.glob("*.yaml")) and ((path / "labels").is_dir() or any(path.glob("*/labels"))):
            return "yolo", "a YOLO data set folder"
        if (path / "annotations.xml").is_file():
            return "cvat", "a CVAT for images export"
        if any(_is_labelme(p) for p in sorted(path.glob("*.json"))[:5]):
            return "labelme", "a folder of labelme files"
        from refinemask.data.importers.label_images import find_pairs

        if find_pairs(path):
            return "label-images", "a folder of images and label images"
        return None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml

            data = yaml.safe_load(path.read_text())
        except Exception:  # noqa: BLE001 - not readable as YAML: not a YOLO file either
            return None
        if isinstance(data, dict) and "names" in data and ("train" in data or "val" in data):
            return "yolo", "a YOLO data.yaml"
    elif suffix == ".xml":
        try:
            head = path.read_text(errors="replace")[:2000]
        except OSError:
            return None
        if "<annotations" in head:
            return "cvat", "a CVAT for images XML file"
    elif suffix == ".json" and _is_labelme(path):
        return "labelme", "a labelme file"
    elif suffix == ".txt" and path.parent.name == "labels":
        return "yolo", "a YOLO label file (give the data.yaml)"
    return None


def _is_labelme(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "shapes" in data and "imagePath" in data
