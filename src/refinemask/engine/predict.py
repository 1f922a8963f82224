"""Predict instance masks on images: the :class:`Predictor` API and ``refinemask predict``.

Shapes: N detections of one image; H x W the image size.

    >>> from refinemask import Predictor
    >>> predictor = Predictor("output/model_final.safetensors", score_thresh=0.5)
    >>> result = predictor("street.jpg")          # or a PIL image, an HxWx3 uint8 array, a CHW tensor
    >>> result["masks"].shape                      # (N, H, W) bool
    >>> results = predictor(["a.jpg", "b.png"])   # a list in, a list out
    >>> result = predictor("street.jpg", boxes=[[10, 20, 200, 180]], labels=[1])  # masks for your boxes
    >>> result = predictor("scene.tif", masks="rle")  # large images: COCO RLEs, no (N, H, W) map

:func:`predict_files` (behind the command) writes one PNG overlay per image (masks and boxes
drawn with ``torchvision.utils``) and one COCO results json with RLE masks, whose category ids
come from the model's ``label_to_category``.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from refinemask.data.categories import label_name
from refinemask.data.images import as_image_tensor
from refinemask.engine.inference import detect
from refinemask.errors import RefineMaskError
from refinemask.modeling.box_masks import MaskWindows, window_masks

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# distinct, readable colours for the overlays (label l uses PALETTE[(l - 1) % len])
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
]


class Predictor:
    """A trained model ready to segment images.

    Args:
        model_or_path: a model (e.g. from :func:`refinemask.load_model`) or the path of a
            ``.safetensors`` weights file or training checkpoint.
        device: where to run ("cpu", "cuda", "cuda:1").
        score_thresh: keep detections scoring at least this; None keeps the model's own
            threshold (``model.box_score_thresh``).
        mask_threshold: probability at which a mask pixel counts as the object (0.5, as the
            official code).

    Calling it with one image returns one dict, with a list of images a list of dicts:
    ``boxes`` float32 (N, 4) XYXY pixels, ``labels`` int64 (N,) in 1..C, ``scores`` (N,),
    ``masks`` bool (N, H, W), on the CPU. ``category_names[label - 1]`` names a label;
    ``label_to_category`` maps it to the dataset's category id.

    Masks for boxes from elsewhere (another detector, hand-drawn): ``predictor(image,
    boxes=B, labels=L)`` with B (N, 4) XYXY in the image's pixels and L (N,) in 1..C (for a list
    of images, a list of each). The result has one mask per given box, in the given order:
    ``boxes`` are the given boxes, ``labels`` the given labels, and ``scores`` the box head's
    probability of each label; ``score_thresh`` does not apply. Without labels the box head
    classifies each box (its most probable class, and that probability as the score): the
    mask stages are class-specific, so a class is needed, and the box head is the model's own
    classifier of such boxes. A box without area or wholly outside the image is a one-line
    error; the part of a box outside the image is clipped (masks stop at the image border).

    After a call without given boxes, ``best_scores`` holds the highest score any box of each
    image had, kept or not: what a lower threshold would show when an image comes back empty
    (the latest call's: with threads sharing a Predictor, their results are each their own,
    ``best_scores`` the last one's).

    ``predictor(image, coarse=True)`` adds ``coarse_masks`` bool (N, H, W): RefineMask's 28 x 28
    stage (before the boundary refinement) of the same detections, pasted into the image as the
    final masks are (None for a Mask R-CNN model). ``refinemask serve`` shows them.

    ``predictor(image, tile=SIZE, overlap=FRACTION)`` predicts an image far larger than the
    model's input tile by tile, each tile at the model's own scale, and merges the objects that
    tiles share into one detection each (:mod:`refinemask.engine.tiling`): for aerial scenes,
    slides and other large images whose objects would vanish if the image were shrunk whole.

    ``masks=`` chooses the form of ``masks`` (and ``coarse_masks``): "image" (default) bool
    (N, H, W); "box" a :class:`~refinemask.modeling.box_masks.MaskWindows` (each mask a bool
    window at its box: memory grows with the boxes' areas, not with N x H x W); "rle" a list of
    N COCO compressed RLEs (``counts`` a str). Whatever the form, no full-image map per
    detection is made before it (the model returns box-local masks to the Predictor).
    """

    def __init__(
        self,
        model_or_path: torch.nn.Module | str | Path,
        device: str | torch.device = "cpu",
        score_thresh: float | None = None,
        mask_threshold: float = 0.5,
    ):
        self.device = torch.device(device)
        if isinstance(model_or_path, (str, Path)):
            from refinemask.model_files import load_model

            model = load_model(model_or_path, device=self.device)
        else:
            model = model_or_path.to(self.device).eval()
        self.model = model
        from refinemask.data.images import scaling_options
        from refinemask.model_files import model_categories

        self.label_to_category, self.category_names = model_categories(model)
        self.scaling = scaling_options(model.config)  # >8-bit images as in training
        self.score_thresh = score_thresh
        self.mask_threshold = mask_threshold
        self.best_scores: list[float] = []

    def __call__(
        self, images: Any, boxes: Any = None, labels: Any = None, coarse: bool = False, masks: str = "image",
        tile: int | None = None, overlap: float = 0.2,
    ) -> dict | list[dict]:
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        self.best_scores = []
        if masks not in MASK_FORMATS:
            raise RefineMaskError(f"masks={masks!r}: choose one of {', '.join(map(repr, MASK_FORMATS))}")
        if tile is not None:
            if boxes is not None or labels is not None or coarse:
                raise RefineMaskError("tile= is for the model's own detections: not with boxes=, labels= or coarse=True")
            outputs = [self._tiled(image, tile, overlap, masks) for image in batch]
            return outputs[0] if single else outputs
        if boxes is not None:
            if coarse:
                raise RefineMaskError("coarse=True is for the model's own detections, not for given boxes")
            return self._given_boxes(batch, single, boxes, labels, masks)
        if labels is not None:
            raise RefineMaskError("labels are for given boxes: pass boxes= as well")
        outputs, self.best_scores = self._own_detections(batch, coarse, masks)
        return outputs[0] if single else outputs

    def _own_detections(self, batch: list, coarse: bool, masks: str) -> tuple[list[dict], list[float]]:
        """The model's detections of each image, and each image's best score, kept or not.

        Everything this call needs goes to the model's forward as options (threshold, coarse
        stage, best score): nothing on the model or on ``self`` changes, so threads may share
        a Predictor.
        """
        heads = self.model.roi_heads
        # filtering before NMS keeps the same detections above the threshold and spares the
        # mask head the rest; the model's own threshold stays the floor
        thresh = None if self.score_thresh is None else max(float(heads.score_thresh), self.score_thresh)
        with_coarse = coarse and heads.mask_head.coarse_stage is not None
        outputs, best = [], []
        for image in batch:  # one image a forward
            output = detect(
                self.model, [as_image_tensor(image, **self.scaling)], self.device, mask_output="box",
                score_thresh=thresh, coarse=with_coarse, best_score=True,
            )[0]
            best.append(float(output.pop("best_score")))
            if coarse and not with_coarse:
                output["coarse_masks"] = None  # a head without a coarse stage (Mask R-CNN)
            outputs.append(self._binarise(output, masks))
        return outputs, best

    def _tiled(self, image: Any, tile: int, overlap: float, masks: str) -> dict:
        """One image predicted tile by tile and merged (:func:`refinemask.engine.tiling.predict_tiled`)."""
        from refinemask.engine.tiling import check_tiling, predict_tiled

        check_tiling(tile, overlap)
        tensor = as_image_tensor(image, **self.scaling)
        best: list[float] = []

        def predict_tile(part: torch.Tensor) -> dict:
            (result,), (score,) = self._own_detections([part], False, "box")
            best.append(score)
            return result

        result = predict_tiled(predict_tile, tensor, int(tile), float(overlap))
        self.best_scores = [max(best, default=0.0)]
        result["masks"] = mask_form(result["masks"], masks)
        return result

    def _given_boxes(self, batch: list, single: bool, boxes: Any, labels: Any, masks: str) -> dict | list[dict]:
        """One mask per given box: the model's forward with ``boxes``/``labels`` (see the class)."""
        per_image_boxes = [boxes] if single else list(boxes)
        per_image_labels = [labels] if single else (list(labels) if labels is not None else [None] * len(batch))
        if len(per_image_boxes) != len(batch) or len(per_image_labels) != len(batch):
            raise RefineMaskError(f"give one box list (and label list) per image: {len(batch)} images, {len(per_image_boxes)} box lists")
        outputs = []
        for image, image_boxes, image_labels in zip(batch, per_image_boxes, per_image_labels):
            tensor = as_image_tensor(image, **self.scaling)
            output = detect(
                self.model, [tensor], self.device, boxes=[image_boxes], labels=None if image_labels is None else [image_labels],
                mask_output="box",
            )[0]
            result = self._binarise(output, masks, threshold=False)
            # the boxes as given (the model returns them clipped to the image)
            result["boxes"] = torch.as_tensor(image_boxes, dtype=torch.float32).reshape(-1, 4).cpu()
            outputs.append(result)
        return outputs[0] if single else outputs

    def _binarise(self, output: dict, masks: str, threshold: bool = True) -> dict:
        """Detections kept (score threshold) on the CPU, masks binarised in the form ``masks``."""
        keep = torch.ones_like(output["scores"], dtype=torch.bool)
        if threshold and self.score_thresh is not None:
            keep = output["scores"] >= self.score_thresh
        result = {
            "boxes": output["boxes"][keep].float().cpu(),
            "labels": output["labels"][keep].cpu(),
            "scores": output["scores"][keep].cpu(),
        }
        for key in ("masks", "coarse_masks") if "coarse_masks" in output else ("masks",):
            if output[key] is None:
                result[key] = None
                continue
            result[key] = mask_form(output[key][keep].binarize(self.mask_threshold), masks)
        return result


MASK_FORMATS = ("image", "box", "rle")


def mask_form(windows: MaskWindows, form: str):
    """Binary masks as ``Predictor(...)(..., masks=form)`` returns them (see the class)."""
    if form == "box":
        return windows
    if form == "rle":
        from refinemask.evaluation.coco import encode_mask_windows

        return encode_mask_windows(windows)
    return windows.to_image()


OVERLAY_MIN_SIDE = 768  # px: the long side small images are enlarged to, so that labels read
HALO = (20, 20, 20)  # the ring drawn just outside each mask's outline


def overlay_scale(height: int, width: int, min_side: int = OVERLAY_MIN_SIDE) -> int:
    """The whole factor that enlarges an image to a long side of at least ``min_side`` (1 if it has one)."""
    return max(1, math.ceil(min_side / max(height, width, 1)))


def mask_edges(mask: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bool (H, W) mask -> (outline, halo), bool (H, W) each.

    ``outline``: the mask's pixels within ``width`` pixels of a pixel outside it (square
    neighbourhood; beyond the image counts as outside). ``halo``: the pixels outside the
    mask within ``max(1, width // 2)`` of it.
    """
    halo_width = max(1, width // 2)
    outside = (~mask).float()[None, None]
    near_outside = F.max_pool2d(F.pad(outside, (width,) * 4, value=1.0), 2 * width + 1, stride=1)[0, 0] > 0
    near_mask = F.max_pool2d(mask.float()[None, None], 2 * halo_width + 1, stride=1, padding=halo_width)[0, 0] > 0
    return mask & near_outside, near_mask & ~mask


def _label_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def draw_overlay(
    image: torch.Tensor,
    prediction: dict,
    category_names: Sequence[str],
    alpha: float = 0.4,
    min_side: int = OVERLAY_MIN_SIDE,
    labels: bool = True,
    fill: bool = True,
) -> torch.Tensor:
    """uint8 (3, s*H, s*W): ``image`` (float in [0, 1] or uint8) with masks, boxes and labels drawn.

    Small images are enlarged by s = :func:`overlay_scale` (nearest neighbour: pixels and mask
    edges stay sharp), so that a 256 px image's labels can be read. Each mask is filled with
    its class colour at ``alpha`` and outlined in that colour at full strength over a dark
    halo (:func:`mask_edges`), so that a mask shows even on an object of its own colour.
    For dense images (hundreds of nuclei), ``labels=False`` leaves out the boxes and their name
    and score tags, and ``fill=False`` draws the outlines only, so the image shows through.

    ``prediction["masks"]``: bool (N, H, W) or :class:`MaskWindows`. Each mask is drawn over its
    own window (widened by the outline), so a large image costs its uint8 canvas plus the
    windows, never a float copy of the image or a full-image map per mask.
    """
    from PIL import Image, ImageDraw

    # one float temporary (clamp's copy) rather than three, for large images
    canvas = image if image.dtype == torch.uint8 else image.clamp(0, 1).mul_(255).round_().to(torch.uint8)
    height, width = canvas.shape[-2:]
    scale = overlay_scale(height, width, min_side)
    canvas = canvas.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    classes = prediction["labels"].tolist()
    if not classes:
        return canvas
    colours = [PALETTE[(label - 1) % len(PALETTE)] for label in classes]
    windows = window_masks(prediction["masks"])
    line = max(2, round(max(canvas.shape[-2:]) / 384))  # 2 px at 768, 4 px at 1536
    big_h, big_w = canvas.shape[-2:]

    # each mask at the canvas's scale in its window widened by the outline: the edges of a
    # crop, not of the whole image (beyond the image counts as outside, as beyond the crop)
    crops = []
    for (top, left), mask, colour in zip(windows.origins, windows.masks, colours):
        if not mask.any():
            continue
        y0, x0 = max(top * scale - line, 0), max(left * scale - line, 0)
        y1 = min((top + mask.shape[0]) * scale + line, big_h)
        x1 = min((left + mask.shape[1]) * scale + line, big_w)
        crop = torch.zeros((y1 - y0, x1 - x0), dtype=torch.bool)
        big = mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        crop[top * scale - y0 : top * scale - y0 + big.shape[0], left * scale - x0 : left * scale - x0 + big.shape[1]] = big
        crops.append(((slice(y0, y1), slice(x0, x1)), crop, colour))
    for (rows, cols), crop, colour in crops if fill else ():
        region = canvas[:, rows, cols].float()
        tint = torch.tensor(colour, dtype=torch.float32)[:, None]
        region[:, crop] = region[:, crop] * (1 - alpha) + tint * alpha
        canvas[:, rows, cols] = region.round().clamp(0, 255).to(torch.uint8)
    # edges after every fill, and every halo before any outline, so that no mask hides another's outline
    edges = [(where, *mask_edges(crop, line), colour) for where, crop, colour in crops]
    for (rows, cols), _, halo, _ in edges:
        canvas[:, rows, cols][:, halo] = torch.tensor(HALO, dtype=torch.uint8)[:, None]
    for (rows, cols), outline, _, colour in edges:
        canvas[:, rows, cols][:, outline] = torch.tensor(colour, dtype=torch.uint8)[:, None]

    if not labels:
        return canvas
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(picture)
    font = _label_font(max(12, round(max(picture.size) / 48)))  # 16 px at 768
    pad = max(2, line)
    for box, label, score, colour in zip(prediction["boxes"].tolist(), classes, prediction["scores"].tolist(), colours):
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=line)
        name = label_name(label, category_names)
        text = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_h = bottom - top + 2 * pad
        tag_y = y0 - tag_h if y0 >= tag_h else y0  # above the box, or inside it at the image's top
        draw.rectangle([x0, tag_y, x0 + right - left + 2 * pad, tag_y + tag_h - 1], fill=colour)
        dark_text = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140
        draw.text((x0 + pad - left, tag_y + pad - top), text, fill=(0, 0, 0) if dark_text else (255, 255, 255), font=font)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)



def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named by ``inputs``: files as given, folders' image files sorted by name.

    A folder without images among several inputs is skipped with a warning line (one empty
    folder should not stop a batch over many); if no input has an image, that is the error.
    """
    files: list[Path] = []
    empty_folders: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                empty_folders.append(path)
                if len(inputs) > 1:
                    logger.warning("skipped %s: no image file (%s) in it", path, ", ".join(IMAGE_SUFFIXES))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise RefineMaskError(f"image or folder not found: {path}")
    if not files:
        if empty_folders:
            raise RefineMaskError(
                f"no image file ({', '.join(IMAGE_SUFFIXES)}) in folder {', '.join(map(str, empty_folders))}"
            )
        raise RefineMaskError("no image given")
    return files


def _image_ids(files: Sequence[Path], annotations: str | Path | None) -> list[int]:
    """COCO image ids of ``files``: from ``annotations`` (matched by file name), else 1..N."""
    if annotations is None:
        return list(range(1, len(files) + 1))
    from refinemask.data.validation import load_annotation_json

    data = load_annotation_json(annotations)
    by_name: dict[str, int] = {}
    for entry in data["images"]:
        if isinstance(entry, dict) and "file_name" in entry and "id" in entry:
            by_name.setdefault(str(entry["file_name"]), int(entry["id"]))
            by_name.setdefault(Path(str(entry["file_name"])).name, int(entry["id"]))
    ids = []
    for path in files:
        if path.name not in by_name:
            raise RefineMaskError(f"image {path} is not listed in {annotations} (matched by file name)")
        ids.append(by_name[path.name])
    return ids


def overlay_path(out_dir: Path, image_path: Path, used_names: set[str]) -> Path:
    """``out_dir/<image stem>.png``, or ``<stem>_2.png``, ... when an earlier input had that stem."""
    name = f"{image_path.stem}.png"
    suffix = 1
    while name in used_names:
        suffix += 1
        name = f"{image_path.stem}_{suffix}.png"
    used_names.add(name)
    return out_dir / name


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    annotations: str | Path | None = None,
    overlays: bool = True,
    progress: bool = True,
    overlay_labels: bool = True,
    overlay_fill: bool = True,
    tile: int | None = None,
    overlap: float = 0.2,
) -> Path:
    """Predict every image of ``inputs``; write ``out_dir/<name>.png`` overlays and
    ``out_dir/results.json`` (COCO results with RLE masks, plus each image's ``file_name`` and
    each detection's ``category_name``).

    ``overlay_labels``, ``overlay_fill``: :func:`draw_overlay`'s ``labels`` and ``fill``.
    ``tile``/``overlap``: predict each image tile by tile (see :class:`Predictor`).

    Returns the results path.
    """
    from PIL import Image
    from tqdm import tqdm

    from refinemask.data.images import load_image
    from refinemask.evaluation import predictions_to_coco_results

    files = collect_images(inputs)
    image_ids = _image_ids(files, annotations)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    used_names: set[str] = set()
    empty = 0
    category_name = {cat: label_name(label, predictor.category_names) for label, cat in predictor.label_to_category.items()}
    for path, image_id in tqdm(list(zip(files, image_ids)), desc="predict", unit="image", disable=not progress):
        image = load_image(path, **predictor.scaling)
        prediction = predictor(image, masks="box", tile=tile, overlap=overlap)  # no full-image map per detection
        if len(prediction["scores"]) == 0:
            empty += 1
            tqdm.write(f"{path}: {_nothing_found(predictor)}")
        rows = predictions_to_coco_results([prediction], [image_id], predictor.label_to_category)
        for row in rows:
            row["file_name"] = path.name
            row["category_name"] = category_name[row["category_id"]]
        results.extend(rows)
        if overlays:
            drawn = draw_overlay(image, prediction, predictor.category_names, labels=overlay_labels, fill=overlay_fill)
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(overlay_path(out_dir, path, used_names))
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(results))
    if empty and len(files) > 1:
        tqdm.write(f"{empty} of {len(files)} images have no detection scoring at least {predictor.score_thresh:g}")
    return results_path


def _nothing_found(predictor: Predictor) -> str:
    """Why the last image came back empty, and the flag that would show its best boxes."""
    best = predictor.best_scores[-1] if predictor.best_scores else 0.0
    threshold = predictor.score_thresh
    floor = float(predictor.model.roi_heads.score_thresh)  # the model's own; below it nothing is kept
    if threshold is None or best < floor:
        return f"no detection (the best box scored {best:.3f}, below the model's own threshold {floor:g})"
    # both rounded down: the best box scores at least the suggested threshold, and the score
    # shown never reads above the box's (0.5699 as 0.569, not 0.570 beside a suggested 0.56)
    suggestion = max(math.floor(best * 100) / 100, floor)
    return (
        f"no detection scoring at least {threshold:g}; the best box scored {math.floor(best * 1000) / 1000:.3f} "
        f"(--score-thresh {suggestion:g} shows it)"
    )
