"""Export a trained model to ONNX, and run the exported file with onnxruntime.

Shapes: D the fixed number of output rows (``detections_per_img``); K <= D real detections;
N RoIs; M the side of the mask prediction (112 for RefineMask, 28 for Mask R-CNN); h x w the
resized image and Hp x Wp it padded to a multiple of 32; H x W the input image.

What is in the graph and what is glue
-------------------------------------
:class:`DetectorGraph` (exported by :func:`export_onnx`) holds everything learned and
everything that depends on the data: backbone + FPN, anchors, RPN (top-k, NMS), RoI pooling,
box head, per-class NMS, the mask head and RefineMask's boundary-band assembly. Its input is one
normalised, resized, padded image (any size) and that image's size before padding. Its outputs
have D rows whatever the image: the K detections first (best first), then rows of zeros
(score 0, label 0), so every output shape is fixed except for the image.

Two steps stay outside, in numpy (:class:`OnnxPredictor`; a few lines to port to any runtime):

* before the graph (:func:`preprocess`): the resize. Its output size comes from the input
  size by a rounding rule in Python integers (:func:`~refinemask.modeling.transform.rescale_size`),
  which a trace would freeze to the example's size. Normalising and padding go with it.
* after the graph (:func:`paste_masks_numpy`): boxes back to the input image, masks pasted into
  it. In the graph that would produce D full-size masks per image (100 x H x W floats); the
  glue pastes only the detections that are kept.

:func:`export_mask_head_onnx` exports the RefineMask head alone (RoI features, P2, RoIs, labels
-> assembled 112 x 112 logits, any number of RoIs): the part a runtime that already has a
Mask R-CNN can add.

:func:`export_boxes_onnx` exports the model for boxes given from elsewhere (:class:`BoxesGraph`:
image, boxes, labels -> one mask per box, any number of boxes), the graph of
``model(images, boxes=..., labels=...)``; :class:`OnnxBoxesPredictor` runs it.
"""
from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from refinemask.errors import RefineMaskError
from refinemask.modeling.ops import assemble_stage_logits, boxes_to_rois
from refinemask.modeling.transform import (
    PIXEL_MEAN,
    PIXEL_STD,
    padded_size,
    rescale_size,
)

ONNX_FORMAT = "refinemask-onnx-v1"
DEFAULT_OPSET = 17  # RoiAlign's half-pixel mode (aligned=True) needs opset >= 16
SIZE_DIVISOR = 32

DETECTOR_INPUTS = ("images", "image_size")
DETECTOR_OUTPUTS = ("boxes", "scores", "labels", "masks", "num_detections")
HEAD_INPUTS = ("roi_features", "p2", "rois", "labels")
HEAD_OUTPUTS = ("mask_logits",)
BOXES_INPUTS = ("images", "image_size", "boxes", "labels")
BOXES_OUTPUTS = ("masks", "scores")


# --- the graphs --------------------------------------------------------------------------------


def _pad_rows(x: torch.Tensor, rows: int, trailing: tuple[int, ...]) -> torch.Tensor:
    """(K, *trailing) -> (rows, *trailing) for K <= rows, zeros after the K rows.

    Concatenate-then-slice keeps every shape static under tracing (K is only known at run time).
    """
    return torch.cat([x, x.new_zeros((rows, *trailing))], dim=0)[:rows]


class DetectorGraph(nn.Module):
    """The part of a :class:`~refinemask.modeling.detector.RefineMaskRCNN` that goes into ONNX.

    The model's own modules and functions, called as its ``forward`` calls them for one image,
    minus the transform (see the module docstring) and with outputs padded to D rows.

    Args:
        model: a RefineMask or Mask R-CNN model (shares its modules; nothing is copied).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads
        self.max_detections = int(model.config.detections_per_img)
        self.mask_size = mask_size_of(model)

    def forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """
        Args:
            images: (1, 3, Hp, Wp) normalised, resized, zero-padded image (:func:`preprocess`).
            image_size: (2,) int64 [h, w], the resized image's size before padding; boxes are
                clipped to it.

        Returns:
            boxes (D, 4) XYXY in resized-image pixels, scores (D,), labels (D,) int64 in 1..C,
            masks (D, 1, M, M) probabilities, and num_detections () int64 = K. Rows K..D-1 are
            zeros (label 0 = background = no detection).
        """
        heads = self.roi_heads
        features = self.backbone(images)
        # 0-d tensors, not ints: clipping against them stays dynamic in the trace
        image_sizes = [(image_size[0], image_size[1])]
        image_list = ImageList(images, image_sizes)
        proposals, _ = self.rpn(image_list, features)
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals, image_sizes)
        boxes, scores, labels = boxes[0], scores[0], labels[0]
        # MaskRoIHeads.predict_masks loops over chunks of detections in Python, which a trace
        # would unroll to the example's count; here all K detections go through at once
        logits = heads.mask_logits(features, boxes_to_rois([boxes]), labels)
        d, m = self.max_detections, self.mask_size
        labels = _pad_rows(labels, d, ())
        return (
            _pad_rows(boxes, d, (4,)),
            _pad_rows(scores, d, ()),
            labels,
            _pad_rows(logits.sigmoid(), d, (1, m, m)),
            (labels > 0).sum(),
        )


class BoxesGraph(nn.Module):
    """The model's forward for given boxes (``model(images, boxes=, labels=)``) that goes into ONNX.

    :class:`DetectorGraph` with the RPN and the box post-processing replaced by the given boxes,
    as :meth:`MaskRoIHeads.forward <refinemask.modeling.roi_heads.MaskRoIHeads.forward>` does
    with ``given``; labels must be given (no box-head classification in the graph).

    Args:
        model: a RefineMask or Mask R-CNN model (shares its modules; nothing is copied).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.roi_heads = model.roi_heads

    def forward(
        self, images: torch.Tensor, image_size: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            images: (1, 3, Hp, Wp) normalised, resized, zero-padded image (:func:`preprocess`).
            image_size: (2,) int64 [h, w], the resized image's size before padding.
            boxes: (N, 4) XYXY in resized-image pixels (clipped to ``image_size`` here).
            labels: (N,) int64 in 1..C.

        Returns:
            masks (N, 1, M, M) probabilities and scores (N,), the box head's probability of
            each label.
        """
        from torchvision.ops import boxes as box_ops

        from refinemask.modeling.roi_heads import classify_given_boxes

        heads = self.roi_heads
        features = self.backbone(images)
        image_sizes = [(image_size[0], image_size[1])]
        boxes = box_ops.clip_boxes_to_image(boxes, image_sizes[0])
        class_logits, _ = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, [boxes], image_sizes)))
        (scores,), _ = classify_given_boxes(class_logits, [labels], [class_logits.shape[0]])
        logits = heads.mask_logits(features, boxes_to_rois([boxes]), labels)
        return logits.sigmoid(), scores


class MaskHeadGraph(nn.Module):
    """RefineMask's mask head and stage assembly as one tensor function, for ONNX.

    Args:
        head: a :class:`~refinemask.modeling.refinemask_head.RefineMaskHead` or the faster-better
            :class:`~refinemask.modeling.simple_refinemask_head.SimpleRefineMaskHead` (shared, not
            copied); both assemble their stages the same way.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(
        self, roi_features: torch.Tensor, p2: torch.Tensor, rois: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            roi_features: (N, 256, 14, 14) RoIAlign of the FPN level of each RoI.
            p2: (B, 256, h/4, w/4), the stride-4 FPN map.
            rois: (N, 5) [batch_index, x1, y1, x2, y2] in (resized) input-image pixels.
            labels: (N,) int64 class of each RoI in 1..C (the detector's labels).

        Returns:
            (N, 1, 112, 112) assembled mask logits.
        """
        semantic = self.head.semantic_forward(p2)
        return assemble_stage_logits(self.head.instance_forward(roi_features, semantic, rois, labels - 1))


def mask_size_of(model: nn.Module) -> int:
    """M: the side of the model's mask predictions (the last RefineMask stage, or 28)."""
    heads = model.roi_heads
    return int(heads.mask_head.stage_sizes[-1]) if heads.is_refinemask else 28


# --- export ------------------------------------------------------------------------------------


def _legacy_export(module: nn.Module, args: tuple, path: Path, opset: int, inputs, outputs, dynamic_axes) -> None:
    """``torch.onnx.export`` with the TorchScript-based (tracing) exporter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns on every Python-level shape use of torchvision's detection code,
        # and torch warns that the legacy exporter is legacy. The tests check the exported
        # graph against PyTorch on other image sizes and RoI counts instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*(copy construct from a tensor|torch.jit.script|aten::index).*")
        # F.pad with constant pads (EfficientNet's SAME padding) reverses them with a step -1
        # Slice, which stays unfolded: a few more nodes, the same results
        warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def _finish(path: Path, metadata: dict[str, str], fixed_dims: dict[int, int] | None = None) -> None:
    """Write ``metadata`` into the file and declare ``fixed_dims`` ({axis: size}) of every
    output that has that axis: constants the exporter could not infer (it names them after
    the op that makes them, e.g. the Slice that cuts the padded rows)."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        for axis, size in (fixed_dims or {}).items():
            if axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_value = size
    onnx.save(proto, str(path))


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise RefineMaskError("ONNX export needs the onnx package: pip install 'refinemask[export]'") from None


def example_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) float32 in [0, 1]: smooth colour blobs, an image to trace with."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(2, height // 16), max(2, width // 16), 3), dtype=np.float32)
    return resize_bilinear(small.transpose(2, 0, 1), (height, width)).transpose(1, 2, 0).copy()


def export_onnx(
    model: nn.Module,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    example: np.ndarray | None = None,
    label_to_category: dict[int, int] | None = None,
    category_names: Sequence[str] | None = None,
) -> Path:
    """Export the whole detector (:class:`DetectorGraph`) to ``path`` with the legacy exporter.

    The image height and width are dynamic; the outputs have ``detections_per_img`` rows. The
    file's metadata holds the model config, label mapping and class names, so that
    :class:`OnnxPredictor` needs nothing but the file.

    Args:
        model: the model, e.g. from :func:`refinemask.load_model` (put in eval mode here).
        example: (H, W, 3) float image to trace with; any content works (no branch of the
            graph depends on it), by default :func:`example_image` at the model's test size.
        label_to_category, category_names: default to the model's attributes of those names.
    """
    from refinemask.config import to_dict

    _require_onnx()
    path = Path(path)
    model = model.eval()
    config = model.config
    if example is None:
        short = int(config.min_size[-1])
        example = example_image(short, min(int(config.max_size), round(short * 4 / 3)))
    batch, size = preprocess(example, int(config.min_size[-1]), int(config.max_size))
    dynamic = {"images": {2: "height", 3: "width"}}
    _legacy_export(
        DetectorGraph(model).eval(),
        (torch.from_numpy(batch), torch.from_numpy(size)),
        path, opset, DETECTOR_INPUTS, DETECTOR_OUTPUTS, dynamic,
    )
    from refinemask.engine.checkpoint import model_categories

    own_labels, own_names = model_categories(model)
    labels = label_to_category or own_labels
    names = list(category_names or own_names)
    _finish(path, {
        "format": ONNX_FORMAT,
        "graph": "detector",
        "config": json.dumps(to_dict(config)),
        "label_to_category": json.dumps({str(k): int(v) for k, v in labels.items()}),
        "category_names": json.dumps(names),
        "mask_size": str(mask_size_of(model)),
        "size_divisor": str(SIZE_DIVISOR),
        "pixel_mean": json.dumps(list(PIXEL_MEAN)),
        "pixel_std": json.dumps(list(PIXEL_STD)),
    }, fixed_dims={0: int(config.detections_per_img)})
    return path


def export_mask_head_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET, num_rois: int = 3) -> Path:
    """Export RefineMask's head + assembly (:class:`MaskHeadGraph`); N and P2's size are dynamic.

    Raises :class:`RefineMaskError` for a Mask R-CNN model (its head is torchvision's).
    """
    _require_onnx()
    heads = model.roi_heads
    if not heads.is_refinemask:
        raise RefineMaskError("--mask-head-only needs a RefineMask model; this one has the Mask R-CNN head")
    head = heads.mask_head
    channels = head.stages[0].semantic_transform_in.in_channels  # P2's width, in both RefineMask heads
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(num_rois, channels, head.stage_sizes[0], head.stage_sizes[0], generator=generator)
    p2 = torch.randn(1, channels, 32, 40, generator=generator)
    corners = torch.rand(num_rois, 2, generator=generator) * 80
    rois = torch.cat([torch.zeros(num_rois, 1), corners, corners + 20 + 40 * torch.rand(num_rois, 2, generator=generator)], dim=1)
    labels = torch.ones(num_rois, dtype=torch.int64)
    dynamic = {
        "roi_features": {0: "num_rois"},
        "p2": {0: "batch", 2: "p2_height", 3: "p2_width"},
        "rois": {0: "num_rois"},
        "labels": {0: "num_rois"},
        "mask_logits": {0: "num_rois"},
    }
    path = Path(path)
    _legacy_export(MaskHeadGraph(head).eval(), (feats, p2, rois, labels), path, opset, HEAD_INPUTS, HEAD_OUTPUTS, dynamic)
    _finish(path, {"format": ONNX_FORMAT, "graph": "refinemask_head", "mask_size": str(head.stage_sizes[-1])}, {1: 1})
    return path


def export_boxes_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET, num_boxes: int = 3) -> Path:
    """Export :class:`BoxesGraph`: image and boxes in, one mask per box out; N and the image
    size are dynamic. The metadata holds what :class:`OnnxBoxesPredictor` needs."""
    from refinemask.config import to_dict

    _require_onnx()
    path = Path(path)
    model = model.eval()
    config = model.config
    short = int(config.min_size[-1])
    example = example_image(short, min(int(config.max_size), round(short * 4 / 3)))
    batch, size = preprocess(example, short, int(config.max_size))
    generator = torch.Generator().manual_seed(0)
    h, w = (int(v) for v in size)
    corners = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([w / 2, h / 2])
    boxes = torch.cat([corners, corners + 8 + torch.rand(num_boxes, 2, generator=generator) * torch.tensor([w / 3, h / 3])], 1)
    labels = torch.ones(num_boxes, dtype=torch.int64)
    dynamic = {
        "images": {2: "height", 3: "width"},
        "boxes": {0: "num_boxes"},
        "labels": {0: "num_boxes"},
        "masks": {0: "num_boxes"},
        "scores": {0: "num_boxes"},
    }
    _legacy_export(
        BoxesGraph(model).eval(), (torch.from_numpy(batch), torch.from_numpy(size), boxes, labels),
        path, opset, BOXES_INPUTS, BOXES_OUTPUTS, dynamic,
    )
    from refinemask.engine.checkpoint import model_categories

    labels_map, names = model_categories(model)
    _finish(path, {
        "format": ONNX_FORMAT,
        "graph": "boxes",
        "config": json.dumps(to_dict(config)),
        "label_to_category": json.dumps({str(k): int(v) for k, v in labels_map.items()}),
        "category_names": json.dumps(names),
        "mask_size": str(mask_size_of(model)),
        "size_divisor": str(SIZE_DIVISOR),
    }, fixed_dims={1: 1})
    return path


# --- numpy glue --------------------------------------------------------------------------------


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right source index and right weight of each output position, half-pixel centres.

    ``F.interpolate(mode="bilinear", align_corners=False)`` given a size: the source of output
    i is (i + 0.5) * in/out - 0.5, clamped at 0 (no antialiasing).
    """
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    left = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    right = np.minimum(left + 1, in_size - 1)
    return left, right, (src - left).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) -> (C, h, w) float32, as the model resizes (bilinear, align_corners=False)."""
    image = np.asarray(image, dtype=np.float32)
    h, w = size
    if image.shape[1:] == (h, w):
        return image.copy()
    top, bottom, fy = _linear_taps(image.shape[1], h)
    left, right, fx = _linear_taps(image.shape[2], w)
    rows = image[:, top] * (1 - fy)[None, :, None] + image[:, bottom] * fy[None, :, None]
    return rows[:, :, left] * (1 - fx) + rows[:, :, right] * fx


def preprocess(
    image: np.ndarray, short_side: int, max_long_side: int, divisor: int = SIZE_DIVISOR
) -> tuple[np.ndarray, np.ndarray]:
    """The model's input transform in numpy: normalise, resize (official rule), zero-pad.

    Args:
        image: (H, W, 3) RGB float in [0, 1].

    Returns:
        the graph's inputs: images (1, 3, Hp, Wp) float32 and image_size (2,) int64 [h, w].
    """
    height, width = image.shape[:2]
    h, w = rescale_size(height, width, short_side, max_long_side)
    mean = np.asarray(PIXEL_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(PIXEL_STD, dtype=np.float32)[:, None, None]
    # normalise first, then resize: the order of DetectionTransform (zero padding is then the mean)
    chw = (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) * np.float32(255.0) - mean) / std
    chw = resize_bilinear(chw, (h, w))
    ph, pw = padded_size(h, w, divisor)
    batch = np.zeros((1, 3, ph, pw), dtype=np.float32)
    batch[0, :, :h, :w] = chw
    return batch, np.asarray([h, w], dtype=np.int64)


def _paste_taps(lo: np.ndarray, hi: np.ndarray, length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where pixel centres 0.5 .. length-0.5 of the image, mapped into [lo, hi], read a mask axis.

    The sampling of :func:`refinemask.modeling.ops.paste_masks` (grid_sample, align_corners=
    False, zero padding): returns (K, length) the left index into the axis padded with one zero
    on each side, and the weight of the right neighbour.
    """
    centres = np.arange(length, dtype=np.float32) + np.float32(0.5)
    lo = lo.astype(np.float32)[:, None]
    hi = hi.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (centres[None] - lo) / (hi - lo) * np.float32(2) - np.float32(1)
        u = ((g + np.float32(1)) * np.float32(size) - np.float32(1)) / np.float32(2)
        u0 = np.floor(u)
        frac = u - u0
    index = np.nan_to_num(u0 + 1, nan=0.0, posinf=size + 1, neginf=-1)
    frac = np.where(index < 0, np.float32(0), frac)
    frac = np.where(index > size, np.float32(1), frac)
    return np.clip(index, 0, size).astype(np.int64), np.nan_to_num(frac).astype(np.float32)


def paste_masks_numpy(masks: np.ndarray, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, M, M) probabilities and (K, 4) boxes in image pixels -> (K, height, width) float32.

    The numpy twin of :func:`refinemask.modeling.ops.paste_masks`: bilinear reads at pixel
    centres, as two separable 1-D interpolations, each mask computed only over the window of
    pixels whose taps can reach it (everywhere else a full-image paste gives exact zeros).
    Memory is K * height * width floats; paste in chunks of detections for large images (as
    :class:`OnnxPredictor` does).
    """
    k, mh, mw = masks.shape
    out = np.zeros((k, height, width), dtype=np.float32)
    if k == 0:
        return out
    padded = np.pad(masks.astype(np.float32), ((0, 0), (1, 1), (1, 1)))
    x0, fx = _paste_taps(boxes[:, 0], boxes[:, 2], width, mw)  # (K, W)
    y0, fy = _paste_taps(boxes[:, 1], boxes[:, 3], height, mh)  # (K, H)
    for i in range(k):
        xs, xe = _reading_span(x0[i], fx[i], mw)
        ys, ye = _reading_span(y0[i], fy[i], mh)
        if xs >= xe or ys >= ye:
            continue
        cx, wx = x0[i, xs:xe], fx[i, xs:xe]
        cy, wy = y0[i, ys:ye], fy[i, ys:ye, None]
        rows = padded[i][:, cx] * (1 - wx) + padded[i][:, cx + 1] * wx  # (M + 2, w)
        out[i, ys:ye, xs:xe] = rows[cy] * (1 - wy) + rows[cy + 1] * wy
    return out


def _reading_span(index: np.ndarray, frac: np.ndarray, size: int) -> tuple[int, int]:
    """[first, last + 1) of the pixels whose taps read the mask, not only its zero padding.

    As in :func:`refinemask.modeling.ops.paste_masks`: a pixel reads only padding when its left
    tap is the left padding with all the weight (index 0, frac 0) or its right tap the right
    padding with all the weight (index ``size``, frac 1).
    """
    reads = ~(((index == 0) & (frac == 0)) | ((index == size) & (frac == 1)))
    where = np.flatnonzero(reads)
    return (int(where[0]), int(where[-1]) + 1) if where.size else (0, 0)


def _as_rgb_array(image: Any) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from a path, a PIL image, an array or a (3, H, W) tensor."""
    from PIL import Image

    from refinemask.data.images import image_to_array, open_image

    if isinstance(image, (str, Path)):
        return image_to_array(open_image(image))
    if isinstance(image, Image.Image):
        return image_to_array(image)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise RefineMaskError(f"a tensor image must be (3, H, W) RGB, got shape {tuple(image.shape)}")
        array = image.detach().cpu().permute(1, 2, 0).numpy()
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise RefineMaskError(f"an image array must be (H, W, 3) RGB, got shape {array.shape}")
    array = array[:, :, :3]
    return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)


# --- running the exported detector ------------------------------------------------------------


def _open_exported_graph(runner: Any, path: str | Path, graph: str, not_ours: str, num_threads: int | None,
                         providers: Sequence[str]) -> None:
    """Open a file that ``refinemask export`` wrote and set on ``runner`` what both runners read
    from it: ``session``, ``config``, ``label_to_category``, ``category_names`` and the resize
    settings (``short_side``, ``max_long_side``, ``divisor``).

    ``graph`` is the metadata's graph kind ("detector" or "boxes"); a file of another kind, or
    one that onnxruntime cannot load, is a one-line error (``not_ours`` says which runner wanted it).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise RefineMaskError("running an ONNX model needs onnxruntime: pip install 'refinemask[export]'") from None
    path = Path(path)
    if not path.is_file():
        raise RefineMaskError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
    try:
        runner.session = ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise RefineMaskError(f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0][:200]})") from None
    metadata = runner.session.get_modelmeta().custom_metadata_map
    if metadata.get("format") != ONNX_FORMAT or metadata.get("graph") != graph:
        raise RefineMaskError(f"{path}: {not_ours}")
    runner.config = json.loads(metadata["config"])
    runner.label_to_category = {int(k): int(v) for k, v in json.loads(metadata["label_to_category"]).items()}
    runner.category_names = json.loads(metadata["category_names"])
    runner.short_side = int(runner.config["min_size"][-1])
    runner.max_long_side = int(runner.config["max_size"])
    runner.divisor = int(metadata.get("size_divisor", SIZE_DIVISOR))


class OnnxPredictor:
    """Run an exported detector with onnxruntime; numpy in, numpy out, no PyTorch model needed.

    The glue around the graph (:func:`preprocess`, :func:`paste_masks_numpy`) is numpy only,
    so it ports to any runtime.

    Args:
        path: a file written by :func:`export_onnx` (``refinemask export``).
        score_thresh: keep detections scoring at least this (None: all that the graph returns,
            i.e. above the model's ``box_score_thresh``).
        mask_threshold: probability at which a mask pixel belongs to the object.
        num_threads: onnxruntime's intra-op threads (None: its default).
        providers: onnxruntime execution providers, e.g. ``["CUDAExecutionProvider",
            "CPUExecutionProvider"]``.

    Calling it with one image (path, PIL image, (H, W, 3) array or (3, H, W) tensor) returns a
    dict like :class:`~refinemask.engine.predict.Predictor`'s, with numpy arrays: ``boxes``
    float32 (K, 4) XYXY pixels, ``labels`` int64 (K,) in 1..C, ``scores`` (K,), ``masks`` bool
    (K, H, W). A list of images gives a list of dicts.
    """

    def __init__(
        self,
        path: str | Path,
        score_thresh: float | None = None,
        mask_threshold: float = 0.5,
        num_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ):
        _open_exported_graph(self, path, "detector", "not a detector exported by `refinemask export` (no refinemask metadata)",
                             num_threads, providers)
        self.score_thresh = score_thresh
        self.mask_threshold = mask_threshold

    def run_graph(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's raw outputs (D rows, resized-image pixels) for an (H, W, 3) float image."""
        batch, size = preprocess(image, self.short_side, self.max_long_side, self.divisor)
        values = self.session.run(list(DETECTOR_OUTPUTS), {"images": batch, "image_size": size})
        outputs = dict(zip(DETECTOR_OUTPUTS, values))
        outputs["image_size"] = size
        return outputs

    def predict_array(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """One (H, W, 3) float32 image in [0, 1] -> the detections kept, masks pasted."""
        height, width = image.shape[:2]
        out = self.run_graph(image)
        k = int(out["num_detections"])
        keep = np.arange(k)
        if self.score_thresh is not None:
            keep = keep[out["scores"][:k] >= self.score_thresh]
        h, w = (int(v) for v in out["image_size"])
        scale = np.asarray([width / w, height / h, width / w, height / h], dtype=np.float32)
        boxes = (out["boxes"][keep] * scale).astype(np.float32)
        masks = np.zeros((len(keep), height, width), dtype=bool)
        # bound the float32 memory of a paste to ~2**25 values (128 MB), as paste_masks does
        step = max(1, 2**25 // max(1, height * width))
        for start in range(0, len(keep), step):
            chunk = slice(start, start + step)
            probs = paste_masks_numpy(out["masks"][keep[chunk], 0], boxes[chunk], height, width)
            masks[chunk] = probs >= self.mask_threshold
        return {
            "boxes": boxes,
            "labels": out["labels"][keep].astype(np.int64),
            "scores": out["scores"][keep].astype(np.float32),
            "masks": masks,
        }

    def __call__(self, images: Any) -> dict | list[dict]:
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        outputs = [self.predict_array(_as_rgb_array(image)) for image in batch]
        return outputs[0] if single else outputs


class OnnxBoxesPredictor:
    """Run a file of :func:`export_boxes_onnx` with onnxruntime: masks for given boxes, in numpy.

    ``predictor(image, boxes, labels)`` with boxes (N, 4) XYXY in the image's pixels and labels
    (N,) in 1..C returns ``boxes`` (as given), ``labels``, ``scores`` (the box head's probability
    of each label) and ``masks`` bool (N, H, W), as
    :class:`~refinemask.engine.predict.Predictor` does for given boxes.
    """

    def __init__(self, path: str | Path, mask_threshold: float = 0.5, num_threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)):
        _open_exported_graph(self, path, "boxes", "not a given-boxes graph exported by `refinemask export --given-boxes`",
                             num_threads, providers)
        self.num_classes = int(self.config["num_classes"])
        self.mask_threshold = mask_threshold

    def __call__(self, image: Any, boxes: Any, labels: Any) -> dict[str, np.ndarray]:
        from refinemask.modeling.detector import check_given_boxes

        array = _as_rgb_array(image)
        height, width = array.shape[:2]
        given, given_labels = check_given_boxes(boxes, labels, (height, width), self.num_classes)
        if given_labels is None:
            raise RefineMaskError("the exported given-boxes graph needs labels (it does not classify boxes)")
        boxes_np = given.numpy()
        if len(boxes_np) == 0:  # the graph's reshapes cannot take zero boxes; nothing to run
            return {"boxes": boxes_np, "labels": given_labels.numpy(), "scores": np.zeros(0, np.float32),
                    "masks": np.zeros((0, height, width), dtype=bool)}
        batch, size = preprocess(array, self.short_side, self.max_long_side, self.divisor)
        h, w = (int(v) for v in size)
        # the model's transform scales boxes by new/old size (float32), as here
        scale = np.asarray([w / width, h / height, w / width, h / height], dtype=np.float32)
        masks, scores = self.session.run(list(BOXES_OUTPUTS), {
            "images": batch, "image_size": size,
            "boxes": (boxes_np * scale).astype(np.float32), "labels": given_labels.numpy().astype(np.int64),
        })
        clipped = np.clip(boxes_np, 0, np.asarray([width, height, width, height], dtype=np.float32))
        pasted = paste_masks_numpy(masks[:, 0], clipped, height, width)
        return {
            "boxes": boxes_np,
            "labels": given_labels.numpy(),
            "scores": scores.astype(np.float32),
            "masks": pasted >= self.mask_threshold,
        }


@dataclass
class OnnxTiming:
    """Median wall time per image over the repeats, in seconds."""

    seconds_per_image: float  # preprocess + graph + paste (what a user waits for)
    graph_seconds_per_image: float  # the onnxruntime session alone
    num_images: int
    repeats: int
    providers: list[str]


def onnx_inference_time(
    model: str | Path | OnnxPredictor,
    images: Sequence[Any],
    warmup: int = 1,
    repeats: int = 3,
    num_threads: int | None = None,
    score_thresh: float | None = 0.5,
) -> OnnxTiming:
    """Time an exported detector on ``images`` (paths, arrays or tensors), for the benchmarks.

    Images are decoded once before timing. Each repeat runs every image; the median repeat is
    reported per image, once end to end (:meth:`OnnxPredictor.predict_array`) and once for
    the graph alone.
    """
    if not images:
        raise RefineMaskError("onnx_inference_time needs at least one image")
    if isinstance(model, OnnxPredictor):
        predictor = model
    else:
        predictor = OnnxPredictor(model, score_thresh=score_thresh, num_threads=num_threads)
    arrays = [_as_rgb_array(image) for image in images]
    for _ in range(warmup):
        predictor.predict_array(arrays[0])
    total, graph = [], []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for array in arrays:
            predictor.predict_array(array)
        total.append((time.perf_counter() - start) / len(arrays))
        start = time.perf_counter()
        for array in arrays:
            predictor.run_graph(array)
        graph.append((time.perf_counter() - start) / len(arrays))
    return OnnxTiming(
        seconds_per_image=statistics.median(total),
        graph_seconds_per_image=statistics.median(graph),
        num_images=len(arrays),
        repeats=max(1, repeats),
        providers=list(predictor.session.get_providers()),
    )


# --- checking an export against PyTorch --------------------------------------------------------


@dataclass
class ExportCheck:
    """How an exported detector's detections compare with PyTorch's on some images."""

    num_images: int
    num_detections: int  # PyTorch's, summed over the images
    count_mismatches: int  # images where the two give a different number of detections
    max_box_difference: float  # pixels, over matched pairs
    min_mask_iou: float  # over matched pairs (1.0 when there is no detection)
    num_matched: int = 0  # pairs compared; 0 means the check checked nothing


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def match_detections(boxes_a: np.ndarray, labels_a: np.ndarray, boxes_b: np.ndarray, labels_b: np.ndarray) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (i, j) of same-label boxes, highest IoU first.

    Equal scores can leave two runtimes' outputs in different orders; pairing by overlap makes
    the comparison independent of that order.
    """
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return []
    iou = _box_iou(boxes_a, boxes_b)
    iou[labels_a[:, None] != labels_b[None, :]] = -1
    pairs = []
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < 0:
            break
        if all(i != p and j != q for p, q in pairs):
            pairs.append((i, j))
    return pairs


def check_export(model: nn.Module, onnx_path: str | Path, images: Sequence[Any]) -> ExportCheck:
    """Run the model (PyTorch) and the exported file (onnxruntime) on ``images``; compare."""
    from refinemask.engine.predict import Predictor

    torch_predictor = Predictor(model)
    onnx_predictor = OnnxPredictor(onnx_path)
    count_mismatches, total, matched, box_diff, min_iou = 0, 0, 0, 0.0, 1.0
    for image in images:
        array = _as_rgb_array(image)
        ours = torch_predictor(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))
        theirs = onnx_predictor.predict_array(array)
        boxes, labels, masks = ours["boxes"].numpy(), ours["labels"].numpy(), ours["masks"].numpy()
        total += len(boxes)
        count_mismatches += int(len(boxes) != len(theirs["boxes"]))
        for i, j in match_detections(boxes, labels, theirs["boxes"], theirs["labels"]):
            matched += 1
            box_diff = max(box_diff, float(np.abs(boxes[i] - theirs["boxes"][j]).max()))
            union = np.logical_or(masks[i], theirs["masks"][j]).sum()
            inter = np.logical_and(masks[i], theirs["masks"][j]).sum()
            min_iou = min(min_iou, float(inter / union) if union else 1.0)
    return ExportCheck(len(images), total, count_mismatches, box_diff, min_iou, matched)


def threshold_keeping(model: nn.Module, image: np.ndarray, count: int = 10) -> float:
    """A box score threshold at which ``model`` keeps its ``count`` best detections of ``image``.

    Halfway between the count-th and the next score of the detections at threshold 0 (all
    candidates), so that a score rounding differently in another runtime does not move a
    detection across it; half the lowest score when there are no more than ``count``.
    """
    heads = model.roi_heads
    saved = heads.score_thresh
    heads.score_thresh = 0.0
    try:
        with torch.no_grad():
            tensor = torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1)))
            scores = model.eval()([tensor])[0]["scores"].sort(descending=True).values.tolist()
    finally:
        heads.score_thresh = saved
    if not scores:
        raise RefineMaskError("the model gives no detection at all, even at score threshold 0")
    if len(scores) <= count:
        return scores[-1] / 2
    return (scores[count - 1] + scores[count]) / 2


def check_export_at_threshold(model: nn.Module, images: Sequence[Any], threshold: float, opset: int = DEFAULT_OPSET) -> ExportCheck:
    """Export a copy of the detector with box score threshold ``threshold`` to a temporary
    file and compare it with PyTorch at that threshold (:func:`check_export`).

    The copy's graph is the written one's except for that one constant. Checking it is how
    the export is checked when the written file's threshold leaves no detection on the
    example image: a comparison over no detection compares nothing.
    """
    import tempfile

    heads = model.roi_heads
    saved = heads.score_thresh
    heads.score_thresh = float(threshold)
    try:
        with tempfile.TemporaryDirectory(prefix="refinemask-export-check-") as folder:
            path = export_onnx(model, Path(folder) / "check.onnx", opset=opset)
            return check_export(model, path, images)
    finally:
        heads.score_thresh = saved


def check_boxes_export(model: nn.Module, onnx_path: str | Path, images: Sequence[Any]) -> tuple[float, float]:
    """Compare a given-boxes export with PyTorch on ``images``, for three boxes spread over each
    image (one per corner region and the centre, labels cycling 1..C).

    Returns the smallest mask IoU and the largest score difference over all boxes.
    """
    from refinemask.engine.predict import Predictor

    torch_predictor = Predictor(model)
    onnx_predictor = OnnxBoxesPredictor(onnx_path)
    min_iou, score_diff = 1.0, 0.0
    for image in images:
        array = _as_rgb_array(image)
        h, w = array.shape[:2]
        boxes = np.asarray([[0.05, 0.1, 0.5, 0.6], [0.4, 0.3, 0.95, 0.9], [0.2, 0.2, 0.8, 0.8]], dtype=np.float32)
        boxes = boxes * np.asarray([w, h, w, h], dtype=np.float32)
        labels = (np.arange(len(boxes)) % int(model.config.num_classes)) + 1
        ours = torch_predictor(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), boxes=boxes, labels=labels)
        theirs = onnx_predictor(array, boxes, labels)
        score_diff = max(score_diff, float(np.abs(ours["scores"].numpy() - theirs["scores"]).max()))
        for a, b in zip(ours["masks"].numpy(), theirs["masks"]):
            union = np.logical_or(a, b).sum()
            min_iou = min(min_iou, float(np.logical_and(a, b).sum() / union) if union else 1.0)
    return min_iou, score_diff


def describe_export(path: str | Path) -> str:
    """A few lines on an exported file: its inputs and outputs with shapes, and its size."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)

    def shape_of(value) -> str:
        dims = [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]
        dtype = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
        return f"{value.name} ({', '.join(dims)}) {dtype}"

    size_mb = path.stat().st_size / 2**20
    lines = [f"{path} ({size_mb:.1f} MB, opset {max(o.version for o in proto.opset_import)})"]
    lines.append("  inputs:  " + "; ".join(shape_of(v) for v in proto.graph.input))
    lines.append("  outputs: " + "; ".join(shape_of(v) for v in proto.graph.output))
    return "\n".join(lines)


__all__ = [
    "BoxesGraph",
    "DetectorGraph",
    "check_boxes_export",
    "OnnxBoxesPredictor",
    "export_boxes_onnx",
    "ExportCheck",
    "MaskHeadGraph",
    "OnnxPredictor",
    "OnnxTiming",
    "check_export",
    "check_export_at_threshold",
    "describe_export",
    "export_mask_head_onnx",
    "export_onnx",
    "match_detections",
    "onnx_inference_time",
    "paste_masks_numpy",
    "preprocess",
    "resize_bilinear",
    "threshold_keeping",
]
