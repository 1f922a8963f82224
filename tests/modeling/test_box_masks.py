"""Box-local masks: the model's BoxMasks, MaskWindows, their RLE and every reader, equal to the full-image masks."""
import numpy as np
import pytest
import torch

from refinemask.engine.predict import Predictor
from refinemask.errors import RefineMaskError
from refinemask.evaluation import predictions_to_coco_results
from refinemask.evaluation.coco import encode_mask_windows, encode_masks
from refinemask.modeling.box_masks import BoxMasks, MaskWindows
from refinemask.modeling.ops import paste_masks
from refinemask.overlay import draw_overlay
from tests.tiny_models import as_tensor, confident_tiny_model, smooth_image


def random_square_masks(n: int, height: int, width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, 1, 28, 28, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 1.2 - 10  # some past the border
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return probs, torch.cat([xy, xy + wh], dim=1)


@pytest.fixture(scope="module")
def model():
    return confident_tiny_model("refinemask")


def test_box_masks_paste_to_the_full_image_paste_and_binarise_window_by_window():
    probs, boxes = random_square_masks(12, 50, 70)
    masks = BoxMasks(probs, boxes, (50, 70))
    full = paste_masks(probs, boxes, 50, 70)
    assert masks.shape == full.shape and torch.equal(masks.to_image(), full)
    windows = masks.binarize(0.5)
    assert torch.equal(windows.to_image(), full[:, 0] >= 0.5)
    # each window is its box's, not the image: memory follows the boxes
    assert all(m.numel() <= (42 + 2) ** 2 for m in windows.masks)


def test_window_rles_are_the_rles_of_the_full_masks():
    g = torch.Generator().manual_seed(1)
    for trial in range(60):
        height, width = (int(v) for v in torch.randint(1, 14, (2,), generator=g))
        full = torch.rand(4, height, width, generator=g) > 0.6
        if trial % 4 == 0:
            full[0] = True  # a window as tall as the image: no gap between its columns
        full[1] = False  # an empty mask
        windows = MaskWindows.from_image(full)
        assert torch.equal(windows.to_image(), full)
        assert encode_mask_windows(windows) == encode_masks(full.numpy().view(np.uint8))


def test_the_model_returns_box_masks_on_request_and_the_same_masks(model):
    image = as_tensor(smooth_image(120, 160, seed=1))
    model.eval()
    with torch.no_grad():
        plain = model([image])[0]
        model.mask_output = "box"
        try:
            local = model([image])[0]
        finally:
            model.mask_output = "image"
    assert isinstance(local["masks"], BoxMasks) and len(local["masks"]) == len(plain["masks"]) > 0
    assert local["masks"].probs.shape[-1] == 112  # the head's squares, not the image
    assert torch.allclose(local["masks"].to_image(), plain["masks"])
    with pytest.raises(RefineMaskError, match="model.mask_output must be one of image, box"):
        model.mask_output = "full"


def test_predictor_masks_as_windows_and_rle_equal_the_image_masks(model):
    image = as_tensor(smooth_image(97, 203, seed=2))
    predictor = Predictor(model)
    full = predictor(image, coarse=True)
    windows = predictor(image, coarse=True, masks="box")
    rles = predictor(image, masks="rle")
    assert len(full["masks"]) > 0
    assert isinstance(windows["masks"], MaskWindows) and windows["masks"].shape == full["masks"].shape
    assert torch.equal(windows["masks"].to_image(), full["masks"])
    assert torch.equal(windows["coarse_masks"].to_image(), full["coarse_masks"])
    assert rles["masks"] == encode_masks(full["masks"].numpy().view(np.uint8))
    with pytest.raises(RefineMaskError, match="masks='png'"):
        predictor(image, masks="png")


def test_coco_results_and_overlays_from_windows_equal_those_from_full_masks(model):
    image = as_tensor(smooth_image(90, 140, seed=3))
    predictor = Predictor(model)
    full, windows = predictor(image), predictor(image, masks="box")
    assert predictions_to_coco_results([windows], [5], predictor.label_to_category) == predictions_to_coco_results(
        [full], [5], predictor.label_to_category
    )
    drawn = draw_overlay(image, windows, predictor.category_names)
    assert torch.equal(drawn, draw_overlay(image, full, predictor.category_names))
    with torch.no_grad():
        output = model.eval()([image])[0]
        model.mask_output = "box"
        local = model([image])[0]
        model.mask_output = "image"
    assert predictions_to_coco_results([local], [5], predictor.label_to_category) == predictions_to_coco_results(
        [output], [5], predictor.label_to_category
    )
