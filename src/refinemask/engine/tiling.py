"""Tiled (sliced) inference: images far larger than the model's input, cut into overlapping tiles.

Shapes: T tiles of one H x W image; N_t detections of tile t; N the merged detections.

A 4096 x 4096 aerial scene shrunk to a model's 800 px loses every object under a few pixels.
:func:`predict_tiled` instead runs the model on each ``tile`` x ``tile`` window (each at the
model's own scale: a tile of the model's input size is not resized, so objects keep the pixel
size they were trained at), moves each tile's detections into the image, and merges the
detections that several tiles saw:

* two detections of different tiles are one object when they have the same label and their
  masks agree where both tiles saw the image: IoU >= ``match_iou`` inside the two tiles'
  intersection. That catches an object cut by a seam (each tile holds a piece; the pieces
  coincide in the overlap) and a whole object seen twice, by mask overlap rather than box
  overlap: a piece's box is cut at the tile border and overlaps the whole box poorly.
* a merged object's mask is the union of its pieces' masks, at full resolution, each kept
  over its own window (:class:`~refinemask.modeling.box_masks.MaskWindows`, RLE-ready); its box
  the union of their boxes, its score the highest.

SAHI (the reference library for sliced inference) is not used: its merge matches boxes (IoU or
intersection over the smaller box, with shapely), its masks are full-image bool maps or polygons,
and it wraps models behind its own classes; here the masks stay box-local and the match is made
on them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from refinemask.errors import RefineMaskError
from refinemask.modeling.box_masks import MaskWindows


def tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    """Starts of the tiles along one axis of ``length`` pixels: stride ``tile * (1 - overlap)``
    (rounded, at least 1), the last tile flush with the end, one tile when ``length <= tile``."""
    if length <= tile:
        return [0]
    stride = max(1, round(tile * (1 - overlap)))
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every tile of an H x W image, row by row."""
    check_tiling(tile, overlap)
    return [
        (top, left, min(top + tile, height), min(left + tile, width))
        for top in tile_origins(height, tile, overlap)
        for left in tile_origins(width, tile, overlap)
    ]


def check_tiling(tile: int, overlap: float) -> None:
    if int(tile) != tile or tile < 32:
        raise RefineMaskError(f"tile size must be a whole number of pixels, at least 32; got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise RefineMaskError(f"tile overlap must be a fraction in [0, 1), got {overlap}")


def shift_detections(result: dict, top: int, left: int, image_size: tuple[int, int]) -> dict:
    """A tile's result (boxes, labels, scores, masks as MaskWindows) moved into the image."""
    windows = result["masks"]
    return {
        "boxes": result["boxes"] + torch.tensor([left, top, left, top], dtype=result["boxes"].dtype),
        "labels": result["labels"],
        "scores": result["scores"],
        "masks": MaskWindows(image_size, [(t + top, l + left) for t, l in windows.origins], list(windows.masks)),
    }


def _crop(mask: torch.Tensor, origin: tuple[int, int], region: tuple[int, int, int, int]) -> torch.Tensor:
    """The part of a window mask inside ``region`` (top, left, bottom, right), as a region-sized map."""
    top, left, bottom, right = region
    out = torch.zeros((bottom - top, right - left), dtype=torch.bool)
    y0, x0 = max(origin[0], top), max(origin[1], left)
    y1, x1 = min(origin[0] + mask.shape[0], bottom), min(origin[1] + mask.shape[1], right)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = mask[y0 - origin[0] : y1 - origin[0], x0 - origin[1] : x1 - origin[1]]
    return out


def union_windows(origins: list[tuple[int, int]], masks: list[torch.Tensor]) -> tuple[tuple[int, int], torch.Tensor]:
    """The union of window masks, over the window that bounds them all."""
    top = min(o[0] for o in origins)
    left = min(o[1] for o in origins)
    bottom = max(o[0] + m.shape[0] for o, m in zip(origins, masks))
    right = max(o[1] + m.shape[1] for o, m in zip(origins, masks))
    out = torch.zeros((bottom - top, right - left), dtype=torch.bool)
    for (t, l), m in zip(origins, masks):
        out[t - top : t - top + m.shape[0], l - left : l - left + m.shape[1]] |= m
    return (top, left), out


def merge_tiles(tiles: list[tuple[tuple[int, int, int, int], dict]], image_size: tuple[int, int], match_iou: float = 0.5) -> dict:
    """One detection per object from the detections of overlapping tiles (see the module).

    Args:
        tiles: per tile its (top, left, bottom, right) window and its detections already in the
            image's pixels: ``boxes`` (N_t, 4), ``labels`` (N_t,), ``scores`` (N_t,), ``masks``
            :class:`MaskWindows` of the whole image.
        match_iou: mask IoU inside two tiles' intersection above which their detections merge.

    Returns:
        ``boxes``, ``labels``, ``scores``, ``masks`` (MaskWindows) of the N merged detections,
        by decreasing score.
    """
    entries = []  # (tile index, window, box, label, score, origin, mask)
    for t, (window, result) in enumerate(tiles):
        for i in range(len(result["scores"])):
            entries.append((t, window, result["boxes"][i], int(result["labels"][i]), float(result["scores"][i]),
                            result["masks"].origins[i], result["masks"].masks[i]))
    parent = list(range(len(entries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_tile: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        by_tile.setdefault(entry[0], []).append(i)
    for ta, tb in ((ta, tb) for ta in by_tile for tb in by_tile if ta < tb):
        wa, wb = tiles[ta][0], tiles[tb][0]
        shared = (max(wa[0], wb[0]), max(wa[1], wb[1]), min(wa[2], wb[2]), min(wa[3], wb[3]))
        if shared[2] <= shared[0] or shared[3] <= shared[1]:
            continue  # tiles that do not overlap share no object (one tile's are the model's, de-duplicated)
        region = torch.tensor([shared[1], shared[0], shared[3], shared[2]], dtype=torch.float32)
        boxes_a = torch.stack([entries[i][2] for i in by_tile[ta]]).float()
        boxes_b = torch.stack([entries[i][2] for i in by_tile[tb]]).float()
        # candidate pairs: boxes that meet inside the shared region (no mask is cropped for the rest)
        lo = torch.maximum(torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2]), region[:2])
        hi = torch.minimum(torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:]), region[2:])
        for ia, ib in (hi > lo).all(-1).nonzero().tolist():
            a, b = by_tile[ta][ia], by_tile[tb][ib]
            if entries[a][3] != entries[b][3] or find(a) == find(b):
                continue
            piece_a, piece_b = _crop(entries[a][6], entries[a][5], shared), _crop(entries[b][6], entries[b][5], shared)
            union = int((piece_a | piece_b).sum())
            if union and int((piece_a & piece_b).sum()) / union >= match_iou:
                parent[find(b)] = find(a)

    groups: dict[int, list[int]] = {}
    for i in range(len(entries)):
        groups.setdefault(find(i), []).append(i)
    merged = []
    for members in groups.values():
        boxes = torch.stack([entries[i][2] for i in members])
        box = torch.cat([boxes[:, :2].min(0).values, boxes[:, 2:].max(0).values])
        origin, mask = union_windows([entries[i][5] for i in members], [entries[i][6] for i in members])
        merged.append((max(entries[i][4] for i in members), entries[members[0]][3], box, origin, mask))
    merged.sort(key=lambda m: -m[0])
    return {
        "boxes": torch.stack([m[2] for m in merged]) if merged else torch.zeros((0, 4)),
        "labels": torch.tensor([m[1] for m in merged], dtype=torch.int64),
        "scores": torch.tensor([m[0] for m in merged], dtype=torch.float32),
        "masks": MaskWindows(image_size, [m[3] for m in merged], [m[4] for m in merged]),
    }


def predict_tiled(
    predict: Callable[[torch.Tensor], dict], image: torch.Tensor, tile: int, overlap: float = 0.2, match_iou: float = 0.5
) -> dict:
    """Detections of a (3, H, W) image, predicted tile by tile and merged (see the module).

    ``predict``: one (3, h, w) tile -> ``boxes``, ``labels``, ``scores`` and ``masks`` as
    :class:`MaskWindows` in the tile's pixels (``Predictor``'s ``masks="box"`` result).
    """
    height, width = (int(v) for v in image.shape[-2:])
    tiles = []
    for window in tile_windows(height, width, tile, overlap):
        top, left, bottom, right = window
        result = predict(image[:, top:bottom, left:right])
        tiles.append((window, shift_detections(result, top, left, (height, width))))
    return merge_tiles(tiles, (height, width), match_iou)
