"""``Predictor(..., coarse=True)``: RefineMask's 28x28 stage beside the final masks (what ``serve`` shows)."""
import pytest
import torch

from refinemask.engine.predict import Predictor
from refinemask.errors import RefineMaskError
from refinemask.modeling.ops import paste_masks
from tests.tiny_models import as_tensor, confident_tiny_model, smooth_image


@pytest.fixture(scope="module")
def refinemask_model():
    return confident_tiny_model("refinemask")


def coarse_by_hand(model, image: torch.Tensor) -> torch.Tensor:
    """The model's eval forward written out step by step, with the mask head's coarse stage on
    its detections pasted into the image: bool (N, H, W)."""
    height, width = image.shape[-2:]
    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        d = detections[0]
        coarse = model.roi_heads.predict_masks(features, [d["boxes"]], [d["labels"]], coarse=True)[0]
        result = model.transform.postprocess(detections, images.image_sizes, [(height, width)])[0]
        return paste_masks(coarse, result["boxes"], int(height), int(width))[:, 0] >= 0.5


@pytest.mark.parametrize("size", [(120, 160), (97, 203)])
def test_the_coarse_masks_are_the_28x28_stage_of_the_same_detections(refinemask_model, size):
    image = as_tensor(smooth_image(*size, seed=1))
    result = Predictor(refinemask_model)(image, coarse=True)
    plain = Predictor(refinemask_model)(image)
    assert set(result) == {"boxes", "labels", "scores", "masks", "coarse_masks"} and "coarse_masks" not in plain
    for key in ("boxes", "labels", "scores", "masks"):
        assert torch.equal(result[key], plain[key])  # the option adds; it changes nothing
    assert len(result["scores"]) > 0 and result["coarse_masks"].shape == result["masks"].shape
    assert torch.equal(result["coarse_masks"], coarse_by_hand(refinemask_model, image))
    assert not torch.equal(result["coarse_masks"], result["masks"])  # the refinement changes masks


def test_a_score_threshold_keeps_the_same_detections_in_both_stages(refinemask_model):
    image = as_tensor(smooth_image(120, 160, seed=2))
    every = Predictor(refinemask_model)(image, coarse=True)
    threshold = float(every["scores"].median())
    kept = Predictor(refinemask_model, score_thresh=threshold)(image, coarse=True)
    assert 0 < len(kept["scores"]) < len(every["scores"])
    assert kept["coarse_masks"].shape == kept["masks"].shape == (len(kept["scores"]), 120, 160)
    # fewer RoIs through the mask head is another kernel, so the reference filters as the
    # predictor does (before NMS, in the RoI heads), not afterwards
    heads = refinemask_model.roi_heads
    own = heads.score_thresh
    heads.score_thresh = threshold
    try:
        expected = coarse_by_hand(refinemask_model, image)
    finally:
        heads.score_thresh = own
    assert torch.equal(kept["coarse_masks"], expected)


def test_a_mask_rcnn_model_has_no_coarse_stage():
    result = Predictor(confident_tiny_model("maskrcnn"))(as_tensor(smooth_image(120, 160, seed=1)), coarse=True)
    assert result["coarse_masks"] is None and len(result["masks"]) > 0


def test_coarse_with_given_boxes_is_a_one_line_error(refinemask_model):
    with pytest.raises(RefineMaskError, match="coarse=True is for the model's own detections"):
        Predictor(refinemask_model)(as_tensor(smooth_image(64, 64, seed=1)), boxes=[[0, 0, 10, 10]], coarse=True)
