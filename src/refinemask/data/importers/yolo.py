"""YOLO segmentation sets as Ultralytics and Roboflow write them.

``SRC`` is the ``data.yaml``::

    path: datasets/shapes        # optional root, relative to the yaml; the splits are relative to it
    train: images/train          # a folder of images, a .txt list of image paths, or a list of those
    val: images/val
    names: {0: cat, 1: dog}      # or a list; Roboflow adds nc: 2

Roboflow writes ``train: ../train/images`` beside the yaml; a split that is not found as written
is looked for without its leading ``../``, as Ultralytics users end up doing by hand.

Each image ``.../images/x.jpg`` has its labels in ``.../labels/x.txt`` (the last ``images``
folder of the path becomes ``labels``), one instance a line in coordinates normalised by the
image's width and height: ``class x0 y0 x1 y1 ...`` (a polygon) or ``class cx cy w h`` (a box,
imported as box-only). An image without a label file is an image without objects. Class ``k``
is category ``k + 1`` named ``names[k]``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from refinemask.data.importers.common import CocoBuilder, Imported, image_size, relative_name
from refinemask.errors import RefineMaskError

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".mpo", ".dng", ".pfm"}


def read(source: Path) -> Imported:
    if source.is_dir():
        found = sorted(source.glob("*.yaml")) + sorted(source.glob("*.yml"))
        if len(found) != 1:
            raise RefineMaskError(f"{source}: give the data.yaml of the YOLO set (found {len(found)} yaml files here)")
        source = found[0]
    config = _read_yaml(source)
    names = _class_names(config, source)
    root = source.parent
    if config.get("path"):  # relative to the yaml's folder
        given = Path(str(config["path"]))
        given = given if given.is_absolute() else source.parent / given
        # Ultralytics reads a relative path against its own datasets folder; a moved set has its
        # splits beside the yaml
        root = given if given.is_dir() else source.parent

    split_images: dict[str, list[Path]] = {}
    for split in ("train", "val", "test"):
        entries = config.get(split)
        if not entries:
            continue
        images: list[Path] = []
        for entry in entries if isinstance(entries, list) else [entries]:
            images += _images_of(str(entry), root, source, split)
        split_images[split] = images
    if not split_images:
        raise RefineMaskError(f"{source}: no 'train' or 'val' entry; a YOLO data.yaml names its image folders")

    all_images = [p for images in split_images.values() for p in images]
    image_root = Path(os.path.commonpath([str(p.resolve().parent) for p in all_images]))
    builder = CocoBuilder()
    for name in names:  # every class, in YOLO's order, also one without instances
        builder.category(name)
    splits: dict[str, set[int]] = {}
    for split, images in split_images.items():
        ids = set()
        for path in images:
            width, height = image_size(path)
            image_id = builder.add_image(relative_name(path, image_root), width, height)
            ids.add(image_id)
            labels = label_path(path)
            if labels.is_file():
                _read_labels(labels, builder, image_id, names, width, height)
        splits[split] = ids
    return Imported(builder, splits, image_root)


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _read_labels(path: Path, builder: CocoBuilder, image_id: int, names: list[str], width: int, height: int) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls = int(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise RefineMaskError(f"{path}, line {number}: expected 'class x y ...' numbers, got {line.strip()!r}") from None
        if not 0 <= cls < len(names):
            raise RefineMaskError(
                f"{path}, line {number}: class {cls} is not in the yaml's names (0..{len(names) - 1}); "
                "fix the label or add the class to names"
            )
        category = cls + 1
        if len(values) == 4:
            cx, cy, w, h = values
            builder.add_box(image_id, category, (cx - w / 2) * width, (cy - h / 2) * height,
                            (cx + w / 2) * width, (cy + h / 2) * height)
        elif len(values) >= 6 and len(values) % 2 == 0:
            polygon = [v * (width if k % 2 == 0 else height) for k, v in enumerate(values)]
            builder.add_polygons(image_id, category, [polygon])
        else:
            raise RefineMaskError(
                f"{path}, line {number}: {len(values)} coordinates; a YOLO line is 'class cx cy w h' (a box) "
                "or 'class x0 y0 x1 y1 x2 y2 ...' (a polygon of 3 or more points)"
            )


def _images_of(entry: str, root: Path, source: Path, split: str) -> list[Path]:
    path = _locate(entry, root)
    if path is None:
        raise RefineMaskError(f"{source}: {split}: {entry} not found (looked in {root}); fix the path in the yaml")
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise RefineMaskError(f"{source}: {split}: no image in {path}")
        return images
    # a .txt list of image paths, relative to the root (Ultralytics writes ./images/x.jpg)
    images = []
    for line in path.read_text().splitlines():
        if line.strip():
            image = _locate(line.strip(), root) or _locate(line.strip(), path.parent)
            if image is None:
                raise RefineMaskError(f"{path}: image {line.strip()} not found")
            images.append(image)
    return images


def _locate(entry: str, root: Path) -> Path | None:
    path = Path(entry)
    candidates = [path] if path.is_absolute() else [root / path]
    stripped = entry
    while stripped.startswith("../"):  # Roboflow's ../train/images, written beside the yaml
        stripped = stripped[3:]
        candidates.append(root / stripped)
    return next((c for c in candidates if c.exists()), None)


def _class_names(config: dict[str, Any], source: Path) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):
        try:
            ordered = sorted((int(k), str(v)) for k, v in names.items())
        except ValueError:
            raise RefineMaskError(f"{source}: names must map class numbers to names") from None
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise RefineMaskError(f"{source}: names must number the classes 0, 1, 2, ... without gaps")
        return [v for _, v in ordered]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    count = config.get("nc")
    if isinstance(count, int) and count > 0:
        return [f"class_{k}" for k in range(count)]
    raise RefineMaskError(f"{source}: no 'names' (or 'nc'); a YOLO data.yaml lists its classes")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RefineMaskError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    except OSError as err:
        raise RefineMaskError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(data, dict):
        raise RefineMaskError(f"{path}: expected a YOLO data.yaml (a mapping with train, val and names)")
    return data
