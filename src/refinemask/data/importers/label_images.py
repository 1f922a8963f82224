"""Instance label images, as StarDist, Cellpose and most microscopy tools write them.

A label image has the size of its image and holds one integer per pixel: 0 is background, every
other value one object (8, 16 or 32-bit PNG or TIFF; a value may cover several pieces). Pairs
are found in either layout:

* ``SRC/images/NAME.ext`` with ``SRC/masks/NAME.ext`` (or ``labels/``), the StarDist layout;
* ``NAME.ext`` with ``NAME_masks.ext`` (or ``_mask``, ``_labels``, ``_label``) side by side,
  as Cellpose saves them.

A label file with several channels or planes (an OME-TIFF with a nuclei and a cell channel)
needs ``channel`` (``--channel K``): the plane to take. Every object is one category, named
``category`` (``--category``, default ``object``). Masks are stored as RLE.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from refinemask.data.importers.common import CocoBuilder, Imported, image_size, relative_name
from refinemask.errors import RefineMaskError

SUFFIXES = (".png", ".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
LABEL_FOLDERS = ("masks", "labels")
LABEL_ENDINGS = ("_masks", "_mask", "_labels", "_label")


def read(source: Path, category: str = "object", channel: int | None = None) -> Imported:
    if not source.is_dir():
        raise RefineMaskError(f"{source}: give the folder of images and label images")
    pairs = find_pairs(source)
    if not pairs:
        raise RefineMaskError(
            f"{source}: no image with a label image found; use images/NAME + masks/NAME, "
            "or NAME + NAME_masks side by side"
        )
    builder = CocoBuilder()
    category_id = builder.category(category)
    for image, labels_file in pairs:
        width, height = image_size(image)
        labels = read_label_image(labels_file, channel)
        if labels.shape != (height, width):
            raise RefineMaskError(
                f"{labels_file}: the label image is {labels.shape[1]}x{labels.shape[0]} but {image.name} is "
                f"{width}x{height}; pair each image with its own label image"
            )
        image_id = builder.add_image(relative_name(image, source), width, height)
        for value in np.unique(labels):
            if value != 0:
                builder.add_mask(image_id, category_id, labels == value)
    return Imported(builder, {"annotations": {im["id"] for im in builder.images}}, source)


def find_pairs(source: Path) -> list[tuple[Path, Path]]:
    """(image, label image) pairs under ``source`` in either layout, sorted by image path."""
    pairs = []
    images_dir = source / "images"
    if images_dir.is_dir():
        for folder in (source / name for name in LABEL_FOLDERS):
            if folder.is_dir():
                for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                    labels = _same_stem(folder, image.stem)
                    if labels is not None:
                        pairs.append((image, labels))
                break
    if pairs:
        return pairs
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    by_stem = {p.with_suffix(""): p for p in files}
    for path in files:
        for ending in LABEL_ENDINGS:
            if path.stem.endswith(ending):
                image = by_stem.get(path.with_name(path.stem[: -len(ending)]))
                if image is not None:
                    pairs.append((image, path))
                break
    return sorted(pairs)


def _same_stem(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def read_label_image(path: Path, channel: int | None = None) -> np.ndarray:
    """The (H, W) integer labels of a PNG or TIFF label image (``channel``: the plane to take)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            labels = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image

            with Image.open(path) as image:
                labels = np.asarray(image)
    except Exception as err:  # noqa: BLE001 - whatever the decoder says, the file is at fault
        raise RefineMaskError(f"{path}: cannot be read as a label image ({err})") from None
    labels = np.squeeze(labels)
    if labels.ndim == 3:
        if channel is None:
            raise RefineMaskError(
                f"{path} has {labels.shape[0]} planes of {labels.shape[1]}x{labels.shape[2]} (shape {labels.shape}); "
                "choose one with --channel K (0-based)"
            )
        if not 0 <= channel < labels.shape[0]:
            raise RefineMaskError(f"{path}: --channel {channel} is not one of its planes 0..{labels.shape[0] - 1}")
        labels = labels[channel]
    elif channel not in (None, 0):
        raise RefineMaskError(f"{path} has a single plane; leave out --channel")
    if labels.ndim != 2:
        raise RefineMaskError(f"{path}: a label image is one 2-D plane of integers, got shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.array_equal(labels, np.round(labels)):
            raise RefineMaskError(f"{path} holds fractional values; a label image holds one integer id per object")
        labels = labels.astype(np.int64)
    elif not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise RefineMaskError(f"{path}: values of type {labels.dtype} are no object ids")
    return labels
