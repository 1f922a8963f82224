"""Model files: weights with the config and label mapping needed to rebuild the model.

Two formats, both read without executing pickled code:

* **Weights** (``.safetensors``): the model's tensors; the header's metadata holds the
  ``ModelConfig`` (JSON), the label → category-id mapping and the category names. Written by
  ``refinemask convert``, at the end of training, and by :func:`save_weights`. A YAML copy of
  the config is written beside it for people to read.
* **Training checkpoints** (``.pth``): a dict of tensors and plain values (model, optimizer,
  scheduler, iteration, config, label mapping, RNG states) written by the trainer and read
  with ``torch.load(weights_only=True)``.

:func:`load_model` takes either and returns a model in eval mode, ready to predict.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
import yaml

from refinemask.config import ModelConfig, from_dict, to_dict
from refinemask.errors import RefineMaskError

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
        "label_to_category": json.dumps({str(k): int(v) for k, v in labels.items()}),
        "category_names": json.dumps(list(names)),
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


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a ``.safetensors`` weights file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - the user's file is not valid safetensors
        raise RefineMaskError(f"{path}: not a valid .safetensors file ({type(err).__name__})") from None
    return state, metadata


def read_checkpoint(path: str | Path) -> dict:
    """A ``.pth`` training checkpoint, read with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        text = str(err).strip().splitlines()
        # torch says the same for a text file and for a pickle that would run code; name both
        reason = (
            "it is not a plain tensor checkpoint (another kind of file, or pickled code or "
            "objects, which are never loaded)"
        ) if "weights_only" in str(err) else (
            text[0][:160] if text else type(err).__name__
        )
        raise RefineMaskError(f"{path}: cannot be read as a checkpoint: {reason}") from None
    if not isinstance(obj, dict):
        raise RefineMaskError(f"{path}: not a checkpoint (expected a dict, found {type(obj).__name__})")
    return obj


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
        return state, config, _metadata_categories(meta)
    if not _is_torch_file(path):
        raise RefineMaskError(f"{path}: {NOT_A_MODEL_FILE}")
    ckpt = read_checkpoint(path)
    if "model" in ckpt and "config" in ckpt:
        model_cfg = ckpt["config"].get("model", ckpt["config"]) if isinstance(ckpt["config"], dict) else None
        if not isinstance(model_cfg, dict):
            raise RefineMaskError(f"{path}: checkpoint has no model config")
        config = from_dict(ModelConfig, model_cfg, "model")
        return ckpt["model"], config, _checkpoint_categories(ckpt)
    if "state_dict" in ckpt and any(k.startswith("roi_head.") for k in ckpt["state_dict"]):
        raise RefineMaskError(
            f"{path}: an official mmdetection checkpoint; convert it first: refinemask convert {path} OUT.safetensors"
        )
    raise RefineMaskError(f"{path}: {NOT_A_MODEL_FILE}")


def _is_torch_file(path: Path) -> bool:
    """True for what ``torch.save`` writes: a zip archive, or a pickle in the legacy format.

    Anything else (a text file, an image) would reach ``torch.load``, whose error for it
    says nothing a user can act on ("list index out of range").
    """
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"  # the pickle protocol opcode


def _metadata_categories(meta: dict) -> dict:
    """``label_to_category`` and ``category_names`` from a weights file's metadata."""
    return {
        "label_to_category": {int(k): int(v) for k, v in json.loads(meta.get("label_to_category", "{}")).items()},
        "category_names": json.loads(meta.get("category_names", "[]")),
    }


def _checkpoint_categories(ckpt: dict) -> dict:
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


def load_model(path: str | Path, device: str | torch.device = "cpu", **overrides):
    """A model from a weights file or a training checkpoint, in eval mode, ready to predict.

    ``overrides`` change test-time settings of the saved config (e.g. ``box_score_thresh``).
    The label mapping and class names are attached as ``model.label_to_category`` and
    ``model.category_names``.
    """
    from refinemask.modeling.detector import build_model_from_config

    state, config, info = describe_model_file(path)
    config_dict = to_dict(config)
    config_dict.update(overrides)
    config_dict["backbone_weights"] = None  # the file has them all; never download
    config = from_dict(ModelConfig, config_dict, "model")
    model = build_model_from_config(config)
    load_state_checked(model, state, str(path))
    model.label_to_category, model.category_names = info["label_to_category"], info["category_names"]
    model.label_to_category, model.category_names = model_categories(model)  # defaults where the file has none
    return model.to(device).eval()


# --- starting weights for fine-tuning (train.init_weights) ------------------------------------
# A run may start from a model trained for other classes. The tensors whose shape follows the
# class count keep the fresh initialisation of the model being trained; a mask head of another
# kind (Mask R-CNN weights into RefineMask, or none in a Faster R-CNN file) is initialised too.
# Everything else must fit exactly: a partial load that silently skips a backbone layer would
# train from a broken start, so any other mismatch is an error naming the first one.

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
            return state, "refinemask weights", _metadata_categories(meta)
        return _tensor_mapping(state, path), "state dict", {}
    if not _is_torch_file(path):
        raise RefineMaskError(
            f"{path}: not a model file (train.init_weights takes a .safetensors or .pth model, or torchvision:NAME)"
        )
    obj = read_checkpoint(path)
    if "model" in obj and "config" in obj:
        return _tensor_mapping(obj["model"], path), "refinemask checkpoint", _checkpoint_categories(obj)
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


# --- training checkpoints ---------------------------------------------------------------------
# ``OUTPUT_DIR/checkpoint_0001000.pth`` ... plus ``OUTPUT_DIR/last_checkpoint`` naming the newest.
# Everything in them is a tensor or a plain value, so ``read_checkpoint`` (weights_only=True)
# reads them back; RNG states are converted to tensors and lists for that reason.

TRAINING_FORMAT = "refinemask-train-v1"
LAST_CHECKPOINT_FILE = "last_checkpoint"


def checkpoint_name(iteration: int) -> str:
    return f"checkpoint_{iteration:07d}.pth"


def checkpoint_iteration(path: str | Path) -> int:
    """The iteration a training checkpoint was written at, read from its name (see ``checkpoint_name``)."""
    return int(Path(path).stem.rsplit("_", 1)[-1])


def capture_rng_state() -> dict:
    """This process's torch, numpy, Python (and CUDA) random states as tensors and plain values."""
    import random

    import numpy as np

    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict) -> None:
    """Undo :func:`capture_rng_state`: the random streams continue where they were captured."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    numpy_state = state["numpy"]
    np.random.set_state((
        "MT19937",
        numpy_state["keys"].numpy().astype(np.uint32),
        int(numpy_state["pos"]),
        int(numpy_state["has_gauss"]),
        float(numpy_state["cached_gaussian"]),
    ))
    python_state = state["python"]
    random.setstate((
        int(python_state["version"]),
        tuple(int(v) for v in python_state["state"].tolist()),
        python_state["gauss_next"],
    ))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_torch_save(obj, path: Path) -> None:
    """Write to a temporary file, flush it to disk, then rename: a reader sees all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_training_checkpoint(checkpoint: dict, output_dir: str | Path, keep: int = 0) -> Path:
    """Write ``checkpoint`` (which has an ``iteration``) to ``output_dir`` atomically.

    Updates ``last_checkpoint`` and, with ``keep > 0``, removes all but the ``keep`` newest
    checkpoints.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / checkpoint_name(int(checkpoint["iteration"]))
    _atomic_torch_save({"format": TRAINING_FORMAT, **checkpoint}, path)
    pointer = output_dir / LAST_CHECKPOINT_FILE
    tmp = pointer.with_name(pointer.name + ".tmp")
    tmp.write_text(path.name + "\n")
    os.replace(tmp, pointer)
    if keep > 0:
        for old in sorted(output_dir.glob("checkpoint_*.pth"))[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
    return path


def find_last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest training checkpoint in ``output_dir``, or None."""
    output_dir = Path(output_dir)
    pointer = output_dir / LAST_CHECKPOINT_FILE
    if pointer.is_file():
        named = output_dir / pointer.read_text().strip()
        if named.is_file():
            return named
    found = sorted(output_dir.glob("checkpoint_*.pth"))
    return found[-1] if found else None
