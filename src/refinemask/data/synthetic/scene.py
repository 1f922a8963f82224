"""One synthetic image: objects placed, painted one over the other, and annotated.

Shapes: S the side of a (square) image; H = W = S.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from refinemask.data.synthetic.paint import contrasting_colour, paint_object, random_colour, texture_patch
from refinemask.data.synthetic.presets import CATEGORY_NAMES, SyntheticPreset
from refinemask.data.synthetic.shapes import SHAPES

# Polygon vertices are stored with this many decimals, and the objects are drawn from the
# rounded coordinates, so the json reproduces the drawn pixels exactly.
_DECIMALS = 2
_MAX_PLACEMENT_TRIES = 20


@dataclass
class SyntheticInstance:
    """One drawn object.

    ``polygons``: the object as a union of polygons, each ``[x0, y0, x1, y1, ...]`` in COCO pixel
    coordinates. ``mask``: (H, W) bool, all pixels the object was drawn on (before later objects
    covered some of them).
    """

    category_id: int
    polygons: list[list[float]]
    mask: np.ndarray


@dataclass
class SyntheticScene:
    """One image and its objects, in painting order (later objects cover earlier ones).

    ``image``: (H, W, 3) uint8 RGB. ``instance_map``: (H, W) int32, ``i + 1`` where
    ``instances[i]`` is the visible object, 0 on background.
    """

    image: np.ndarray
    instances: list[SyntheticInstance]
    instance_map: np.ndarray

    def visible_mask(self, index: int) -> np.ndarray:
        """(H, W) bool: the pixels of ``instances[index]`` not covered by later objects."""
        return self.instance_map == index + 1


def render_scene(rng: np.random.Generator, size: int, preset: SyntheticPreset) -> SyntheticScene:
    """Draw one S×S image: a textured background and objects painted one over the other.

    Each object is tried at up to a few random shapes and places; a placement is kept only if
    the object is large enough and leaves every earlier object at least
    ``preset.min_visible_fraction`` (and ``preset.min_area`` pixels) visible, so every painted
    object is annotated.
    """
    canvas = texture_patch(
        rng, (0, 0, size, size), random_colour(rng), preset.background_texture, rng.integers(1, 3)
    )
    background_colour = canvas.reshape(-1, 3).mean(axis=0)
    instance_map = np.zeros((size, size), dtype=np.int32)
    instances: list[SyntheticInstance] = []
    visible_counts: list[int] = []

    low, high = preset.objects_per_image
    for _ in range(int(rng.integers(low, high + 1))):
        placed = _place_object(rng, size, preset, instance_map, instances, visible_counts)
        if placed is None:
            continue
        instance, covered = placed
        for j, count in enumerate(covered[1:]):
            visible_counts[j] -= int(count)
        colour = contrasting_colour(rng, background_colour, preset.min_contrast)
        paint_object(rng, canvas, instance.mask, colour, preset.object_texture)
        instances.append(instance)
        visible_counts.append(int(instance.mask.sum()))
        instance_map[instance.mask] = len(instances)

    if preset.pixel_noise > 0:
        canvas += rng.normal(0.0, preset.pixel_noise, size=canvas.shape).astype(np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return SyntheticScene(image=image, instances=instances, instance_map=instance_map)


def scene_annotations(scene: SyntheticScene, min_area: int) -> list[dict]:
    """COCO annotations (without ``id``/``image_id``) of the visible part of each object.

    Unoccluded objects keep their polygons; occluded ones are stored as compressed RLE of their
    visible pixels. Objects with fewer than ``min_area`` visible pixels are dropped.
    """
    height, width = scene.instance_map.shape
    annotations = []
    for index, instance in enumerate(scene.instances):
        visible = scene.visible_mask(index)
        area = int(visible.sum())
        if area < min_area:
            continue
        if area == int(instance.mask.sum()):
            segmentation: list | dict = instance.polygons
        else:
            rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
            segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        rows = np.flatnonzero(visible.any(axis=1))
        cols = np.flatnonzero(visible.any(axis=0))
        bbox = [
            int(cols[0]),
            int(rows[0]),
            int(cols[-1] - cols[0] + 1),
            int(rows[-1] - rows[0] + 1),
        ]
        annotations.append(
            {
                "category_id": instance.category_id,
                "segmentation": segmentation,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    return annotations


def _place_object(
    rng: np.random.Generator,
    size: int,
    preset: SyntheticPreset,
    instance_map: np.ndarray,
    instances: list[SyntheticInstance],
    visible_counts: list[int],
) -> tuple[SyntheticInstance, np.ndarray] | None:
    """A new object that fits the image and the occlusion limits, and the pixel count it covers
    of each earlier object (index ``j + 1`` for ``instances[j]``); None if no try succeeded."""
    category_id = int(rng.integers(1, len(CATEGORY_NAMES) + 1))
    margin = 1.0
    for _ in range(_MAX_PLACEMENT_TRIES):
        radius = 0.5 * size * rng.uniform(*preset.object_size)
        thin = rng.uniform(*preset.thin_width)
        parts = SHAPES[category_id - 1](rng, radius, thin)
        parts = _rotate(parts, rng.uniform(0, 2 * math.pi))
        points = np.concatenate(parts)
        low, high = points.min(axis=0), points.max(axis=0)
        if np.any(high - low > size - 2 * margin):
            continue
        offset = rng.uniform(margin - low, size - margin - high)
        polygons = [np.round(part + offset, _DECIMALS).ravel().tolist() for part in parts]
        mask = _rasterise(polygons, size)
        if mask.sum() < preset.min_area:
            continue
        covered = np.bincount(instance_map[mask], minlength=len(instances) + 1)
        acceptable = all(
            visible_counts[j] - covered[j + 1]
            >= max(preset.min_area, preset.min_visible_fraction * instance.mask.sum())
            for j, instance in enumerate(instances)
        )
        if acceptable:
            return SyntheticInstance(category_id, polygons, mask), covered
    return None


def _rasterise(polygons: list[list[float]], size: int) -> np.ndarray:
    """(S, S) bool union of the polygons, rasterised as pycocotools reads a COCO annotation."""
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, size, size))
    return mask_utils.decode(rle).astype(bool)


def _rotate(parts: list[np.ndarray], angle: float) -> list[np.ndarray]:
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return [part @ rotation for part in parts]
