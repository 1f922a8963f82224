"""Per-call options of the model's forward (score threshold, coarse stage, best score, mask form).

The Predictor passes what a call needs through the forward instead of editing the model or
hooking into it, so one model (and one Predictor) can serve several threads.
"""
import threading

import pytest
import torch

from refinemask import Predictor
from refinemask.errors import RefineMaskError
from tests.tiny_models import tiny_model


def _image(seed=0, h=128, w=160):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return tiny_model("refinemask", box_score_thresh=0.0, mask_logits_init="small").eval()


def test_a_score_threshold_option_equals_the_models_own_threshold_set_to_it(model):
    image = _image()
    with torch.no_grad():
        scores = model([image])[0]["scores"]
        cut = float(scores.median())
        option = model([image], score_thresh=cut)[0]
        own = model.roi_heads.score_thresh
        model.roi_heads.score_thresh = cut
        try:
            reference = model([image])[0]
        finally:
            model.roi_heads.score_thresh = own
    assert 0 < len(option["scores"]) < len(scores)
    assert torch.equal(option["boxes"], reference["boxes"]) and torch.equal(option["masks"], reference["masks"])
    assert model.roi_heads.score_thresh == own


def test_best_score_is_the_highest_class_probability_of_any_roi(model):
    seen = []
    hook = model.roi_heads.box_predictor.register_forward_hook(lambda _m, _i, out: seen.append(out[0]))
    try:
        with torch.no_grad():
            out = model([_image(1)], score_thresh=0.999, best_score=True)[0]
    finally:
        hook.remove()
    assert len(out["scores"]) == 0  # nothing kept, yet the best score is known
    assert torch.equal(out["best_score"], seen[0].softmax(-1)[:, 1:].max())


def test_coarse_masks_come_with_the_same_detections_in_the_form_of_the_masks(model):
    with torch.no_grad():
        out = model([_image(2)], coarse=True, mask_output="box")[0]
        image_form = model([_image(2)], coarse=True)[0]
    assert out["coarse_masks"].probs.shape[-1] == 28 and out["masks"].probs.shape[-1] == 112
    assert len(out["coarse_masks"]) == len(out["boxes"]) > 0
    assert image_form["coarse_masks"].shape == image_form["masks"].shape == (len(out["boxes"]), 1, 128, 160)
    assert model.mask_output == "image"


def test_coarse_is_an_error_for_a_head_without_a_coarse_stage():
    with pytest.raises(RefineMaskError, match="no coarse stage"):
        tiny_model("maskrcnn").eval()([_image()], coarse=True)


def test_call_options_are_an_error_in_training():
    with pytest.raises(RefineMaskError, match="eval options"):
        tiny_model("refinemask").train()([_image()], [{}], score_thresh=0.5)


def test_a_predictor_call_leaves_the_model_as_it_was(model):
    heads = model.roi_heads
    during = []
    hook = heads.box_predictor.register_forward_hook(lambda _m, _i, _o: during.append(heads.score_thresh))
    try:
        before = (len(model.backbone._forward_hooks), len(heads._forward_hooks))
        result = Predictor(model, score_thresh=0.6)(_image(3), coarse=True)
        after = (len(model.backbone._forward_hooks), len(heads._forward_hooks))
    finally:
        hook.remove()
    assert during == [heads.score_thresh] == [0.0]  # the model's own threshold throughout the call
    assert before == after == (0, 0)
    assert result["coarse_masks"].shape == result["masks"].shape


def test_threads_sharing_a_predictor_each_get_their_own_results(model):
    images = [_image(seed) for seed in range(4)]
    strict, loose = Predictor(model, score_thresh=0.3), Predictor(model, score_thresh=0.0)
    expected = {("strict", i): strict(img)["boxes"] for i, img in enumerate(images)}
    expected.update({("loose", i): loose(img, coarse=True)["boxes"] for i, img in enumerate(images)})
    got = {}

    def run(name, predictor, coarse):
        for i, img in enumerate(images):
            got[(name, i)] = predictor(img, coarse=coarse)["boxes"]

    threads = [threading.Thread(target=run, args=("strict", strict, False)),
               threading.Thread(target=run, args=("loose", loose, True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
