"""The synthetic data set on disk: splits of PNG images with COCO annotations (:func:`make_synthetic`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from refinemask.data.synthetic.presets import CATEGORY_NAMES, MAX_SIZE, MIN_SIZE, PRESETS, SyntheticPreset
from refinemask.data.synthetic.scene import render_scene, scene_annotations
from refinemask.errors import RefineMaskError

@dataclass(frozen=True)
class SyntheticPaths:
    """Where :func:`make_synthetic` wrote the data set."""

    root: Path
    images: Path  # folder with the PNG images of all splits
    train: Path  # annotations.json, or train.json when there is a validation split
    val: Path | None  # val.json, or None


def make_synthetic(
    out_dir: str | Path,
    num_images: int,
    size: int = 256,
    seed: int = 0,
    preset: str = "hard",
    num_val_images: int = 0,
) -> SyntheticPaths:
    """Write the synthetic data set (COCO json + PNG images) to ``out_dir``.

    Layout: ``out_dir/images/*.png`` holds all images. Without a validation split
    (``num_val_images == 0``) the annotations are ``out_dir/annotations.json``; with one, they are
    ``out_dir/train.json`` (``num_images`` images) and ``out_dir/val.json`` (``num_val_images``
    images), both referring to ``out_dir/images/``. Existing files of the same names are
    overwritten.

    Args:
        out_dir: output folder, created if missing.
        num_images: number of (training) images, at least 1.
        size: side S of the square images, in pixels (64 to 4096).
        seed: non-negative random seed; the same seed writes byte-identical files.
        preset: ``"easy"`` (1-3 large objects, strong contrast, 2-4 px thin parts) or
            ``"hard"`` (3-8 objects, 1-2 px thin parts, strong textures, more occlusion).
        num_val_images: number of validation images, 0 for none.

    Returns:
        The paths written. Raises :class:`RefineMaskError` for bad arguments or an
        unwritable ``out_dir``.
    """
    params = _check_arguments(num_images, size, seed, preset, num_val_images)
    root = Path(out_dir)
    images_dir = root / "images"
    if num_val_images > 0:
        splits = [
            ("train", num_images, root / "train.json"),
            ("val", num_val_images, root / "val.json"),
        ]
    else:
        splits = [("train", num_images, root / "annotations.json")]
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
        for split_index, (split, count, json_path) in enumerate(splits):
            coco = _write_split(images_dir, split, split_index, count, size, seed, params)
            json_path.write_text(json.dumps(coco, separators=(",", ":")) + "\n", encoding="utf-8")
    except OSError as err:
        reason = err.strerror or str(err)
        where = f" ({err.filename})" if err.filename else ""
        raise RefineMaskError(
            f"cannot write the synthetic data set to {root}: {reason}{where}; "
            "choose a writable output directory"
        ) from err
    return SyntheticPaths(
        root=root,
        images=images_dir,
        train=splits[0][2],
        val=splits[1][2] if len(splits) > 1 else None,
    )


def image_rng(seed: int, split_index: int, image_index: int) -> np.random.Generator:
    """The random stream of one image: independent of every other image and split."""
    return np.random.default_rng(np.random.SeedSequence([seed, split_index, image_index]))


def _check_arguments(
    num_images: int, size: int, seed: int, preset: str, num_val_images: int
) -> SyntheticPreset:
    if preset not in PRESETS:
        raise RefineMaskError(
            f"unknown synthetic preset {preset!r}; choose one of: {', '.join(PRESETS)}"
        )
    if not _is_integer(num_images) or num_images < 1:
        raise RefineMaskError(f"number of images must be at least 1, got {num_images} (--images)")
    if not _is_integer(num_val_images) or num_val_images < 0:
        raise RefineMaskError(
            f"number of validation images must be 0 or more, got {num_val_images} (--val-images)"
        )
    if not _is_integer(size) or not MIN_SIZE <= size <= MAX_SIZE:
        raise RefineMaskError(
            f"image size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size} (--size)"
        )
    if not _is_integer(seed) or seed < 0:
        raise RefineMaskError(f"seed must be a non-negative integer, got {seed} (--seed)")
    return PRESETS[preset]


def _is_integer(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _write_split(
    images_dir: Path,
    split: str,
    split_index: int,
    count: int,
    size: int,
    seed: int,
    preset: SyntheticPreset,
) -> dict:
    images, annotations = [], []
    for index in range(count):
        scene = render_scene(image_rng(seed, split_index, index), size, preset)
        file_name = f"{split}_{index:06d}.png"
        Image.fromarray(scene.image).save(images_dir / file_name, format="PNG")
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for annotation in scene_annotations(scene, preset.min_area):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
    return {
        "info": {
            "description": "refinemask synthetic thin-structure data set",
            "split": split,
            "preset": preset.name,
            "seed": seed,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(CATEGORY_NAMES)
        ],
    }
