"""Reading files of tensors without ever running pickled code: the one place that opens weights.

Every weights source goes through these three readers: our model files and training
checkpoints (:mod:`refinemask.model_files`), the starting weights of a fine-tuning run
(:mod:`refinemask.engine.init_weights`), official mmdetection checkpoints
(:mod:`refinemask.convert`), and a backbone's classifier weights
(:mod:`refinemask.modeling.backbone`). ``.pth`` files are read with
``torch.load(weights_only=True)``: a file that would need pickled code or objects is refused,
not run. Each failure is one :class:`RefineMaskError` line naming the file.
"""
from __future__ import annotations

from pathlib import Path

import torch

from refinemask.errors import RefineMaskError


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


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` or ``.pth`` file, never executing pickled code.

    A ``.pth`` file is read with ``torch.load(weights_only=True)``; a checkpoint dict wrapping
    the weights under ``state_dict`` or ``model`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise RefineMaskError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is the user's file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RefineMaskError(f"{path}: not a readable weights file ({first})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RefineMaskError(f"{path}: does not hold a dict of tensors")
    return obj
