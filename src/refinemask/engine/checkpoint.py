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
import os
from pathlib import Path

import torch
import yaml

from refinemask.config import ModelConfig, from_dict, to_dict
from refinemask.errors import RefineMaskError

FORMAT = "refinemask-v1"


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
    labels = label_to_category or {i: i for i in range(1, model.config.num_classes + 1)}
    names = category_names or [f"class_{i}" for i in range(1, model.config.num_classes + 1)]
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
        info = {
            "label_to_category": {int(k): int(v) for k, v in json.loads(meta.get("label_to_category", "{}")).items()},
            "category_names": json.loads(meta.get("category_names", "[]")),
        }
        return state, config, info
    ckpt = read_checkpoint(path)
    if "model" in ckpt and "config" in ckpt:
        model_cfg = ckpt["config"].get("model", ckpt["config"]) if isinstance(ckpt["config"], dict) else None
        if not isinstance(model_cfg, dict):
            raise RefineMaskError(f"{path}: checkpoint has no model config")
        config = from_dict(ModelConfig, model_cfg, "model")
        info = {
            "label_to_category": {int(k): int(v) for k, v in dict(ckpt.get("label_to_category") or {}).items()},
            "category_names": list(ckpt.get("category_names") or []),
        }
        return ckpt["model"], config, info
    if "state_dict" in ckpt and any(k.startswith("roi_head.") for k in ckpt["state_dict"]):
        raise RefineMaskError(
            f"{path}: an official mmdetection checkpoint; convert it first: refinemask convert {path} OUT.safetensors"
        )
    raise RefineMaskError(f"{path}: not a refinemask model or checkpoint")


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
    model.label_to_category = info["label_to_category"] or {i: i for i in range(1, config.num_classes + 1)}
    model.category_names = info["category_names"] or [str(i) for i in range(1, config.num_classes + 1)]
    return model.to(device).eval()


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
