"""The synthetic data set's categories and its two difficulty presets, ``easy`` and ``hard``."""
from __future__ import annotations

from dataclasses import dataclass

CATEGORY_NAMES: tuple[str, ...] = ("stroke", "star", "comb", "ring", "tailed_blob")
"""Category names; the COCO category id of ``CATEGORY_NAMES[i]`` is ``i + 1``."""

# the side of an image, in pixels, that make_synthetic accepts
MIN_SIZE = 64
MAX_SIZE = 4096


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
