"""Convert an official RefineMask checkpoint file (mmdetection v2.3) to a refinemask model file.

:func:`read_official_checkpoint` reads the file, :mod:`refinemask.convert.mmdet` maps its
tensors and reads the kind of model from them, and :func:`convert_checkpoint` writes the model
file (``.safetensors`` or ``.pth``) with its categories. ``refinemask convert`` calls it.

Checkpoints are read with ``torch.load(weights_only=True)``: a file that carries pickled code is
refused before anything in it runs.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from refinemask.config import ModelConfig, to_dict
from refinemask.convert.mmdet import (
    DATASET_CLASSES,
    DATASET_SETTINGS,
    DATASETS,
    OfficialModel,
    inspect_official,
    model_config,
    official_categories,
    official_to_refinemask,
)
from refinemask.errors import RefineMaskError


@dataclass(frozen=True)
class Conversion:
    """The result of :func:`convert_checkpoint`."""

    path: Path
    official: OfficialModel
    config: ModelConfig
    category_names: list[str]


def read_official_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The ``state_dict`` and ``meta`` of an official checkpoint, read without running code.

    Raises :class:`RefineMaskError` (one line) for a missing file, a file that is not a
    PyTorch checkpoint, a pickle carrying code, or a checkpoint of another model.
    """
    from refinemask.tensor_files import read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise RefineMaskError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        raise RefineMaskError(
            f"{path}: a .safetensors file is already converted; load it with refinemask.load_model"
        )
    with warnings.catch_warnings():
        # torch warns about pickle protocols of files it then refuses; the refusal is the message
        warnings.simplefilter("ignore")
        ckpt = read_checkpoint(path)  # torch.load(weights_only=True): no code runs
    if isinstance(ckpt.get("state_dict"), dict):
        state, meta = ckpt["state_dict"], ckpt.get("meta")
    elif "model" in ckpt and "config" in ckpt:
        raise RefineMaskError(f"{path}: a refinemask training checkpoint, not an official one; load it with refinemask.load_model")
    else:
        state, meta = ckpt, None  # a bare state dict
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise RefineMaskError(f"{path}: its state_dict is not a mapping of names to tensors; not a model checkpoint")
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state), meta if isinstance(meta, dict) else {}


def convert_checkpoint(
    source: str | Path,
    destination: str | Path,
    dataset: str | None = None,
    categories: str | Path | None = None,
) -> Conversion:
    """Convert an official checkpoint into a model file that :func:`refinemask.load_model` reads.

    Args:
        source: the official ``.pth``.
        destination: ``.safetensors`` (default; a name without suffix gets it) or ``.pth``.
            A YAML copy of the config is written beside it.
        dataset: "coco", "lvis", "cityscapes" or "custom" to override the data set guessed
            from the number of classes (it decides the test settings and category ids).
        categories: a COCO/LVIS-format json whose ``categories`` give ids and names.
    """
    from refinemask.model_files import load_state_checked, save_weights
    from refinemask.modeling.detector import build_model_from_config

    source = Path(source)
    state, meta = read_official_checkpoint(source)
    official = inspect_official(state, str(source))
    if dataset is not None:
        if dataset not in DATASET_SETTINGS:
            raise RefineMaskError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
        expected = DATASET_CLASSES.get(dataset)
        if expected is not None and expected != official.num_classes:
            raise RefineMaskError(
                f"{source}: has {official.num_classes} classes, but {dataset} has {expected}; use --dataset custom"
            )
        official = dataclasses.replace(official, dataset=dataset)
    converted = official_to_refinemask(state, official.num_classes, str(source))
    config = model_config(official)
    labels, names = official_categories(official, official.dataset, meta, categories)

    model = build_model_from_config(config)
    load_state_checked(model, converted, str(source))  # strict: every tensor has its place
    destination = Path(destination)
    if destination.suffix not in (".safetensors", ".pth"):
        destination = destination.with_name(destination.name + ".safetensors")
    extra = {"converted_from": source.name, "source_format": "mmdetection-2.3"}
    if destination.suffix == ".safetensors":
        save_weights(model, destination, labels, names, extra=extra)
    else:
        _save_pth(model, destination, labels, names, extra)
    return Conversion(destination, official, config, names)


def _save_pth(model, path: Path, labels: dict[int, int], names: list[str], extra: dict) -> None:
    """A ``.pth`` of plain values that :func:`refinemask.load_model` reads with weights_only=True."""
    from refinemask.model_files import write_weights_description

    path.parent.mkdir(parents=True, exist_ok=True)
    config = to_dict(model.config)
    payload = {
        "model": {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
        "config": {"model": config},
        "label_to_category": {int(k): int(v) for k, v in labels.items()},
        "category_names": list(names),
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    write_weights_description(path, config, names)
