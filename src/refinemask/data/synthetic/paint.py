"""Colours and textures of the synthetic images: smooth noise, stripes or gradients, so that
colour alone does not give a mask away.

Shapes: S the side of the square image; h x w the box a texture covers.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """(3,) float RGB, uniform in 0-255."""
    return rng.uniform(0.0, 255.0, size=3)


def contrasting_colour(
    rng: np.random.Generator, background: np.ndarray, min_contrast: float
) -> np.ndarray:
    """(3,) float RGB at least ``min_contrast`` from ``background`` (RGB distance), or its complement."""
    for _ in range(50):
        colour = random_colour(rng)
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


def texture_patch(
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


def paint_object(
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
    texture = texture_patch(rng, box, colour, amplitude, int(rng.integers(1, 3)))
    region = canvas[box[1] : box[3], box[0] : box[2]]
    inside = mask[box[1] : box[3], box[0] : box[2]]
    region[inside] = texture[inside]
