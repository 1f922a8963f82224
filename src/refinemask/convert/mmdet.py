"""An official RefineMask checkpoint's tensors (mmdetection v2.3) as a refinemask model's.

The official checkpoints are mmcv dicts ``{'meta': ..., 'state_dict': ...}`` holding the whole
mmdetection detector. Everything this module needs is in the tensors:

* **Key mapping** (docs/design.md §7). Backbone keys keep their names under ``backbone.body.``; the
  FPN's ``lateral_convs``/``fpn_convs`` become torchvision's ``inner_blocks``/``layer_blocks``;
  the RPN's three convs become ``rpn.head.*``; the two shared fcs become ``fc6``/``fc7``; the
  mask head keeps its official names (the prefix ``roi_head.mask_head.`` becomes
  ``roi_heads.mask_head.``). BN's ``num_batches_tracked`` is dropped: the backbone uses
  ``FrozenBatchNorm2d``, which has no such buffer.
* **Background.** mmdetection's classifier puts background in the *last* row and its box
  regressor has no background rows; torchvision puts background *first* and regresses it too.
  So the classifier's last row moves to the top and four zero rows are prepended to the
  regressor (docs/design.md §7.2: the easiest place to get a converted model silently wrong).
* **Kind of model** (docs/design.md §7.3). The checkpoint's ``meta`` need not hold a config, so the
  number of classes comes from the classifier (80 COCO, 1203 LVIS, 8 Cityscapes), the class-
  agnostic last stage from ``final_instance_logits`` ([1, 32, 1, 1] in the LVIS model) and the
  depth from the number of ResNet blocks. The data set fixes the test settings that are not in
  the weights: test scale, score threshold, detections per image.
* **Which head.** ``stage_instance_logits.*`` keys mean the faster-better
  ``SimpleRefineMaskHead`` (docs/design.md §7.1; no checkpoint of it was released, but the
  official code can train one); its last stage is ``stage_instance_logits.3``. The numbers of
  instance and semantic convs are counted from the keys (2 and 4 officially; Co-DETR uses 1 and 2).

Pure functions of the tensors: :mod:`refinemask.convert.files` reads the official file and writes
the converted model file, and :func:`refinemask.engine.init_weights.read_init_weights` converts in
memory; this module imports neither, so neither import makes a cycle.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from refinemask.config import ModelConfig, from_dict
from refinemask.data.categories import LVIS_NUM_CATEGORIES, categories_from_entries, default_categories
from refinemask.errors import RefineMaskError
from refinemask.jsonfile import read_json

# Test-time (and fine-tuning) settings of each official config that the weights do not carry
# (docs/design.md §6.3). min_size lists the training short sides; the last one is the test scale.
DATASET_SETTINGS: dict[str, dict] = {
    "coco": {"min_size": [800], "max_size": 1333, "box_score_thresh": 0.05, "detections_per_img": 100, "box_reg_loss": "l1"},
    "lvis": {
        "min_size": [640, 672, 704, 736, 768, 800], "max_size": 1333,
        "box_score_thresh": 1e-4, "detections_per_img": 300, "box_reg_loss": "l1",
    },
    # trained with the short side drawn from 800-1024 (range mode), tested at 2048x1024
    "cityscapes": {
        "min_size": [1024], "max_size": 2048, "box_score_thresh": 0.05, "detections_per_img": 100, "box_reg_loss": "smooth_l1",
    },
    "custom": {"min_size": [800], "max_size": 1333, "box_score_thresh": 0.05, "detections_per_img": 100, "box_reg_loss": "l1"},
}
# mmdetection v2.3 behaviour where torchvision's differs (docs/design.md §6.2): rank RPN candidates by
# sigmoid scores, and keep zero-size proposals and detections (mmdetection filters neither).
MMDET_TEST_BEHAVIOUR = {"rpn_rank_by_sigmoid": True, "rpn_min_box_size": 0.0, "box_min_size": 0.0}
DATASET_CLASSES = {"coco": 80, "lvis": LVIS_NUM_CATEGORIES, "cityscapes": 8}
DATASETS = tuple(DATASET_SETTINGS)

# ResNet blocks per stage -> depth (mmdetection's arch settings, bottleneck blocks)
RESNET_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}

# mmdetection key prefix -> our key prefix, tried in order (docs/design.md §7.2)
KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^backbone\.", "backbone.body."),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"^rpn_head\.rpn_conv\.", "rpn.head.conv.0.0."),
    (r"^rpn_head\.rpn_cls\.", "rpn.head.cls_logits."),
    (r"^rpn_head\.rpn_reg\.", "rpn.head.bbox_pred."),
    (r"^roi_head\.bbox_head\.shared_fcs\.0\.", "roi_heads.box_head.fc6."),
    (r"^roi_head\.bbox_head\.shared_fcs\.1\.", "roi_heads.box_head.fc7."),
    (r"^roi_head\.bbox_head\.fc_cls\.", "roi_heads.box_predictor.cls_score."),
    (r"^roi_head\.bbox_head\.fc_reg\.", "roi_heads.box_predictor.bbox_pred."),
    (r"^roi_head\.mask_head\.", "roi_heads.mask_head."),
)
_CLASSIFIER = "roi_head.bbox_head.fc_cls.weight"
_REGRESSOR = "roi_head.bbox_head.fc_reg.weight"
# the first and the last stage's classifier of each head
_STAGE_LOGITS = {
    "refinemask": ("roi_head.mask_head.stages.0.instance_logits.weight", "roi_head.mask_head.final_instance_logits.weight"),
    "simple_refinemask": (
        "roi_head.mask_head.stage_instance_logits.0.weight", "roi_head.mask_head.stage_instance_logits.3.weight",
    ),
}


@dataclass(frozen=True)
class OfficialModel:
    """What an official checkpoint holds, read from its tensor shapes."""

    num_classes: int
    depth: int  # 50 or 101
    class_agnostic_last_stage: bool
    dataset: str  # coco | lvis | cityscapes | custom
    mask_head: str = "refinemask"  # refinemask | simple_refinemask (faster-better)
    instance_convs: int = 2
    semantic_convs: int = 4
    # conv_out_channels_instance / _semantic: 256 in every official config
    instance_channels: int = 256
    semantic_channels: int = 256

    def describe(self) -> str:
        head = ", class-agnostic last stage" if self.class_agnostic_last_stage else ""
        if (self.instance_convs, self.semantic_convs) != (2, 4):
            head += f", {self.instance_convs} instance and {self.semantic_convs} semantic convs"
        if (self.instance_channels, self.semantic_channels) != (256, 256):
            head += f", widths {self.instance_channels} instance and {self.semantic_channels} semantic"
        name = {"coco": "COCO", "lvis": "LVIS v1", "cityscapes": "Cityscapes"}.get(self.dataset, "custom data set")
        kind = "RefineMask" if self.mask_head == "refinemask" else "RefineMask faster-better (SimpleRefineMaskHead)"
        return f"{kind} R{self.depth}-FPN, {name} ({self.num_classes} classes{head})"


def inspect_official(state: dict[str, torch.Tensor], source: str = "checkpoint") -> OfficialModel:
    """Which official model ``state`` is (classes, depth, last stage), or a one-line error."""
    if any(k.startswith(("backbone.body.", "roi_heads.", "rpn.head.")) for k in state):
        raise RefineMaskError(
            f"{source}: a torchvision/refinemask state dict (keys like 'backbone.body.*'), not an official "
            "mmdetection checkpoint; nothing to convert"
        )
    if not any(k.startswith("backbone.") for k in state) or not any(k.startswith("roi_head.") for k in state):
        raise RefineMaskError(
            f"{source}: not an mmdetection two-stage detector (no 'backbone.*'/'roi_head.*' keys; first key "
            f"{next(iter(state))!r}); expected an official RefineMask checkpoint"
        )
    if not any(k.startswith("roi_head.mask_head.") for k in state):
        raise RefineMaskError(
            f"{source}: an mmdetection detector without a mask head (Faster R-CNN?); expected an official RefineMask checkpoint"
        )
    if "roi_head.mask_head.conv_logits.weight" in state:
        raise RefineMaskError(f"{source}: an mmdetection Mask R-CNN checkpoint (FCN mask head), not RefineMask")
    head = "simple_refinemask" if "roi_head.mask_head.stage_instance_logits.0.weight" in state else "refinemask"
    stage0_logits, final_logits = _STAGE_LOGITS[head]
    for key in (_CLASSIFIER, _REGRESSOR, stage0_logits, final_logits):
        if key not in state:
            raise RefineMaskError(f"{source}: missing {key!r}; not an official RefineMask checkpoint")
    num_classes = state[_CLASSIFIER].shape[0] - 1
    if num_classes < 1 or state[_REGRESSOR].shape[0] != 4 * num_classes:
        raise RefineMaskError(
            f"{source}: box head of shapes {list(state[_CLASSIFIER].shape)} and {list(state[_REGRESSOR].shape)}; "
            "expected mmdetection's class-specific head [C+1, 1024] and [4C, 1024]"
        )
    if state[stage0_logits].shape[0] != num_classes:
        raise RefineMaskError(
            f"{source}: the box head has {num_classes} classes but the mask head "
            f"{state[stage0_logits].shape[0]}; the checkpoint is inconsistent"
        )
    final = state[final_logits].shape[0]
    if final not in (1, num_classes):
        last_name = final_logits[len("roi_head.mask_head."):-len(".weight")]
        raise RefineMaskError(f"{source}: {last_name} has {final} classes; expected 1 or {num_classes}")
    convs = {
        part: len({m.group(1) for k in state if (m := re.match(rf"roi_head\.mask_head\.{part}_convs\.(\d+)\.conv\.weight$", k))})
        for part in ("instance", "semantic")
    }
    blocks = tuple(
        len({m.group(1) for k in state if (m := re.match(rf"backbone\.layer{i}\.(\d+)\.conv3\.weight$", k))})
        for i in range(1, 5)
    )
    if blocks not in RESNET_DEPTHS:
        raise RefineMaskError(
            f"{source}: a ResNet backbone with {blocks} bottleneck blocks per stage; "
            "only ResNet-50 (3, 4, 6, 3) and ResNet-101 (3, 4, 23, 3) are supported"
        )
    # the widths: stage 0 fuses at the instance width and reads the semantic convs' output
    transform_in = state.get("roi_head.mask_head.stages.0.semantic_transform_in.weight")
    if transform_in is None or transform_in.dim() != 4:
        raise RefineMaskError(f"{source}: missing 'roi_head.mask_head.stages.0.semantic_transform_in.weight'; "
                              "not an official RefineMask checkpoint")
    dataset = {80: "coco", LVIS_NUM_CATEGORIES: "lvis", 8: "cityscapes"}.get(num_classes, "custom")
    return OfficialModel(
        num_classes, RESNET_DEPTHS[blocks], final == 1, dataset, head, convs["instance"], convs["semantic"],
        int(transform_in.shape[0]), int(transform_in.shape[1]),
    )


# -- mapping ----------------------------------------------------------------------------------


def official_to_refinemask(state: dict[str, torch.Tensor], num_classes: int, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename and reshape an official state dict into our model's keys (docs/design.md §7.2).

    Args:
        state: the mmdetection ``state_dict``.
        num_classes: C, without background.

    Returns:
        our state dict; ``cls_score`` is (C+1, 1024) with background in row 0 and
        ``bbox_pred`` is (4(C+1), 1024) with zero background rows 0-3. Renamed float32
        tensors share memory with ``state``.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue  # FrozenBatchNorm2d has no counter
        for pattern, replacement in KEY_MAP:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                break
        else:
            unknown.append(key)
            continue
        if value.is_floating_point():
            value = value.float()
        if new_key.startswith("roi_heads.box_predictor.cls_score."):
            value = _background_first(value, num_classes)
        elif new_key.startswith("roi_heads.box_predictor.bbox_pred."):
            value = _prepend_background_deltas(value)
        out[new_key] = value.contiguous()
    if unknown:
        raise RefineMaskError(
            f"{source}: {len(unknown)} tensors of an unknown part, e.g. {unknown[0]!r}; not an official RefineMask checkpoint"
        )
    return out


def _background_first(classifier: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C+1, ...) with background last (mmdetection) -> background first (torchvision)."""
    order = torch.tensor([num_classes] + list(range(num_classes)))
    return classifier[order]


def _prepend_background_deltas(regressor: torch.Tensor) -> torch.Tensor:
    """(4C, ...) -> (4(C+1), ...): torchvision's layout has four (unused) background rows first."""
    return torch.cat([regressor.new_zeros((4,) + tuple(regressor.shape[1:])), regressor], dim=0)


def model_config(official: OfficialModel) -> ModelConfig:
    """The model config of a converted checkpoint: architecture from the weights, test settings
    from the data set."""
    return from_dict(
        ModelConfig,
        {
            "num_classes": official.num_classes,
            "backbone": f"resnet{official.depth}",
            "backbone_weights": None,
            "mask_head": official.mask_head,
            "class_agnostic_last_stage": official.class_agnostic_last_stage,
            "mask_instance_convs": official.instance_convs,
            "mask_semantic_convs": official.semantic_convs,
            # None: the FPN's 256, as in the released models (their configs stay as they were)
            "mask_instance_channels": None if official.instance_channels == 256 else official.instance_channels,
            "mask_semantic_channels": None if official.semantic_channels == 256 else official.semantic_channels,
            **DATASET_SETTINGS[official.dataset],
            **MMDET_TEST_BEHAVIOUR,
        },
        "model",
    )


# -- categories -------------------------------------------------------------------------------


def categories_from_annotations(path: str | Path, num_classes: int) -> tuple[dict[int, int], list[str]]:
    """(label → category id, names) from the ``categories`` of a COCO/LVIS-format json."""
    data = read_json(path, "categories file")
    try:
        labels, names = categories_from_entries(data["categories"])
    except (ValueError, KeyError, TypeError):
        raise RefineMaskError(f"{path}: not a COCO-format json with a 'categories' list of {{id, name}}") from None
    if len(labels) != num_classes:
        raise RefineMaskError(f"{path}: {len(labels)} categories, but the checkpoint has {num_classes} classes")
    return labels, names


def official_categories(official: OfficialModel, dataset: str, meta: dict, annotations: str | Path | None):
    """(label → category id, names) of an official checkpoint: from ``annotations`` when given,
    else the dataset's defaults named by the checkpoint's ``meta['CLASSES']`` where it has them."""
    if annotations is not None:
        return categories_from_annotations(annotations, official.num_classes)
    labels, names = default_categories(dataset, official.num_classes)
    # mmdetection stores the training set's class names in meta['CLASSES'] (in label order)
    classes = meta.get("CLASSES")
    if isinstance(classes, (list, tuple)) and len(classes) == official.num_classes and all(isinstance(c, str) for c in classes):
        names = list(classes)
    return labels, names
