"""Mixed precision in training: which ``train.amp`` a device allows, and the autocast context.

``train.amp=fp16`` (autocast + GradScaler) or ``bf16`` (autocast) on CUDA; boxes are
decoded in float32 either way (:class:`~refinemask.modeling.rpn.Float32BoxCoder`). On the CPU,
mixed precision is refused: torchvision's detection ops have no fast bf16 CPU kernels and
the speed-up would be small; train in fp32 (``train.amp=none``).
"""
from __future__ import annotations

import contextlib

import torch

from refinemask.errors import RefineMaskError


def check_amp(amp: str, device: torch.device) -> None:
    """Raise a one-line error when ``device`` cannot train with ``amp`` ("none", "fp16", "bf16")."""
    if amp != "none" and device.type != "cuda":
        raise RefineMaskError(
            f"train.amp={amp} needs a CUDA device; on the CPU train in full precision (train.amp=none)"
        )
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise RefineMaskError("train.amp=bf16: this GPU does not support bfloat16; use train.amp=fp16")


def autocast(amp: str, device: torch.device):
    """The forward pass's autocast context for ``amp`` (a no-op for "none")."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
