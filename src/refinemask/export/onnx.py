"""Write the graphs of :mod:`refinemask.export.graphs` to ONNX files, with the metadata the
runners of :mod:`refinemask.export.runtime` read back; describe a written file.

Shapes: D the fixed number of output rows (``detections_per_img``); N RoIs or given boxes.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from refinemask.errors import RefineMaskError
from refinemask.export.glue import SIZE_DIVISOR, preprocess, resize_bilinear
from refinemask.export.graphs import (
    BOXES_INPUTS,
    BOXES_OUTPUTS,
    DETECTOR_INPUTS,
    DETECTOR_OUTPUTS,
    HEAD_INPUTS,
    HEAD_OUTPUTS,
    BoxesGraph,
    DetectorGraph,
    MaskHeadGraph,
    mask_size_of,
)
from refinemask.modeling.transform import PIXEL_MEAN, PIXEL_STD

ONNX_FORMAT = "refinemask-onnx-v1"
DEFAULT_OPSET = 17  # RoiAlign's half-pixel mode (aligned=True) needs opset >= 16


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


class _BackboneGraph(nn.Module):
    """Backbone + FPN alone, its five maps as a tuple (what :func:`check_backbone_exports` compares)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(images).values())


def check_backbone_exports(model: nn.Module, images: torch.Tensor, opset: int = DEFAULT_OPSET) -> None:
    """Refuse, in one line, a library backbone (``torchvision:``/``timm:``) whose ONNX graph is
    wrong at other image sizes or does not export at all.

    The detector's graph takes any image size, but a backbone may read a size as a Python
    number while traced (torchvision's Swin pads its windows so), which the graph keeps as a
    constant: right at the traced size, silently wrong at every other. The backbone alone is
    exported at ``images``' size and compared with PyTorch at a larger and a small size (small
    maps take other branches: Swin skips its window shift when a map fits in one window). The
    built-in backbones are covered by the export tests instead.
    """
    import tempfile

    import onnxruntime as ort

    name = model.config.backbone
    if ":" not in name:
        return
    graph = _BackboneGraph(model.backbone).eval()
    generator = torch.Generator().manual_seed(0)
    sizes = [(images.shape[2] + SIZE_DIVISOR, images.shape[3] + 2 * SIZE_DIVISOR), (2 * SIZE_DIVISOR, 3 * SIZE_DIVISOR)]
    others = [torch.rand(1, 3, h, w, generator=generator) for h, w in sizes]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "backbone.onnx"
        try:
            _legacy_export(graph, (images,), path, opset, ["images"], [f"p{i}" for i in range(2, 7)], {"images": {2: "height", 3: "width"}})
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            exported = [session.run(None, {"images": other.numpy()}) for other in others]
        except Exception as err:  # noqa: BLE001 - the exporter's or onnxruntime's refusal, in one line
            import re

            text = str(err)
            op = re.search(r"(aten|prim|torchvision)::\w+", text)
            first = (text.strip().splitlines() or [type(err).__name__])[0][:200]
            raise RefineMaskError(
                f"backbone {name} does not export to ONNX (opset {opset}): "
                + (f"the operator {op.group(0)} does not export" if op else f"{type(err).__name__}: {first}")
                + "; serve it with PyTorch (refinemask serve / predict) or choose another backbone"
            ) from None
    for other, theirs in zip(others, exported):
        with torch.no_grad():
            ours = graph(other)
        for level, (mine, got) in enumerate(zip(ours, theirs)):
            scale = float(mine.abs().max()) + 1e-6
            if tuple(got.shape) == tuple(mine.shape) and float(np.abs(got - mine.numpy()).max()) <= 1e-3 * scale:
                continue
            raise RefineMaskError(
                f"backbone {name} does not export to ONNX for other image sizes: traced at "
                f"{images.shape[2]}x{images.shape[3]}, its graph gives other P{level + 2} features than PyTorch at "
                f"{other.shape[2]}x{other.shape[3]} (a size-dependent step, such as torchvision Swin's window shift, "
                "was traced as a constant); serve it with PyTorch, or use a backbone that exports "
                "(for Swin: timm:swin_tiny_patch4_window7_224)"
            )


def example_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) float32 in [0, 1]: smooth colour blobs, an image to trace with."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(2, height // 16), max(2, width // 16), 3), dtype=np.float32)
    return resize_bilinear(small.transpose(2, 0, 1), (height, width)).transpose(1, 2, 0).copy()


def example_image_size(config) -> tuple[int, int]:
    """(height, width) of the image to trace and check ``config``'s model with: its test short
    side by a 4:3 long side, clamped to ``max_size`` so that the model's resize leaves it as is."""
    short = int(config.min_size[-1])
    return short, min(int(config.max_size), round(short * 4 / 3))


def model_example_image(model: nn.Module, seed: int = 0) -> np.ndarray:
    """:func:`example_image` at :func:`example_image_size` of ``model.config``."""
    return example_image(*example_image_size(model.config), seed=seed)


def _model_metadata(model: nn.Module, graph: str, label_to_category=None, category_names=None) -> dict[str, str]:
    """The metadata both whole-model graphs carry: what a runner needs to rebuild the
    preprocessing and name the classes without the PyTorch model."""
    from refinemask.config import to_dict
    from refinemask.model_files import category_metadata, model_categories

    own_labels, own_names = model_categories(model)
    return {
        "format": ONNX_FORMAT,
        "graph": graph,
        "config": json.dumps(to_dict(model.config)),
        **category_metadata(label_to_category or own_labels, category_names or own_names),
        "mask_size": str(mask_size_of(model)),
        "size_divisor": str(SIZE_DIVISOR),
    }


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
    _require_onnx()
    path = Path(path)
    model = model.eval()
    config = model.config
    if example is None:
        example = model_example_image(model)
    batch, size = preprocess(example, int(config.min_size[-1]), int(config.max_size))
    check_backbone_exports(model, torch.from_numpy(batch), opset)
    dynamic = {"images": {2: "height", 3: "width"}}
    _legacy_export(
        DetectorGraph(model).eval(),
        (torch.from_numpy(batch), torch.from_numpy(size)),
        path, opset, DETECTOR_INPUTS, DETECTOR_OUTPUTS, dynamic,
    )
    _finish(path, {
        **_model_metadata(model, "detector", label_to_category, category_names),
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
    _require_onnx()
    path = Path(path)
    model = model.eval()
    config = model.config
    batch, size = preprocess(model_example_image(model), int(config.min_size[-1]), int(config.max_size))
    check_backbone_exports(model, torch.from_numpy(batch), opset)
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
    _finish(path, _model_metadata(model, "boxes"), fixed_dims={1: 1})
    return path


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
