"""Typed configuration: dataclasses, loaded from YAML with ``key.sub=value`` overrides.

Every object is built from these values explicitly (no registry, no string-typed types). An
unknown key is an error that names the nearest valid key, and a config is saved next to every
checkpoint so that a model can be rebuilt exactly.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from refinemask.errors import RefineMaskError


@dataclass
class ModelConfig:
    """What decides the model's architecture and its test-time behaviour."""

    num_classes: int = 80
    backbone: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 | efficientnet_lite0
    backbone_weights: str | None = None  # None | "imagenet" | path to a classifier state dict
    trainable_backbone_layers: int = 3  # 3 = official frozen_stages=1
    mask_head: str = "refinemask"  # refinemask | maskrcnn
    class_agnostic_last_stage: bool = False  # the LVIS setting: last stage 32 -> 1
    dilations: list[int] = field(default_factory=lambda: [1, 3, 5])
    # image pipeline (spec §1.2); several min sizes = multi-scale training ('value' mode)
    min_size: list[int] = field(default_factory=lambda: [800])
    max_size: int = 1333
    # RPN (spec §1)
    exact_anchors: bool = True  # mmdetection's anchors (unrounded, strides 4..64)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 1000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    # box head
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_loss_weight: float = 2.0
    box_reg_loss: str = "l1"  # l1 | smooth_l1 (Cityscapes)
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    # mask head
    mask_chunk_size: int = 100
    bar_stage_weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    boundary_width: int = 2
    semantic_loss_weight: float = 1.0


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def suggest(name: str, options: list[str]) -> str:
    """' (did you mean X?)' for the nearest valid name, or ''."""
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, annotation, where: str):
    """Check and convert a YAML/override value to the annotated type."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing), {})  # annotations are postponed strings
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except RefineMaskError as err:
                errors.append(str(err))
        raise RefineMaskError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, args[0] if args else Any, where) for v in value]
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise RefineMaskError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise RefineMaskError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise RefineMaskError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise RefineMaskError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise RefineMaskError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RefineMaskError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise RefineMaskError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys with a suggestion."""
    if data is None:
        data = {}
    names = _field_names(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise RefineMaskError(f"{where}: unknown key {key!r}{suggest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where != "config" else key)
    return cls(**kwargs)


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (['a', 'b'], parsed YAML value)."""
    if "=" not in text:
        raise RefineMaskError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set ``key.sub=value`` items into a nested dict (validated later by :func:`from_dict`)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RefineMaskError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RefineMaskError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RefineMaskError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RefineMaskError(f"{path}: the top level must be a mapping of sections")
    return data
