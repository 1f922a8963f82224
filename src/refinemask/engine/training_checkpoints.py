"""Training checkpoints: what a run writes to be resumed exactly; finding and reading them back.

``OUTPUT_DIR/checkpoint_0001000.pth`` ... plus ``OUTPUT_DIR/last_checkpoint`` naming the newest.
Everything in them is a tensor or a plain value, so
:func:`~refinemask.tensor_files.read_checkpoint` (``weights_only=True``) reads them back
(and :func:`~refinemask.model_files.load_model` takes one); RNG states are converted to
tensors and lists for that reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from refinemask.tensor_files import read_checkpoint
from refinemask.errors import RefineMaskError

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


def read_training_checkpoint(path: str | Path) -> dict:
    """A training checkpoint to resume from, with the entries resuming needs (a one-line error if not)."""
    checkpoint = read_checkpoint(path)
    for key in ("model", "optimizer", "scheduler", "iteration", "rng"):
        if key not in checkpoint:
            raise RefineMaskError(f"{path}: not a training checkpoint (no {key!r}); delete it or start without --resume")
    return checkpoint


def config_changes(old: dict, new: dict, ignore: set[str], prefix: str = "") -> list[str]:
    """``"key.sub: old -> new"`` for every setting that differs between two config dicts (nested),
    except the dotted names in ``ignore``: what a resumed run changed since its checkpoint."""
    changed = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if name in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed.extend(config_changes(a, b, ignore, f"{name}."))
        elif a != b:
            changed.append(f"{name}: {a!r} -> {b!r}")
    return changed
