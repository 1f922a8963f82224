"""Optimiser and learning-rate schedule (docs/design.md §6.3), as pure functions of the iteration.

The official schedules: SGD (momentum 0.9, weight decay 1e-4) at 0.02 for a total batch of 16,
linear warmup over 500 iterations from 0.001 of the rate, ×0.1 at the listed epochs, gradient
L2 norm clipped at 35. mmdetection's warmup multiplies the regular (stepped) rate::

    factor(i) = step_factor(i) * (1 - (1 - i / warmup_iters) * (1 - warmup_ratio))   for i < warmup_iters

The rate scales linearly with the total batch (Goyal et al. 2017, "linear scaling rule"):
:func:`scaled_learning_rate`.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch

from refinemask.config import SolverConfig
from refinemask.errors import RefineMaskError


def total_batch_size(batch_per_device: int, world_size: int, grad_accum_steps: int) -> int:
    """Images that go into one optimiser step."""
    return batch_per_device * world_size * grad_accum_steps


def scaled_learning_rate(base_lr: float, total_batch: int, reference_batch: int) -> float:
    """``base_lr`` (right for ``reference_batch`` images per step) scaled to ``total_batch``."""
    return base_lr * total_batch / reference_batch


def lr_factor(
    iteration: int,
    total_iters: int,
    schedule: str = "step",
    step_iters: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.001,
) -> float:
    """The multiplier of the learning rate at ``iteration`` (0-based: the step about to be taken).

    ``schedule``: ``step`` (×gamma at each of ``step_iters`` reached), ``cosine`` (half a cosine
    from 1 to 0 over ``total_iters``) or ``constant``.
    """
    if schedule == "step":
        factor = gamma ** bisect.bisect_right(sorted(step_iters), iteration)
    elif schedule == "cosine":
        progress = min(iteration, total_iters) / max(total_iters, 1)
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "constant":
        factor = 1.0
    else:
        raise RefineMaskError(f"unknown learning-rate schedule {schedule!r}; choose step, cosine or constant")
    if iteration < warmup_iters:
        factor *= 1.0 - (1.0 - iteration / warmup_iters) * (1.0 - warmup_ratio)
    return factor


# parameters that a Swin recipe exempts from weight decay by name (mmdetection's custom_keys)
POSITION_PARAMETERS = ("relative_position_bias_table", "absolute_pos_embed", "pos_embed")


def decay_groups(model: torch.nn.Module, no_weight_decay: Sequence[str]) -> list[dict]:
    """The trainable parameters as optimiser groups: those of the ``no_weight_decay`` kinds get
    ``weight_decay=0``, the rest the solver's.

    Kinds: ``norm`` (every batch/layer/group norm's weight and bias, found by module type, since
    torchvision names many norms by index), ``bias`` (every other ``*.bias``), ``position``
    (Swin's relative position bias tables and position embeddings). The official RefineMask
    configs exempt nothing; mmdetection's Swin recipes exempt norms and position tables, its
    ConvNeXt recipes norms and biases (every 1-D parameter).
    """
    from refinemask.modeling.backbone import is_norm_layer

    exempt: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if ("norm" in no_weight_decay and is_norm_layer(module)) or ("bias" in no_weight_decay and name == "bias") or (
                "position" in no_weight_decay and name.endswith(POSITION_PARAMETERS)
            ):
                exempt.add(id(parameter))
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in exempt]}]
    if exempt:
        groups.append({"params": [p for p in trainable if id(p) in exempt], "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def build_optimizer(params, solver: SolverConfig, lr: float) -> torch.optim.Optimizer:
    """The solver's optimiser over ``params`` (parameters, or groups from :func:`decay_groups`);
    frozen parameters are left out. One rate for all; weight decay as each group says."""
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
        params = [g for g in params if g["params"]]
    else:
        params = [p for p in params if p.requires_grad]
    if solver.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=solver.momentum, weight_decay=solver.weight_decay)
    if solver.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=solver.weight_decay)
    raise RefineMaskError(f"unknown optimizer {solver.optimizer!r}; choose sgd or adamw")


def build_scheduler(
    optimizer: torch.optim.Optimizer, solver: SolverConfig, total_iters: int, iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler: call ``step()`` after every optimiser step.

    The epochs of ``solver.lr_steps`` become iterations with ``iters_per_epoch``.
    """
    step_iters = [round(epoch * iters_per_epoch) for epoch in solver.lr_steps]

    def factor(iteration: int) -> float:
        return lr_factor(
            iteration,
            total_iters,
            solver.lr_schedule,
            step_iters,
            solver.gamma,
            solver.warmup_iters,
            solver.warmup_ratio,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
