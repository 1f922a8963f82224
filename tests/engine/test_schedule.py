"""Learning rate: linear scaling to the total batch, mmdetection's warmup, step and cosine decay."""
from __future__ import annotations

import pytest
import torch

from refinemask.config import SolverConfig
from refinemask.engine.schedule import (
    build_optimizer,
    build_scheduler,
    lr_factor,
    scaled_learning_rate,
    total_batch_size,
)


@pytest.mark.parametrize(
    "per_device, devices, accumulation, expected",
    [(2, 8, 1, 0.02), (2, 1, 1, 0.0025), (1, 1, 1, 0.00125), (2, 4, 1, 0.01), (2, 8, 2, 0.04), (1, 2, 4, 0.01)],
)
def test_learning_rate_scales_linearly_with_the_total_batch(per_device, devices, accumulation, expected):
    total = total_batch_size(per_device, devices, accumulation)
    assert total == per_device * devices * accumulation
    assert scaled_learning_rate(0.02, total, 16) == pytest.approx(expected)


def test_warmup_rises_linearly_from_the_ratio_to_the_full_rate():
    factors = [lr_factor(i, 1000, "step", [], warmup_iters=500, warmup_ratio=0.001) for i in (0, 250, 499, 500, 900)]
    assert factors[0] == pytest.approx(0.001)
    assert factors[1] == pytest.approx(0.001 + 0.5 * 0.999)
    assert factors[2] < 1.0 and factors[3] == factors[4] == 1.0


def _lrs(solver: SolverConfig, iterations: list[int], iters_per_epoch: int, total: int) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([parameter], solver, lr=0.02)
    scheduler = build_scheduler(optimizer, solver, total, iters_per_epoch)
    seen = {}
    for i in range(max(iterations) + 1):
        seen[i] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    return [seen[i] for i in iterations]


def test_step_schedule_decays_tenfold_at_each_listed_epoch():
    solver = SolverConfig(lr_steps=[8, 11], warmup_iters=0)
    before, after_8, before_11, after_11 = _lrs(solver, [79, 80, 109, 110], iters_per_epoch=10, total=120)
    assert before == pytest.approx(0.02) and after_8 == pytest.approx(0.002)
    assert before_11 == pytest.approx(0.002) and after_11 == pytest.approx(0.0002)


def test_cosine_schedule_falls_from_the_rate_to_zero():
    solver = SolverConfig(lr_schedule="cosine", warmup_iters=0)
    start, middle, end = _lrs(solver, [0, 50, 100], iters_per_epoch=10, total=100)
    assert start == pytest.approx(0.02) and middle == pytest.approx(0.01) and end == pytest.approx(0.0, abs=1e-12)


def test_sgd_uses_the_configured_momentum_and_weight_decay_for_trainable_parameters_only():
    frozen, trained = torch.nn.Parameter(torch.zeros(1), requires_grad=False), torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([frozen, trained], SolverConfig(), lr=0.02)
    group = optimizer.param_groups[0]
    assert group["params"] == [trained] and (group["momentum"], group["weight_decay"]) == (0.9, 1e-4)


def test_decay_groups_exempt_the_kinds_a_recipe_names_and_nothing_else():
    from refinemask.engine.schedule import decay_groups

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.bn = torch.nn.BatchNorm2d(4)
            self.ln = torch.nn.LayerNorm(4)  # named like torchvision's index-named norms: by type, not name
            self.relative_position_bias_table = torch.nn.Parameter(torch.zeros(9, 2))

    block = Block()
    solver = SolverConfig(optimizer="adamw", weight_decay=0.05)

    def exempt(kinds):
        groups = build_optimizer(decay_groups(block, kinds), solver, lr=1e-4).param_groups
        return {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}, groups

    none, groups = exempt([])
    assert none == set() and len(groups) == 1 and groups[0]["weight_decay"] == 0.05
    norms = {id(p) for p in [*block.bn.parameters(), *block.ln.parameters()]}
    assert exempt(["norm"])[0] == norms
    assert exempt(["norm", "bias"])[0] == norms | {id(block.conv.bias)}
    assert exempt(["norm", "position"])[0] == norms | {id(block.relative_position_bias_table)}
    decayed = [p for g in exempt(["norm", "bias"])[1] if g["weight_decay"] == 0.05 for p in g["params"]]
    assert {id(p) for p in decayed} == {id(block.conv.weight), id(block.relative_position_bias_table)}
