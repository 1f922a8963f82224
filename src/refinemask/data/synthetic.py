"""The built-in synthetic data set: thin, bent shapes on textured backgrounds, in COCO format.

Shapes: S the side of a (square) image; H = W = S.

Five categories of objects whose thin parts make boundary quality matter: ``stroke`` (a curved
line), ``star`` (bent, tapering spikes), ``comb`` (a curved spine with thin teeth), ``ring`` (thin,
closed or open) and ``tailed_blob`` (a blob with curling tails). Every object is a union of
vector polygons; its pixels are the polygons rasterised by pycocotools, the same rasteriser that
reads the annotation back, so an unoccluded object's annotation matches its pixels exactly (hard
edges, no anti-aliasing). A consumer must read a multi-polygon annotation as the union of its
polygons (pycocotools ``merge``), not with an even-odd fill: the parts overlap.
Backgrounds and object fills are textured (smooth noise, stripes, gradients) so that colour
alone does not give a mask away.

Objects are painted one over the other; an annotation is the *visible* part only: the object's
polygons when nothing covers it, otherwise the visible pixels as compressed RLE. ``bbox`` is the
tight box and ``area`` the pixel count of the visible mask; ``iscrowd`` is 0.

Files written by :func:`make_synthetic`::

    OUT/images/train_000000.png ...     the images of both splits, in one folder
    OUT/annotations.json                 when there is no validation split, or
    OUT/train.json + OUT/val.json        when ``num_val_images > 0`` (images val_000000.png ...)

Image ``i`` of a split is drawn from its own random stream seeded by ``(seed, split, i)``: the
same seed gives byte-identical files, and adding a validation split leaves the training images
unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from refinemask.errors import RefineMaskError

CATEGORY_NAMES: tuple[str, ...] = ("stroke", "star", "comb", "ring", "tailed_blob")
"""Category names; the COCO category id of ``CATEGORY_NAMES[i]`` is ``i + 1``."""

MIN_SIZE = 64
MAX_SIZE = 4096

# Polygon vertices are stored with this many decimals, and the objects are drawn from the
# rounded coordinates, so the json reproduces the drawn pixels exactly.
_DECIMALS = 2
# Spacing of polygon vertices along curves, in pixels: fine enough that the chord error on the
# tightest bends is far below a pixel.
_STEP = 2.5
_MAX_PLACEMENT_TRIES = 20


@dataclass(frozen=True)
class SyntheticPreset:
    """How crowded, thin and textured the images are. Lengths in pixels, colours in 0-255."""

    name: str
    objects_per_image: tuple[int, int]  # inclusive range of objects tried per image
    object_size: tuple[float, float]  # object extent as a fraction of the image side
    thin_width: tuple[float, float]  # width of the thin parts (strokes, spikes, teeth, rings)
    background_texture: float  # amplitude of the background pattern
    object_texture: float  # amplitude of the pattern inside objects
    min_contrast: float  # minimum RGB distance between object and background base colours
    min_visible_fraction: float  # an object may not be covered beyond this by later ones
    min_area: int  # smallest visible pixel count of an annotated object
    pixel_noise: float  # standard deviation of per-pixel noise added to the whole image


PRESETS: dict[str, SyntheticPreset] = {
    # Learnable on a CPU in minutes: few large objects, strong contrast, mild textures, but
    # the thin parts are still only 2-4 px wide, so boundary quality shows in the scores.
    "easy": SyntheticPreset(
        name="easy",
        objects_per_image=(1, 3),
        object_size=(0.4, 0.7),
        thin_width=(2.0, 4.0),
        background_texture=16.0,
        object_texture=10.0,
        min_contrast=150.0,
        min_visible_fraction=0.85,
        min_area=40,
        pixel_noise=2.0,
    ),
    # Crowded, 1-2 px thin parts, strong textures, weak contrast and much occlusion.
    "hard": SyntheticPreset(
        name="hard",
        objects_per_image=(3, 8),
        object_size=(0.2, 0.5),
        thin_width=(1.0, 2.0),
        background_texture=55.0,
        object_texture=40.0,
        min_contrast=60.0,
        min_visible_fraction=0.4,
        min_area=16,
        pixel_noise=6.0,
    ),
}


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


def render_scene(rng: np.random.Generator, size: int, preset: SyntheticPreset) -> SyntheticScene:
    """Draw one S×S image: a textured background and objects painted one over the other.

    Each object is tried at up to a few random shapes and places; a placement is kept only if
    the object is large enough and leaves every earlier object at least
    ``preset.min_visible_fraction`` (and ``preset.min_area`` pixels) visible, so every painted
    object is annotated.
    """
    canvas = _texture(
        rng, (0, 0, size, size), _random_colour(rng), preset.background_texture, rng.integers(1, 3)
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
        colour = _object_colour(rng, background_colour, preset.min_contrast)
        _paint(rng, canvas, instance.mask, colour, preset.object_texture)
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


def image_rng(seed: int, split_index: int, image_index: int) -> np.random.Generator:
    """The random stream of one image: independent of every other image and split."""
    return np.random.default_rng(np.random.SeedSequence([seed, split_index, image_index]))


# --- writing ----------------------------------------------------------------------------------


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


# --- placing objects --------------------------------------------------------------------------


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
        parts = _SHAPES[category_id - 1](rng, radius, thin)
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


# --- shapes -----------------------------------------------------------------------------------
# Each shape function returns the object as a list of polygons ((K, 2) float arrays of x, y)
# around the origin; the object's pixels are their union. ``radius`` is about half the object's
# extent, ``thin`` the width of its thin parts. Curves bend by at most pi in total, which keeps
# each centre line free of self-crossings, and their curvature radius stays above the width, so
# the offset outlines do not fold.


def _curve(start: np.ndarray, heading: float, length: float, curvature: np.ndarray) -> np.ndarray:
    """(K, 2) points of a curve of ``length`` starting at ``start`` in direction ``heading``, with
    the given curvature (1/px) at each of its K points."""
    steps = len(curvature) - 1
    step = length / steps
    headings = heading + np.concatenate([[0.0], np.cumsum(curvature[:-1] * step)])
    moves = np.stack([np.cos(headings[:-1]), np.sin(headings[:-1])], axis=1) * step
    return np.asarray(start, dtype=np.float64) + np.concatenate(
        [np.zeros((1, 2)), np.cumsum(moves, axis=0)]
    )


def _bent_curvature(
    rng: np.random.Generator, length: float, total_turn: float, max_width: float
) -> np.ndarray:
    """Smoothly varying curvature along ``length`` (C- or S-shaped) turning ``total_turn`` radians
    in total (absolute), capped so the curvature radius stays above ``max_width``."""
    count = max(int(math.ceil(length / _STEP)), 2) + 1
    s = np.linspace(0.0, 1.0, count)
    profile = rng.uniform(-1.0, 1.0) + sum(
        rng.uniform(-1.0, 1.0)
        * np.sin(2 * math.pi * rng.uniform(0.3, 1.5) * s + rng.uniform(0, 2 * math.pi))
        for _ in range(2)
    )
    turned = np.abs(profile[:-1]).sum() * length / (count - 1)
    curvature = profile * (total_turn / max(turned, 1e-9))
    return np.clip(curvature, -1.0 / max_width, 1.0 / max_width)


def _arc_curvature(length: float, turn: float) -> np.ndarray:
    count = max(int(math.ceil(length / _STEP)), 2) + 1
    return np.full(count, turn / length)


def _band(centre: np.ndarray, widths: np.ndarray | float, closed: bool = False) -> np.ndarray:
    """(2K, 2) outline of a band of the given widths around a (K, 2) centre line."""
    if closed:
        tangent = np.roll(centre, -1, axis=0) - np.roll(centre, 1, axis=0)
    else:
        tangent = np.gradient(centre, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    half = 0.5 * np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(centre),))[:, None]
    return np.concatenate([centre + normal * half, (centre - normal * half)[::-1]])


def _closed_outline(radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _stroke(rng: np.random.Generator, radius: float, thin: float) -> list[np.ndarray]:
    """A curved line, sometimes tapering from a thicker body to a thin end."""
    length = 2.0 * radius * rng.uniform(1.0, 1.4)
    body = thin * rng.uniform(1.0, 1.8) if rng.random() < 0.5 else thin
    curvature = _bent_curvature(rng, length, rng.uniform(0.4, 1.0) * math.pi, 2.0 * body)
    centre = _curve(np.zeros(2), 0.0, length, curvature)
    widths = np.linspace(body, thin, len(centre))
    return [_band(centre - centre.mean(axis=0), widths)]


def _star(rng: np.random.Generator, radius: float, thin: float) -> list[np.ndarray]:
    """A round body with 5-11 thin, tapering, slightly bent spikes."""
    spikes = int(rng.integers(5, 12))
    body_radius = radius * rng.uniform(0.18, 0.3)
    angles = np.linspace(
        0, 2 * math.pi, max(12, int(2 * math.pi * body_radius / _STEP)), endpoint=False
    )
    parts = [_closed_outline(np.full(len(angles), body_radius), angles)]
    base = max(thin, min(2.5 * thin + 1.0, 0.8 * 2 * math.pi * body_radius / spikes))
    for k in range(spikes):
        direction = 2 * math.pi * (k + rng.uniform(-0.2, 0.2)) / spikes
        start = 0.7 * body_radius * np.array([math.cos(direction), math.sin(direction)])
        length = radius * rng.uniform(0.6, 1.0) - 0.7 * body_radius
        curvature = _arc_curvature(length, rng.uniform(-0.6, 0.6))
        centre = _curve(start, direction, length, curvature)
        parts.append(_band(centre, np.linspace(base, thin, len(centre))))
    return parts


def _comb(rng: np.random.Generator, radius: float, thin: float) -> list[np.ndarray]:
    """A gently curved spine with thin teeth on its outer side."""
    spine_width = max(2.0 * thin, 3.0) * rng.uniform(1.0, 1.5)
    spine_length = 2.0 * radius * rng.uniform(0.9, 1.2)
    spine_curvature = _bent_curvature(
        rng, spine_length, rng.uniform(0.1, 0.5) * math.pi, 2.0 * spine_width
    )
    spine = _curve(np.zeros(2), 0.0, spine_length, spine_curvature)
    spine -= spine.mean(axis=0)
    parts = [_band(spine, spine_width)]
    # Teeth on the convex side of the spine spread apart instead of running into each other.
    side = -1.0 if spine_curvature.sum() > 0 else 1.0
    spacing = 3.0 * thin + 3.0
    teeth = int(min(rng.integers(5, 13), spine_length / spacing))
    tooth_length = radius * rng.uniform(0.4, 0.8)
    bend = rng.uniform(-0.5, 0.5)
    tangent = np.gradient(spine, axis=0)
    for index in np.linspace(0.05 * len(spine), 0.95 * (len(spine) - 1), max(teeth, 2)).astype(int):
        tx, ty = tangent[index]
        direction = math.atan2(ty, tx) + side * math.pi / 2
        length = tooth_length * rng.uniform(0.85, 1.15)
        centre = _curve(spine[index], direction, length, _arc_curvature(length, bend))
        parts.append(_band(centre, thin))
    return parts


def _ring(rng: np.random.Generator, radius: float, thin: float) -> list[np.ndarray]:
    """A thin, slightly wobbly elliptic ring; closed, or open with a gap."""
    a = radius * rng.uniform(0.7, 1.0)
    b = a * rng.uniform(0.6, 1.0)
    count = max(24, int(math.pi * (a + b) / _STEP))
    angles = np.linspace(0, 2 * math.pi, count, endpoint=False)
    wobble = 1.0 + rng.uniform(0.0, 0.06) * np.sin(
        rng.integers(2, 5) * angles + rng.uniform(0, 2 * math.pi)
    )
    centre = np.stack([a * wobble * np.cos(angles), b * wobble * np.sin(angles)], axis=1)
    width = thin * rng.uniform(1.0, 1.4)
    outline = _band(centre, width, closed=True)
    outer, inner = outline[:count], outline[count:][::-1]
    if rng.random() < 0.3:
        keep = np.arange(int(count * rng.uniform(0.08, 0.2)), count)
        return [np.concatenate([outer[keep], inner[keep][::-1]])]
    # A polygon cannot have a hole, so a closed ring is the union of two overlapping halves.
    halves = [np.arange(0, count // 2 + 3), np.arange(count // 2 - 3, count + 3) % count]
    return [np.concatenate([outer[keep], inner[keep][::-1]]) for keep in halves]


def _tailed_blob(rng: np.random.Generator, radius: float, thin: float) -> list[np.ndarray]:
    """A lumpy blob with one or two long, curling, tapering tails."""
    blob_radius = radius * rng.uniform(0.3, 0.5)
    angles = np.linspace(
        0, 2 * math.pi, max(16, int(2 * math.pi * blob_radius / _STEP)), endpoint=False
    )
    radii = blob_radius * (
        1.0
        + sum(
            rng.uniform(0.0, 0.1) * np.sin(k * angles + rng.uniform(0, 2 * math.pi))
            for k in (2, 3, 4)
        )
    )
    parts = [_closed_outline(radii, angles)]
    direction = rng.uniform(0, 2 * math.pi)
    tails = 2 if rng.random() < 0.35 else 1
    for _ in range(tails):
        start = 0.6 * blob_radius * np.array([math.cos(direction), math.sin(direction)])
        length = radius * rng.uniform(0.8, 1.4)
        base = thin * rng.uniform(2.0, 3.0)
        curvature = _bent_curvature(rng, length, rng.uniform(0.3, 0.9) * math.pi, 2.0 * base)
        centre = _curve(start, direction, length, curvature)
        parts.append(_band(centre, np.linspace(base, thin, len(centre))))
        direction += rng.uniform(0.6, 1.4) * math.pi
    return parts


_SHAPES = (_stroke, _star, _comb, _ring, _tailed_blob)  # in CATEGORY_NAMES order


# --- colours and textures ---------------------------------------------------------------------


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def _object_colour(
    rng: np.random.Generator, background: np.ndarray, min_contrast: float
) -> np.ndarray:
    for _ in range(50):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - background) >= min_contrast:
            return colour
    # rare: the background is near mid-grey, where few colours are far enough; its complement
    # is as far as it gets
    return 255.0 - background


def _pattern(rng: np.random.Generator, box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) float32 in [-1, 1]: smooth noise, stripes or a gradient over ``box``.

    ``box`` is (x0, y0, x1, y1) in image pixels, so stripes and gradients line up across boxes.
    """
    x0, y0, x1, y1 = box
    height, width = y1 - y0, x1 - x0
    kind = int(rng.integers(0, 3))
    if kind == 0:
        cell = rng.uniform(3.0, 24.0)
        grid = rng.uniform(-1.0, 1.0, size=(int(height / cell) + 2, int(width / cell) + 2)).astype(
            np.float32
        )
        smooth = Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(smooth, dtype=np.float32)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    if kind == 1:
        period = rng.uniform(4.0, 20.0)
        wave = np.sin(2 * math.pi * along / period + rng.uniform(0, 2 * math.pi))
        return (np.tanh(3.0 * wave) / math.tanh(3.0)).astype(np.float32)
    span = max(float(along.max() - along.min()), 1.0)
    return (2.0 * (along - along.min()) / span - 1.0).astype(np.float32)


def _texture(
    rng: np.random.Generator,
    box: tuple[int, int, int, int],
    colour: np.ndarray,
    amplitude: float,
    layers: int,
) -> np.ndarray:
    """(h, w, 3) float32: ``colour`` modulated by ``layers`` random patterns, each along its own
    colour direction, so a texture changes hue as well as brightness."""
    x0, y0, x1, y1 = box
    texture = np.empty((y1 - y0, x1 - x0, 3), dtype=np.float32)
    texture[:] = colour
    for layer in range(layers):
        direction = rng.uniform(-1.0, 1.0, size=3)
        direction /= max(np.abs(direction).max(), 1e-6)
        texture += (
            (amplitude / (1 + layer)) * _pattern(rng, box)[..., None] * direction.astype(np.float32)
        )
    return texture


def _paint(
    rng: np.random.Generator,
    canvas: np.ndarray,
    mask: np.ndarray,
    colour: np.ndarray,
    amplitude: float,
) -> None:
    """Fill the ``mask`` pixels of ``canvas`` (S, S, 3) with a texture; hard edges, no blending."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    texture = _texture(rng, box, colour, amplitude, int(rng.integers(1, 3)))
    region = canvas[box[1] : box[3], box[0] : box[2]]
    inside = mask[box[1] : box[3], box[0] : box[2]]
    region[inside] = texture[inside]
