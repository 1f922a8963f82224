"""detect: the one inference forward that predict, eval, the export check and the demo report share."""
from __future__ import annotations

import torch

from refinemask.engine.inference import detect, evaluating
from tests.tiny_models import as_tensor, confident_tiny_model, smooth_image


def test_detect_runs_in_eval_mode_without_grad_and_restores_the_training_mode():
    model = confident_tiny_model("maskrcnn").train()
    [output] = detect(model, [as_tensor(smooth_image(96, 128, seed=0))])
    assert model.training
    assert len(output["scores"]) > 0 and not output["masks"].requires_grad
    assert output["masks"].shape[-2:] == (96, 128)  # in the image's pixels


def test_detect_segments_given_boxes_in_the_image_pixels():
    model = confident_tiny_model("maskrcnn")
    boxes = torch.tensor([[10.0, 20.0, 60.0, 80.0]])
    [output] = detect(model, [as_tensor(smooth_image(96, 128, seed=1))], boxes=[boxes], labels=[torch.tensor([2])])
    assert torch.equal(output["boxes"], boxes) and output["labels"].tolist() == [2]


def test_evaluating_restores_the_mode_after_an_error():
    model = confident_tiny_model("maskrcnn").train()
    try:
        with evaluating(model):
            assert not model.training and not torch.is_grad_enabled()
            raise ValueError
    except ValueError:
        pass
    assert model.training and torch.is_grad_enabled()
