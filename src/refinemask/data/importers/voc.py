"""Pascal VOC instance masks: ``SegmentationObject`` PNGs with their ``SegmentationClass`` twins.

``SRC`` is the VOC root (``VOC2012/``, or a ``VOCdevkit`` holding one) with::

    JPEGImages/NAME.jpg
    SegmentationObject/NAME.png   # instance k of the image is value k; 0 background, 255 void
    SegmentationClass/NAME.png    # the class index of every pixel, same 0 and 255
    ImageSets/Segmentation/train.txt, val.txt   # optional: the splits, one NAME a line

The PNGs are palette images whose *indices* are the values (as VOC ships them). RGB PNGs (as
CVAT's "Segmentation mask" export writes) work too: each colour of ``SegmentationObject`` other
than black and VOC's void colour is an instance, and the classes are read from
``labelmap.txt`` (``name:r,g,b::`` lines). Void pixels (object borders) belong to no instance.
An instance's class is the most frequent class of its pixels. Categories are VOC's 20 classes
(ids 1..20 as their indices), or the labelmap's names in order, background left out.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from refinemask.data.importers.common import CocoBuilder, Imported, image_size, relative_name
from refinemask.errors import RefineMaskError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOID = 255
VOID_COLOUR = (224, 224, 192)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read(source: Path) -> Imported:
    root = _voc_root(source)
    objects_dir, classes_dir = root / "SegmentationObject", root / "SegmentationClass"
    colours = _labelmap(root / "labelmap.txt")
    builder = CocoBuilder()
    names = [name for name, _ in colours] if colours else list(VOC_CLASSES)
    for name in names:
        builder.category(name)

    stems = sorted(p.stem for p in objects_dir.glob("*.png"))
    if not stems:
        raise RefineMaskError(f"{objects_dir}: no PNG; VOC instance masks are SegmentationObject/NAME.png")
    ids_by_stem = {}
    for stem in stems:
        image = _image_file(root, stem)
        width, height = image_size(image)
        objects = _read_png(objects_dir / f"{stem}.png")
        class_file = classes_dir / f"{stem}.png"
        if not class_file.is_file():
            raise RefineMaskError(f"{class_file}: not found; each SegmentationObject PNG needs its SegmentationClass twin")
        classes = _read_png(class_file)
        if objects.shape[:2] != (height, width) or classes.shape[:2] != (height, width):
            raise RefineMaskError(
                f"{objects_dir / stem}.png: {objects.shape[1]}x{objects.shape[0]} but the image is {width}x{height}"
            )
        image_id = builder.add_image(relative_name(image, root), width, height)
        ids_by_stem[stem] = image_id
        instance_ids, class_ids = _indices(objects, classes, colours, class_file)
        for value in np.unique(instance_ids):
            if value in (0, VOID):
                continue
            mask = instance_ids == value
            votes = Counter(int(c) for c in class_ids[mask] if c not in (0, VOID))
            if not votes:
                builder.left_out["VOC objects without a class"] += 1
                continue
            builder.add_mask(image_id, votes.most_common(1)[0][0], mask)
    return Imported(builder, _splits(root, ids_by_stem), root)


def _voc_root(source: Path) -> Path:
    for candidate in [source, *sorted(source.glob("VOC*")), *sorted(source.glob("*/VOC*"))]:
        if (candidate / "SegmentationObject").is_dir():
            return candidate
    raise RefineMaskError(f"{source}: no SegmentationObject folder; give the VOC root (VOC2012/ or VOCdevkit/)")


def _image_file(root: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = root / "JPEGImages" / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise RefineMaskError(f"{root / 'JPEGImages'}: no image {stem}.jpg for SegmentationObject/{stem}.png")


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in ("P", "L", "I", "I;16"):
                return np.asarray(image)  # palette indices, not colours
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        raise RefineMaskError(f"{path}: cannot be read as an image ({err})") from None


def _indices(
    objects: np.ndarray, classes: np.ndarray, colours: list[tuple[str, tuple[int, int, int]]], class_file: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(instance index, class index) maps of one image, each (H, W); 0 background, 255 void."""
    if objects.ndim == 3:
        packed = (objects[..., 0].astype(np.int64) << 16) | (objects[..., 1].astype(np.int64) << 8) | objects[..., 2]
        void = (VOID_COLOUR[0] << 16) | (VOID_COLOUR[1] << 8) | VOID_COLOUR[2]
        instance = np.zeros(packed.shape, dtype=np.int64)
        for k, colour in enumerate(c for c in np.unique(packed) if c not in (0, void)):
            instance[packed == colour] = k + 1
        instance[packed == void] = VOID
        objects = instance
    if classes.ndim == 3:
        if not colours:
            raise RefineMaskError(f"{class_file} is an RGB image; put CVAT's labelmap.txt beside SegmentationClass")
        index = np.zeros(classes.shape[:2], dtype=np.int64)
        for k, (_, colour) in enumerate(colours):
            index[(classes == colour).all(axis=2)] = k + 1
        index[(classes == VOID_COLOUR).all(axis=2)] = VOID
        classes = index
    return objects, classes


def _labelmap(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """CVAT's ``name:r,g,b:parts:actions`` lines, background left out; [] without the file."""
    if not path.is_file():
        return []
    colours = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            colour = tuple(int(v) for v in rest.split(":")[0].split(","))
        except ValueError:
            raise RefineMaskError(f"{path}: line {line!r} is not name:r,g,b::") from None
        if name != "background" and len(colour) == 3:
            colours.append((name, colour))
    return colours


def _splits(root: Path, ids_by_stem: dict[str, int]) -> dict[str, set[int]]:
    folder = root / "ImageSets" / "Segmentation"
    splits = {}
    for name in ("train", "val", "test"):
        path = folder / f"{name}.txt"
        if path.is_file():
            stems = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
            splits[name] = {ids_by_stem[s] for s in stems if s in ids_by_stem}
    if not splits or not any(splits.values()):
        return {"annotations": set(ids_by_stem.values())}
    return {name: ids for name, ids in splits.items() if ids}
