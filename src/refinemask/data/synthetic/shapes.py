"""The five synthetic objects as unions of polygons, in :data:`~.presets.CATEGORY_NAMES` order.

Each shape function returns the object as a list of polygons ((K, 2) float arrays of x, y)
around the origin; the object's pixels are their union. ``radius`` is about half the object's
extent, ``thin`` the width of its thin parts. Curves bend by at most pi in total, which keeps
each centre line free of self-crossings, and their curvature radius stays above the width, so
the offset outlines do not fold.
"""
from __future__ import annotations

import math

import numpy as np

# Spacing of polygon vertices along curves, in pixels: fine enough that the chord error on the
# tightest bends is far below a pixel.
_STEP = 2.5


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


SHAPES = (_stroke, _star, _comb, _ring, _tailed_blob)  # in presets.CATEGORY_NAMES order
