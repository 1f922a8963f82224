"""The deterministic-mode RoIAlign and resizes equal torchvision's and PyTorch's, forward and backward."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision

from refinemask.modeling import ops
from refinemask.modeling.refinemask_head import RefineMaskHead
from refinemask.modeling.separable_ops import (
    interpolation_matrix,
    plan_chunks,
    resize_by_matrices,
    separable_roi_align,
)
from refinemask.modeling.simple_refinemask_head import SimpleRefineMaskHead

TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5}


def _rois(generator: torch.Generator, dtype: torch.dtype, count: int = 40) -> torch.Tensor:
    """Boxes inside, across and outside a 13×17 map at scales 1 and 1/4, tiny ones and one far out."""
    corners = torch.rand(count, 4, generator=generator, dtype=dtype) * torch.tensor([90, 70, 90, 70], dtype=dtype) - 10
    boxes = torch.cat([corners[:, :2], corners[:, :2] + (corners[:, 2:] - corners[:, :2]).abs()], 1)
    boxes[0] = torch.tensor([10, 10, 10.3, 10.2])  # under a pixel
    boxes[1] = torch.tensor([200, 200, 220, 230])  # beyond the map
    boxes[2] = torch.tensor([-30, -30, -5, -3])  # before it
    boxes[3] = torch.tensor([0, 0, 68, 52])  # the whole map at scale 1/4
    images = torch.randint(0, 2, (count, 1), generator=generator).to(dtype)
    return torch.cat([images, boxes], 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_separable_roi_align_equals_torchvision_forward_and_backward(dtype):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 13, 17, generator=generator, dtype=dtype, requires_grad=True)
    rois = _rois(generator, dtype)
    for sampling_ratio, aligned, size, scale in itertools.product((0, 2), (True, False), (7, (5, 3)), (0.25, 1.0)):
        expected = torchvision.ops.roi_align(features, rois, size, scale, sampling_ratio, aligned)
        actual = separable_roi_align(features, rois, size, scale, sampling_ratio, aligned)
        upstream = torch.randn(expected.shape, generator=generator, dtype=dtype)
        (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), features)
        (actual_grad,) = torch.autograd.grad((actual * upstream).sum(), features)
        case = f"sampling_ratio={sampling_ratio} aligned={aligned} size={size} scale={scale}"
        assert actual.dtype == dtype and actual.shape == expected.shape, case
        torch.testing.assert_close(actual, expected, atol=TOLERANCE[dtype], rtol=0, msg=case)
        torch.testing.assert_close(actual_grad, expected_grad, atol=10 * TOLERANCE[dtype], rtol=0, msg=case)


def test_adaptive_sampling_reads_ceil_of_the_bin_size_points_per_axis():
    # a 28 px RoI pooled to 2 bins takes 14 samples per bin axis: on a ramp each bin is the mean
    # of its samples' x, i.e. the bin centre; with 2 fixed samples the mean is the same, but on
    # x² it is not, and the adaptive mean is the finer one
    x = torch.arange(32, dtype=torch.float64)
    features = (x**2).expand(1, 1, 4, 32).contiguous()
    rois = torch.tensor([[0.0, 2.0, 0.0, 30.0, 4.0]], dtype=torch.float64)
    adaptive = separable_roi_align(features, rois, (1, 2), 1.0, 0, True)[0, 0, 0]
    samples = 1.5 + (torch.arange(14, dtype=torch.float64) + 0.5)  # bin 0's sample positions in pixels
    assert adaptive[0].item() == pytest.approx(float((samples**2).mean()))


def test_chunks_stay_within_the_bound_and_give_the_same_values():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 4, 13, 17, generator=generator, dtype=torch.float64)
    rois = _rois(generator, torch.float64)
    whole = separable_roi_align(features, rois, 7, 1.0, 0, True)
    torch.testing.assert_close(separable_roi_align(features, rois, 7, 1.0, 0, True, max_elements=200), whole,
                               atol=1e-12, rtol=0)
    spans = [[3, 4], [3, 5], [10, 2], [12, 12], [1, 1]]
    chunks = plan_chunks(spans, channels=4, max_elements=200)
    assert [(b, e) for b, e, _, _ in chunks] == [(0, 2), (2, 3), (3, 4), (4, 5)]
    for begin, end, rows, cols in chunks:  # the padded windows: under the bound, or one RoI alone
        assert all(spans[i][0] <= rows and spans[i][1] <= cols for i in range(begin, end))
        assert (end - begin) * rows * cols * 4 <= 200 or end - begin == 1


def test_a_reversed_roi_pools_zeros():
    features = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0.0, 6.0, 6.0, 2.0, 2.0]])  # x2 < x1: torchvision's CUDA kernel gives zeros
    assert torch.equal(separable_roi_align(features, rois, 3, 1.0, 0, True), torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("sizes", [(14, 28), (28, 56), (7, 5), (1, 4)])
def test_interpolation_matrices_equal_interpolate_forward_and_backward(align_corners, sizes):
    source, target = sizes
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, source, source, generator=generator, requires_grad=True)
    expected = F.interpolate(x, size=(target, target), mode="bilinear", align_corners=align_corners)
    actual = resize_by_matrices(x, (target, target), align_corners)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    upstream = torch.randn(expected.shape, generator=generator)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), x)
    (actual_grad,) = torch.autograd.grad((actual * upstream).sum(), x)
    torch.testing.assert_close(actual_grad, expected_grad, atol=1e-5, rtol=0)
    assert torch.allclose(interpolation_matrix(source, target, align_corners).sum(1), torch.ones(target))


def test_resize_by_matrices_under_bf16_autocast_computes_in_float32():
    x = torch.randn(2, 3, 14, 14, generator=torch.Generator().manual_seed(3)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = resize_by_matrices(x, (28, 28), align_corners=True)
    expected = F.interpolate(x.float(), size=(28, 28), mode="bilinear", align_corners=True).bfloat16()
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected.float(), atol=0, rtol=2**-7)  # one bf16 step


@pytest.mark.parametrize("head_class", [RefineMaskHead, SimpleRefineMaskHead])
def test_deterministic_mode_sends_every_pool_and_resize_of_a_head_through_weight_products(head_class, monkeypatch):
    """With deterministic CUDA kernels needed (forced here, on the CPU), a head calls neither
    torchvision's roi_align nor F.interpolate, and its logits and gradients stay the same."""
    torch.manual_seed(0)
    head = head_class(stage_num_classes=(3, 3, 3, 3), in_channels=32).double()
    generator = torch.Generator().manual_seed(4)
    feats = torch.randn(4, 32, 14, 14, generator=generator, dtype=torch.float64)
    p2 = torch.randn(2, 32, 24, 32, generator=generator, dtype=torch.float64)
    rois = torch.tensor([[0, 4, 6, 60, 80], [1, 10, 10, 120, 90], [0, 0, 0, 127, 95], [1, 50, 40, 56, 47]],
                        dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 0])

    def run():
        head.zero_grad()
        semantic = head.semantic_forward(p2)
        stage_logits = head.instance_forward(feats, semantic, rois, labels)
        semantic_loss = semantic[0].mean() if semantic[0] is not None else 0.0  # the simple head has none
        (sum(s.square().mean() for s in stage_logits) + semantic_loss).backward()
        return [s.detach() for s in stage_logits], {n: p.grad.clone() for n, p in head.named_parameters()}

    expected_logits, expected_grads = run()
    monkeypatch.setattr(ops, "deterministic_kernels_needed", lambda tensor: True)

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel without a deterministic CUDA backward was called")

    monkeypatch.setattr(torchvision.ops, "roi_align", refuse)
    monkeypatch.setattr(F, "interpolate", refuse)
    actual_logits, actual_grads = run()
    for actual, expected in zip(actual_logits, expected_logits):
        torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0)
    for name in expected_grads:
        torch.testing.assert_close(actual_grads[name], expected_grads[name], atol=1e-10, rtol=0, msg=name)


def test_the_switch_is_cuda_with_deterministic_algorithms_only(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert not ops.deterministic_kernels_needed(cpu)  # the CPU kernels are deterministic already


def test_deterministic_mode_pools_fpn_levels_with_the_same_values(monkeypatch):
    generator = torch.Generator().manual_seed(5)
    features = [torch.randn(2, 4, 64 // s, 96 // s, generator=generator, dtype=torch.float64) for s in (4, 8, 16, 32)]
    sides = torch.tensor([50.0, 150.0, 300.0, 500.0], dtype=torch.float64)  # one box for each level
    one_each = torch.stack([torch.tensor([0.0, 1, 1, 1, 1], dtype=torch.float64) * torch.tensor([0, 5, 3, 0, 0])
                            + torch.tensor([0, 0, 0, 1, 1], dtype=torch.float64) * side for side in sides])
    rois = torch.cat([_rois(generator, torch.float64), one_each])
    expected = ops.multilevel_roi_align(features, rois, 7, [4, 8, 16, 32])
    monkeypatch.setattr(ops, "deterministic_kernels_needed", lambda tensor: True)
    monkeypatch.setattr(torchvision.ops, "roi_align", lambda *a, **k: pytest.fail("torchvision's roi_align was called"))
    assert ops.map_roi_levels(rois[:, 1:]).unique().numel() == 4
    torch.testing.assert_close(ops.multilevel_roi_align(features, rois, 7, [4, 8, 16, 32]), expected, atol=1e-12, rtol=0)
