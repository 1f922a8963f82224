"""torchvision's detection-model contract, as torchvision's own tests check it, for each of our heads.

The model is a drop-in for torchvision's Mask R-CNN: float images in 0-1 (a uint8 image is a
``TypeError``, as in torchvision), gradients flow back to an input that requires them
(saliency, attribution), and a float64 model runs in float64 end to end.
"""
from __future__ import annotations

import pytest
import torch

from tests.tiny_models import as_tensor, confident_tiny_model, image_and_target, smooth_image, tiny_model

HEADS = ["refinemask", "simple_refinemask", "maskrcnn"]


@pytest.mark.parametrize("head", HEADS)
def test_a_uint8_image_is_a_type_error_as_in_torchvision(head):
    model = confident_tiny_model(head)
    image = (as_tensor(smooth_image(64, 80, seed=0)) * 255).to(torch.uint8)
    with pytest.raises(TypeError, match=r"image 0: expected a floating-point tensor.*got torch.uint8.*float\(\) / 255"):
        model([image])


@pytest.mark.parametrize("head", HEADS)
def test_scores_and_masks_backpropagate_to_an_image_that_requires_grad(head):
    model = confident_tiny_model(head)
    image = as_tensor(smooth_image(96, 128, seed=1)).requires_grad_()
    out = model([image])[0]
    assert len(out["scores"]) > 0
    (out["scores"].sum() + out["masks"].sum()).backward()
    assert image.grad is not None and image.grad.shape == image.shape
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


@pytest.mark.parametrize("head", HEADS)
def test_the_same_outputs_without_gradients_as_with_them(head):
    model = confident_tiny_model(head)
    image = as_tensor(smooth_image(96, 128, seed=1))
    with torch.no_grad():
        plain = model([image])[0]
    tracked = model([image.clone().requires_grad_()])[0]
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(plain[key], tracked[key].detach()), key


@pytest.mark.parametrize("head", HEADS)
def test_a_float64_model_runs_in_float64_and_agrees_with_float32(head):
    model = confident_tiny_model(head)
    image = as_tensor(smooth_image(96, 128, seed=2))
    with torch.no_grad():
        single = model([image])[0]
        double = model.double()([image.double()])[0]
    assert double["boxes"].dtype == double["scores"].dtype == double["masks"].dtype == torch.float64
    assert torch.equal(single["labels"], double["labels"])
    torch.testing.assert_close(double["boxes"].float(), single["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(double["masks"].float(), single["masks"], atol=1e-3, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_a_float64_model_trains(head):
    model = tiny_model(head).double().train()
    image, target = image_and_target(96, 128, seed=3)
    losses = model([image.double()], [target])
    # (targets are float32, as in torchvision, so some losses come out float32; the network is float64)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and {g.dtype for g in grads} == {torch.float64}
