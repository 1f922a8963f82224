"""The built-in synthetic data set: valid COCO, reproducible, visible-part annotations that
match the drawn pixels, presets that differ as documented, and the make-synthetic command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from refinemask.cli import main
from refinemask.data.synthetic import (
    CATEGORY_NAMES,
    PRESETS,
    image_rng,
    make_synthetic,
    render_scene,
    scene_annotations,
)
from refinemask.errors import RefineMaskError


def quiet_coco(path: Path) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(path.read_text())
    coco.createIndex()
    return coco


def decode(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO segmentation, rasterised by pycocotools."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def hard_set(tmp_path_factory):
    return make_synthetic(
        tmp_path_factory.mktemp("hard"), num_images=20, size=128, seed=3, preset="hard"
    )


@pytest.fixture(scope="module")
def easy_set(tmp_path_factory):
    return make_synthetic(
        tmp_path_factory.mktemp("easy"), num_images=20, size=128, seed=3, preset="easy"
    )


def test_annotations_load_with_pycocotools_and_faster_coco_eval(hard_set):
    from faster_coco_eval import COCO as FasterCOCO

    for coco in (quiet_coco(hard_set.train), FasterCOCO(str(hard_set.train))):
        assert len(coco.getImgIds()) == 20
        assert len(coco.getAnnIds()) > 20
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CATEGORY_NAMES)
        ann = coco.loadAnns(coco.getAnnIds())[0]
        assert coco.annToMask(ann).sum() == ann["area"]


def test_every_image_file_exists_with_the_declared_size(hard_set):
    data = json.loads(hard_set.train.read_text())
    for info in data["images"]:
        with Image.open(hard_set.images / info["file_name"]) as image:
            assert image.size == (info["width"], info["height"]) and image.mode == "RGB"


def test_every_category_appears_in_twenty_images(hard_set, easy_set):
    for paths in (hard_set, easy_set):
        data = json.loads(paths.train.read_text())
        assert {a["category_id"] for a in data["annotations"]} == set(
            range(1, len(CATEGORY_NAMES) + 1)
        )


def test_bbox_and_area_are_those_of_the_visible_mask(hard_set):
    data = json.loads(hard_set.train.read_text())
    for ann in data["annotations"]:
        mask = decode(ann["segmentation"], 128, 128)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert ann["area"] == mask.sum() >= PRESETS["hard"].min_area
        assert ann["bbox"] == [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
        assert ann["iscrowd"] == 0


def test_same_seed_writes_byte_identical_files(tmp_path):
    first = make_synthetic(tmp_path / "a", num_images=4, size=96, seed=7, num_val_images=2)
    second = make_synthetic(tmp_path / "b", num_images=4, size=96, seed=7, num_val_images=2)
    files = sorted(p.relative_to(first.root) for p in first.root.rglob("*") if p.is_file())
    assert len(files) == 2 + 6
    for name in files:
        assert (first.root / name).read_bytes() == (second.root / name).read_bytes(), name


def test_different_seeds_write_different_images_and_annotations(tmp_path):
    first = make_synthetic(tmp_path / "a", num_images=2, size=96, seed=1)
    second = make_synthetic(tmp_path / "b", num_images=2, size=96, seed=2)
    for name in ("train_000000.png", "train_000001.png"):
        assert (first.images / name).read_bytes() != (second.images / name).read_bytes()
    assert first.train.read_bytes() != second.train.read_bytes()


def test_val_split_writes_train_and_val_json_sharing_the_images_folder(tmp_path):
    alone = make_synthetic(tmp_path / "alone", num_images=3, size=96, seed=5)
    split = make_synthetic(tmp_path / "split", num_images=3, size=96, seed=5, num_val_images=2)
    assert alone.train.name == "annotations.json" and alone.val is None
    assert (split.train.name, split.val.name) == ("train.json", "val.json")
    val_files = [i["file_name"] for i in json.loads(split.val.read_text())["images"]]
    assert val_files == ["val_000000.png", "val_000001.png"]
    assert all((split.images / name).is_file() for name in val_files)
    # adding a validation split leaves the training images unchanged, and val differs from train
    assert split.train.read_bytes() == alone.train.read_bytes()
    assert (split.images / "val_000000.png").read_bytes() != (
        split.images / "train_000000.png"
    ).read_bytes()


def test_hard_preset_has_more_and_smaller_objects_than_easy(hard_set, easy_set):
    hard = json.loads(hard_set.train.read_text())["annotations"]
    easy = json.loads(easy_set.train.read_text())["annotations"]
    assert len(hard) / 20 > 2 * len(easy) / 20
    assert 1 <= len(easy) / 20 <= 3
    extent = lambda anns: np.mean([max(a["bbox"][2:]) for a in anns])  # noqa: E731
    assert extent(hard) < extent(easy)


def test_hard_preset_has_thinner_parts_than_easy(hard_set, easy_set):
    def edge_fraction(paths) -> float:
        # share of mask pixels with a 4-neighbour outside the mask: near 1 for 1-2 px parts
        edge = total = 0
        for ann in json.loads(paths.train.read_text())["annotations"]:
            m = np.pad(decode(ann["segmentation"], 128, 128), 1)
            interior = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
            edge += int(m.sum() - interior.sum())
            total += int(m.sum())
        return edge / total

    assert edge_fraction(hard_set) > edge_fraction(easy_set) + 0.1


def test_hard_preset_occludes_more_than_easy(hard_set, easy_set):
    def occluded_share(paths) -> float:
        anns = json.loads(paths.train.read_text())["annotations"]
        return sum(isinstance(a["segmentation"], dict) for a in anns) / len(anns)

    assert occluded_share(hard_set) > occluded_share(easy_set)
    assert occluded_share(hard_set) > 0.2


def test_unoccluded_annotation_matches_the_drawn_pixels():
    # flat colours and one object per image: the drawn object is exactly the pixels that differ
    # from the background colour, independently of how the generator tracks its objects
    flat = dataclasses.replace(
        PRESETS["hard"],
        objects_per_image=(1, 1),
        background_texture=0.0,
        object_texture=0.0,
        pixel_noise=0.0,
    )
    seen = set()
    for index in range(40):
        scene = render_scene(image_rng(11, 0, index), 96, flat)
        (ann,) = scene_annotations(scene, flat.min_area)
        assert isinstance(ann["segmentation"], list)
        drawn = np.any(scene.image != scene.image[0, 0], axis=2)
        assert not drawn[0, 0]
        assert iou(decode(ann["segmentation"], 96, 96), drawn) >= 0.95
        seen.add(ann["category_id"])
    assert seen == set(range(1, len(CATEGORY_NAMES) + 1))


def test_occluded_annotations_are_the_visible_part_only(hard_set):
    coco = quiet_coco(hard_set.train)
    overlapping_pairs = 0
    for index, image_id in enumerate(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns])
        # no pixel belongs to two annotations
        assert masks.sum(0).max() <= 1
        # the same scene, redrawn: each annotation is its object minus the objects drawn later
        scene = render_scene(image_rng(3, 0, index), 128, PRESETS["hard"])
        assert len(scene.instances) == len(anns)
        for i, (inst, mask) in enumerate(zip(scene.instances, masks, strict=True)):
            above = np.any(
                [later.mask for later in scene.instances[i + 1 :]] or [np.zeros_like(mask)], axis=0
            )
            np.testing.assert_array_equal(mask, inst.mask & ~above)
            overlapping_pairs += int((inst.mask & above).any())
    assert overlapping_pairs > 5


def test_bad_arguments_raise_one_line_errors(tmp_path):
    for kwargs in (
        {"num_images": 0},
        {"size": 10},
        {"preset": "medium"},
        {"seed": -1},
        {"num_val_images": -1},
    ):
        arguments = {"num_images": 1, "size": 96, **kwargs}
        with pytest.raises(RefineMaskError) as err:
            make_synthetic(tmp_path, **arguments)
        assert "\n" not in str(err.value)


def test_cli_writes_the_data_set_and_exits_0(tmp_path, capsys):
    out = tmp_path / "synth"
    code = main(
        [
            "make-synthetic",
            str(out),
            "--images",
            "3",
            "--size",
            "96",
            "--seed",
            "4",
            "--preset",
            "easy",
            "--val-images",
            "1",
        ]
    )
    assert code == 0
    assert len(json.loads((out / "train.json").read_text())["images"]) == 3
    assert len(json.loads((out / "val.json").read_text())["images"]) == 1
    assert len(list((out / "images").glob("*.png"))) == 4
    assert str(out / "val.json") in capsys.readouterr().out


@pytest.mark.parametrize(
    "options",
    [["--images", "0"], ["--size", "10"], ["--val-images", "-2"], "out-is-a-file"],
    ids=["no-images", "tiny-size", "negative-val", "unwritable-out"],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, options):
    out = tmp_path / "synth"
    if options == "out-is-a-file":
        out.write_text("not a folder")
        options = []
    code = main(["make-synthetic", str(out), "--size", "96", *options])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("refinemask make-synthetic: error:")
