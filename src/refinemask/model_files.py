"""Model files: weights with the config and label mapping needed to rebuild the model.

Two formats, both read without executing pickled code:

* **Weights** (``.safetensors``): the model's tensors; the header's metadata holds the
  ``ModelConfig`` (JSON), the label → category-id mapping and the category names. Written by
  ``refinemask convert``, at the end of training, and by :func:`save_weights`. A YAML copy of
  the config is written beside it for people to read.
* **Training checkpoints** (``.pth``): a dict of tensors and plain values (model, optimizer,
  scheduler, iteration, config, label mapping, RNG states) written by the trainer and read
  with ``torch.load(weights_only=True)``.

:func:`load_model` takes either and returns a model in eval mode, ready to predict. Writing
training checkpoints is :mod:`refinemask.engine.training_checkpoints`; starting a run from
another model's weights, :mod:`refinemask.engine.init_weights`. This module sits beside the
packages, not in the engine, because training, official-checkpoint conversion and export all
write or read these files.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from refinemask.config import ModelConfig, from_dict, to_dict
from refinemask.errors import RefineMaskError
from refinemask.tensor_files import read_checkpoint, read_weights

FORMAT = "refinemask-v1"
NOT_A_MODEL_FILE = (
    "not a refinemask weights or checkpoint file (give a .safetensors model from training or "
    "`refinemask convert`, or a checkpoint_*.pth of a training run)"
)


def save_weights(
    model,
    path: str | Path,
    label_to_category: dict[int, int] | None = None,
    category_names: list[str] | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``model``'s weights and what is needed to rebuild it to a ``.safetensors`` file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = to_dict(model.config)
    own_labels, own_names = model_categories(model)
    labels = label_to_category or own_labels
    names = category_names or own_names
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config),
        **category_metadata(labels, names),
        **(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)  # atomic: a reader never sees half a file
    write_weights_description(path, config, names)
    return path


def model_categories(model) -> tuple[dict[int, int], list[str]]:
    """(label → category id, names) of ``model``: those it carries, else ids 1..C named ``class_<id>``.

    Training attaches the data set's categories (``model.label_to_category``, ``model.category_names``)
    and every model file stores them; predict, serve, export and the COCO results all read them
    here, so a model without them (built in Python) gets the same defaults everywhere.
    """
    from refinemask.data.categories import default_categories

    labels, names = default_categories("custom", model.config.num_classes)
    return (
        dict(getattr(model, "label_to_category", None) or labels),
        list(getattr(model, "category_names", None) or names),
    )


def write_weights_description(path: Path, model_config: dict, category_names: list[str]) -> Path:
    """The ``.yaml`` beside a weights file: its model settings and class names, for people to read."""
    beside = Path(path).with_suffix(".yaml")
    header = (
        f"# What {Path(path).name} holds (the same is stored inside it). A description, not a run config:\n"
        "# to train or evaluate, copy the `model:` section into a config with data, solver and train sections.\n"
    )
    body = yaml.safe_dump({"model": model_config, "category_names": list(category_names)}, sort_keys=False)
    beside.write_text(header + body)
    return beside


def describe_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict]:
    """(state dict, model config, info with ``label_to_category``/``category_names``) of a model file."""
    path = Path(path)
    if not path.is_file():
        raise RefineMaskError(f"model file not found: {path}")
    if path.suffix == ".safetensors":
        state, meta = read_weights(path)
        if meta.get("format") != FORMAT or "config" not in meta:
            raise RefineMaskError(f"{path}: safetensors file without refinemask metadata; not a refinemask model")
        config = from_dict(ModelConfig, json.loads(meta["config"]), "model")
        return state, config, metadata_categories(meta)
    if not is_torch_file(path):
        raise RefineMaskError(f"{path}: {NOT_A_MODEL_FILE}")
    ckpt = read_checkpoint(path)
    if "model" in ckpt and "config" in ckpt:
        model_cfg = ckpt["config"].get("model", ckpt["config"]) if isinstance(ckpt["config"], dict) else None
        if not isinstance(model_cfg, dict):
            raise RefineMaskError(f"{path}: checkpoint has no model config")
        config = from_dict(ModelConfig, model_cfg, "model")
        return ckpt["model"], config, checkpoint_categories(ckpt)
    if "state_dict" in ckpt and any(k.startswith("roi_head.") for k in ckpt["state_dict"]):
        raise RefineMaskError(
            f"{path}: an official mmdetection checkpoint; convert it first: refinemask convert {path} OUT.safetensors"
        )
    raise RefineMaskError(f"{path}: {NOT_A_MODEL_FILE}")


def is_torch_file(path: Path) -> bool:
    """True for what ``torch.save`` writes: a zip archive, or a pickle in the legacy format.

    Anything else (a text file, an image) would reach ``torch.load``, whose error for it
    says nothing a user can act on ("list index out of range").
    """
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"  # the pickle protocol opcode


def category_metadata(label_to_category: dict[int, int], category_names) -> dict[str, str]:
    """The label map and class names as the metadata strings of a weights or ONNX file; read
    back by :func:`metadata_categories`."""
    return {
        "label_to_category": json.dumps({str(k): int(v) for k, v in label_to_category.items()}),
        "category_names": json.dumps(list(category_names)),
    }


def metadata_categories(meta: dict) -> dict:
    """``label_to_category`` and ``category_names`` from a weights file's metadata."""
    return {
        "label_to_category": {int(k): int(v) for k, v in json.loads(meta.get("label_to_category", "{}")).items()},
        "category_names": json.loads(meta.get("category_names", "[]")),
    }


def checkpoint_categories(ckpt: dict) -> dict:
    """``label_to_category`` and ``category_names`` from a training checkpoint."""
    return {
        "label_to_category": {int(k): int(v) for k, v in dict(ckpt.get("label_to_category") or {}).items()},
        "category_names": list(ckpt.get("category_names") or []),
    }


def load_state_checked(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that explains a mismatch in one line (e.g. weights for another class count)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in state if k in own and state[k].shape != own[k].shape]
    if wrong:
        k, theirs, ours = wrong[0]
        raise RefineMaskError(
            f"{source}: weights do not fit this model: {k} has shape {list(theirs)}, the model expects {list(ours)} "
            f"({len(wrong)} tensors differ; different number of classes or another model?)"
        )
    if missing or unexpected:
        first = (missing and f"missing {missing[0]}") or f"unexpected {unexpected[0]}"
        raise RefineMaskError(
            f"{source}: weights do not fit this model ({len(missing)} missing, {len(unexpected)} unexpected; first: {first})"
        )
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu", config: ModelConfig | None = None, **overrides):
    """A model from a weights file or a training checkpoint, in eval mode, ready to predict.

    ``config``: build this model section (a run config's, as ``refinemask eval`` does) instead of
    the one saved with the weights. ``overrides`` change test-time settings of the config (e.g.
    ``box_score_thresh``). The label mapping and class names are attached as
    ``model.label_to_category`` and ``model.category_names``.
    """
    from refinemask.modeling.detector import build_model_from_config

    state, saved, info = describe_model_file(path)
    config_dict = to_dict(saved if config is None else config)
    config_dict.update(overrides)
    config_dict["backbone_weights"] = None  # the file has them all; never download
    config = from_dict(ModelConfig, config_dict, "model")
    model = build_model_from_config(config)
    load_state_checked(model, state, str(path))
    model.label_to_category, model.category_names = info["label_to_category"], info["category_names"]
    model.label_to_category, model.category_names = model_categories(model)  # defaults where the file has none
    return model.to(device).eval()
