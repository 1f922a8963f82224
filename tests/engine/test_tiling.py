"""Tiled inference: tiles cover the image, objects cut by seams become one instance, duplicates merge by mask."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from refinemask.engine.predict import Predictor
from refinemask.engine.tiling import predict_tiled, tile_windows
from refinemask.errors import RefineMaskError
from refinemask.modeling.box_masks import MaskWindows
from tests.tiny_models import as_tensor, confident_tiny_model, smooth_image


def painted_scene(height: int, width: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> torch.Tensor:
    """(3, H, W): object k (an ellipse or a rectangle in its box y0, x0, y1, x1) has value (k + 1) / 16
    in channel 0, the background 0."""
    image = torch.zeros(3, height, width)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    for k, (shape, (y0, x0, y1, x1)) in enumerate(objects):
        if shape == "ellipse":
            cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2
            inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        else:
            inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
        image[0][inside] = (k + 1) / 16
    return image


def oracle(image: torch.Tensor) -> dict:
    """A perfect segmenter of painted scenes: one detection per object value present, label 1,
    its mask exactly the object's pixels in what it is shown (a tile shows a piece)."""
    values = [v for v in torch.unique(image[0]).tolist() if v > 0]
    masks = torch.stack([image[0] == v for v in values]) if values else torch.zeros(0, *image.shape[-2:], dtype=torch.bool)
    windows = MaskWindows.from_image(masks)
    boxes = [[l, t, l + m.shape[1], t + m.shape[0]] for (t, l), m in zip(windows.origins, windows.masks)]
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.ones(len(values), dtype=torch.int64),
            "scores": torch.tensor([0.9 - 0.01 * i for i in range(len(values))]), "masks": windows}


def test_tiles_cover_the_image_with_the_overlap_and_end_flush_with_it():
    windows = tile_windows(100, 250, 64, 0.25)
    assert {w[0] for w in windows} == {0, 36} and {w[1] for w in windows} == {0, 48, 96, 144, 186}
    covered = torch.zeros(100, 250, dtype=torch.bool)
    for top, left, bottom, right in windows:
        assert (bottom - top, right - left) == (64, 64)
        covered[top:bottom, left:right] = True
    assert covered.all()
    assert tile_windows(50, 40, 64, 0.2) == [(0, 0, 50, 40)]  # smaller than a tile: the image itself
    for tile, overlap in ((16, 0.2), (64, 1.0), (64, -0.1)):
        with pytest.raises(RefineMaskError, match="tile"):
            tile_windows(100, 100, tile, overlap)


def test_an_object_across_a_seam_is_one_instance_with_the_untiled_mask():
    # tiles of 64 with overlap 0.25 (stride 48): seams at x = 48..64 and y = 48..64; the ellipse
    # spans the vertical seams, the rectangle lies inside the overlap (seen whole twice), the
    # small one sits in one tile only, and the long bar crosses three tiles and a corner
    objects = [("ellipse", (10, 30, 40, 90)), ("rect", (20, 50, 30, 60)), ("ellipse", (70, 5, 90, 25)),
               ("rect", (44, 20, 70, 100))]
    image = painted_scene(112, 112, objects)
    whole = oracle(image)
    tiled = predict_tiled(oracle, image, tile=64, overlap=0.25)
    assert len(tiled["scores"]) == len(objects) == len(whole["scores"])
    by_area = lambda masks: sorted(masks.to_image(), key=lambda m: int(m.sum()))  # noqa: E731
    for got, expected in zip(by_area(tiled["masks"]), by_area(whole["masks"])):
        assert torch.equal(got, expected)
    # boxes: the union of the pieces' boxes is the whole object's box
    assert sorted(tiled["boxes"].tolist()) == sorted(whole["boxes"].tolist())


def test_tiles_do_not_merge_different_objects_that_touch_in_the_overlap():
    # two rectangles side by side in the overlap band, one pixel apart: both stay
    image = painted_scene(64, 112, [("rect", (10, 40, 50, 55)), ("rect", (10, 56, 50, 70))])
    tiled = predict_tiled(oracle, image, tile=64, overlap=0.25)
    assert len(tiled["scores"]) == 2
    assert sorted(tiled["masks"].areas()) == sorted(oracle(image)["masks"].areas())


def test_a_model_predicts_tile_by_tile_in_every_mask_form(tmp_path):
    model = confident_tiny_model("refinemask")
    image = as_tensor(smooth_image(200, 300, seed=4))
    predictor = Predictor(model)
    windows = predictor(image, tile=128, overlap=0.25, masks="box")
    full = predictor(image, tile=128, overlap=0.25)
    assert len(windows["scores"]) > 0 and windows["masks"].shape == (len(windows["scores"]), 200, 300)
    assert torch.equal(full["masks"], windows["masks"].to_image())
    assert torch.all(windows["scores"][:-1] >= windows["scores"][1:])
    with pytest.raises(RefineMaskError, match="tile= is for the model's own detections"):
        predictor(image, tile=128, coarse=True)


def test_predict_command_tiles_and_refuses_a_bad_overlap_in_one_line(tmp_path, capsys):
    from refinemask.cli import main
    from refinemask.model_files import save_weights

    model = confident_tiny_model("refinemask")
    weights = save_weights(model, tmp_path / "model.safetensors", model.label_to_category, model.category_names)
    Image.fromarray((smooth_image(150, 260, seed=2) * 255).round().astype(np.uint8)).save(tmp_path / "big.png")
    assert main(["predict", "--weights", str(weights), str(tmp_path / "big.png"), "--out", str(tmp_path / "out"),
                 "--score-thresh", "0", "--tile", "128", "--overlap", "0.3"]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert rows and all(r["segmentation"]["size"] == [150, 260] for r in rows)
    assert (tmp_path / "out" / "big.png").is_file()
    capsys.readouterr()
    assert main(["predict", "--weights", str(weights), str(tmp_path / "big.png"), "--out", str(tmp_path / "o2"),
                 "--tile", "128", "--overlap", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overlap" in err[0]
