"""Starting weights for fine-tuning (``train.init_weights``): any model file, loaded where it fits.

A run may start from a model trained for other classes. The tensors whose shape follows the
class count keep the fresh initialisation of the model being trained; a mask head of another
kind (Mask R-CNN weights into RefineMask, or none in a Faster R-CNN file) is initialised too.
Everything else must fit exactly: a partial load that silently skips a backbone layer would
train from a broken start, so any other mismatch is an error naming the first one.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from refinemask.model_files import (
    FORMAT,
    checkpoint_categories,
    is_torch_file,
    metadata_categories,
    read_checkpoint,
    read_weights,
)
from refinemask.errors import RefineMaskError

TORCHVISION_PREFIX = "torchvision:"
# torchvision detectors whose state dict has our key names and shapes (torchvision's v1
# R50-FPN box head, RPN head and FPN, which RefineMaskRCNN builds from the same classes); the
# _v2 models have other heads and do not fit
TORCHVISION_MODELS = ("maskrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn")

# Class-count-dependent tensors: the box classifier (C + 1 rows) and regressor (4(C + 1)), and
# the class-specific mask logits (RefineMask: one channel per class in each stage; Mask R-CNN:
# C + 1). tests/engine/test_init_weights.py checks this list against two built models.
CLASS_DEPENDENT = re.compile(
    r"roi_heads\.(box_predictor\.(cls_score|bbox_pred)"
    r"|mask_head\.(stages\.\d+\.instance_logits|final_instance_logits)"
    r"|mask_predictor\.mask_fcn_logits)\.(weight|bias)$"
)
MASK_HEAD_PREFIXES = ("roi_heads.mask_head.", "roi_heads.mask_predictor.")
# (prefix, part name) for the summary line, first match wins
PARTS = (
    ("backbone.body.", "backbone"),
    ("backbone.fpn.", "FPN"),
    ("rpn.", "RPN"),
    ("roi_heads.box_head.", "box head"),
    ("roi_heads.box_predictor.", "box predictor"),
    ("roi_heads.mask_", "mask head"),
)


def part_of(key: str) -> str:
    """The part of the detector a state-dict key belongs to ("backbone", "box predictor", ...)."""
    return next((name for prefix, name in PARTS if key.startswith(prefix)), key.split(".")[0])


def is_class_dependent(key: str) -> bool:
    """Whether the shape of tensor ``key`` depends on the number of classes."""
    return CLASS_DEPENDENT.match(key) is not None


def torchvision_weights_file(name: str) -> tuple[str, Path]:
    """(download URL, path in torch's hub cache) of torchvision's default weights for ``name``."""
    from urllib.parse import urlparse

    if name not in TORCHVISION_MODELS:
        raise RefineMaskError(
            f"{TORCHVISION_PREFIX}{name}: not a torchvision model this detector can start from; "
            f"known: {', '.join(TORCHVISION_PREFIX + n for n in TORCHVISION_MODELS)}"
        )
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def read_torchvision_weights(name: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision's ``name`` (COCO weights), downloaded into torch's cache once."""
    url, path = torchvision_weights_file(name)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = re.search(r"-([a-f0-9]+)\.", path.name)  # torchvision names end in -<sha256 prefix>.pth
        logging.getLogger("refinemask.run").info("downloading %s to %s", url, path)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=digest.group(1) if digest else None, progress=False)
        except Exception as err:  # noqa: BLE001 - offline, proxy, HTTP error, bad hash
            raise RefineMaskError(
                f"{TORCHVISION_PREFIX}{name}: cannot download {url} ({type(err).__name__}); offline, "
                f"fetch that file elsewhere and put it at {path}"
            ) from None
    return _tensor_mapping(read_checkpoint(path), path)


def _tensor_mapping(obj: dict, source) -> dict[str, torch.Tensor]:
    """A plain state dict from a file's dict: itself, or its ``model`` / ``state_dict`` entry."""
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise RefineMaskError(f"{source}: not a model state dict (expected a mapping of names to tensors)")
    if all(k.startswith("module.") for k in obj):  # saved from a (Distributed)DataParallel wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_init_weights(source: str) -> tuple[dict[str, torch.Tensor], str, dict]:
    """(state dict in our key names, kind of source, categories info) of any starting point.

    ``source`` is a refinemask weights file or training checkpoint, an official mmdetection
    RefineMask checkpoint (converted in memory), a torchvision detector's state dict file
    (``torch.save(model.state_dict())``, or safetensors), or ``torchvision:NAME``.
    """
    if source.startswith(TORCHVISION_PREFIX):
        name = source[len(TORCHVISION_PREFIX):]
        return read_torchvision_weights(name), f"torchvision {name} (COCO)", {}
    path = Path(source)
    if not path.is_file():
        raise RefineMaskError(f"train.init_weights: file not found: {path}")
    if path.suffix == ".safetensors":
        state, meta = read_weights(path)
        if meta.get("format") == FORMAT:
            return state, "refinemask weights", metadata_categories(meta)
        return _tensor_mapping(state, path), "state dict", {}
    if not is_torch_file(path):
        raise RefineMaskError(
            f"{path}: not a model file (train.init_weights takes a .safetensors or .pth model, or torchvision:NAME)"
        )
    obj = read_checkpoint(path)
    if "model" in obj and "config" in obj:
        return _tensor_mapping(obj["model"], path), "refinemask checkpoint", checkpoint_categories(obj)
    state = _tensor_mapping(obj, path)
    if any(k.startswith("roi_head.") for k in state):
        from refinemask.convert.mmdet import inspect_official, official_to_refinemask

        official = inspect_official(state, str(path))
        return official_to_refinemask(state, official.num_classes, str(path)), "official RefineMask checkpoint", {}
    return state, "torchvision-layout state dict", {}


def load_init_weights(model, source: str) -> str:
    """Load the starting weights ``source`` into a freshly built ``model`` for fine-tuning.

    Loads every tensor that fits; the class-count-dependent ones (:data:`CLASS_DEPENDENT`) of
    another shape, and the whole mask head when the source has none or one of another kind,
    keep the model's own initialisation. Anything else that does not fit raises a one-line
    :class:`RefineMaskError` naming the first mismatch. Returns the summary line.
    """
    theirs, kind, _ = read_init_weights(source)
    own = model.state_dict()
    # BN bookkeeping of plain BatchNorm2d; ours are frozen and have none
    theirs = {k: v for k, v in theirs.items() if k in own or not k.endswith("num_batches_tracked")}

    def is_mask(key: str) -> bool:
        return key.startswith(MASK_HEAD_PREFIXES)

    own_mask = {k for k in own if is_mask(k)}
    their_mask = {k for k in theirs if is_mask(k)}
    if not their_mask:
        head_note = "the source has no mask head"
    elif their_mask.isdisjoint(own_mask):
        head_note = "the source's mask head is of another kind"
    elif their_mask == own_mask:
        head_note = ""
    else:
        first = sorted(their_mask ^ own_mask)[0]
        where = "the model has no" if first in their_mask else "the source has no"
        raise RefineMaskError(
            f"{source}: does not fit this model: {where} tensor {first} (another mask-head configuration)"
        )
    fresh_head = bool(head_note)

    load: dict[str, torch.Tensor] = {}
    fresh: dict[str, int] = {}
    problems: list[str] = []
    for key, tensor in own.items():
        if fresh_head and is_mask(key):
            fresh["mask head"] = fresh.get("mask head", 0) + 1
            continue
        if key not in theirs:
            problems.append(f"{key} is not in the source")
        elif theirs[key].shape == tensor.shape:
            load[key] = theirs[key]
        elif is_class_dependent(key):
            fresh[part_of(key)] = fresh.get(part_of(key), 0) + 1
        else:
            problems.append(
                f"{key} has shape {list(theirs[key].shape)} in the source, the model expects {list(tensor.shape)}"
            )
    problems += [f"the source's {k} has no place in this model" for k in theirs if k not in own and not is_mask(k)]
    if problems:
        raise RefineMaskError(
            f"{source}: does not fit this model ({model.config.backbone} backbone, FPN width "
            f"{model.config.fpn_channels}, {model.config.mask_head} head); first mismatch: {problems[0]} "
            f"({len(problems)} in all; another backbone or FPN width?)"
        )
    own.update(load)
    model.load_state_dict(own, strict=True)

    classifier = theirs.get("roi_heads.box_predictor.cls_score.weight")
    their_classes = classifier.shape[0] - 1 if classifier is not None else None
    classes = f", {their_classes} classes" if their_classes is not None else ""
    summary = f"init_weights: loaded {len(load)} of {len(own)} tensors from {source} ({kind}{classes})"
    if fresh:
        count_change = f"{their_classes if their_classes is not None else '?'} -> {model.config.num_classes} classes"
        why = {part: head_note if part == "mask head" and fresh_head else count_change for part in fresh}
        grouped = ", ".join(f"{part} {n} ({why[part]})" for part, n in fresh.items())
        summary += f"; re-initialised {sum(fresh.values())}: {grouped}"
    return summary
