import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from refinemask.commands import check_data
from refinemask.data.cityscapes import INSTANCE_CLASSES, cityscapes_to_coco, instance_labels
from refinemask.data.coco import CocoDetection
from refinemask.errors import RefineMaskError

H, W = 16, 32
CAR, PERSON, RIDER, CARAVAN, ROAD, EGO = 26, 24, 25, 29, 7, 1


def instance_ids() -> np.ndarray:
    """Two cars, a rider, a group of people (crowd), a caravan (not evaluated), road, ego car."""
    ids = np.full((H, W), ROAD, dtype=np.uint16)
    ids[14:, :] = EGO
    ids[2:6, 2:10] = CAR * 1000 + 0  # instance 0 of car is a valid instance id too
    ids[2:6, 12:20] = CAR * 1000 + 1
    ids[8:12, 2:6] = RIDER * 1000 + 3
    ids[8:12, 8:16] = PERSON  # a group: label id only, no instance number
    ids[8:12, 20:30] = CARAVAN * 1000 + 0
    return ids


def write_frame(root: Path, split: str, city: str, frame: str, ids: np.ndarray) -> None:
    core = f"{city}_000000_{frame}"
    image_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (ids.shape[1], ids.shape[0]), (90, 90, 90)).save(image_dir / f"{core}_leftImg8bit.png")
    Image.fromarray(ids).save(gt_dir / f"{core}_gtFine_instanceIds.png")  # 16-bit, as the originals
    Image.fromarray((ids // 1000).astype(np.uint8)).save(gt_dir / f"{core}_gtFine_labelIds.png")


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    write_frame(root, "train", "aachen", "000019", instance_ids())
    write_frame(root, "train", "bochum", "000020", np.full((H, W), ROAD, dtype=np.uint16))
    write_frame(root, "val", "frankfurt", "000001", instance_ids())
    return root


def test_the_eight_instance_classes_come_from_cityscapesscripts() -> None:
    assert tuple(label.name for label in instance_labels()) == INSTANCE_CLASSES
    assert INSTANCE_CLASSES == ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")


def test_categories_use_cityscapes_label_ids(cityscapes_root: Path) -> None:
    data = cityscapes_to_coco(cityscapes_root, "train")
    assert [(c["id"], c["name"]) for c in data["categories"]] == [
        (24, "person"), (25, "rider"), (26, "car"), (27, "truck"), (28, "bus"), (31, "train"),
        (32, "motorcycle"), (33, "bicycle"),
    ]


def test_images_are_listed_per_split_with_city_relative_names(cityscapes_root: Path) -> None:
    data = cityscapes_to_coco(cityscapes_root, "train")
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in data["images"]] == [
        (1, "aachen/aachen_000000_000019_leftImg8bit.png", W, H),
        (2, "bochum/bochum_000000_000020_leftImg8bit.png", W, H),
    ]
    assert len(cityscapes_to_coco(cityscapes_root, "val")["images"]) == 1


def test_instances_become_annotations_and_groups_become_crowd(cityscapes_root: Path) -> None:
    annotations = cityscapes_to_coco(cityscapes_root, "train")["annotations"]
    summary = sorted((a["category_id"], a["iscrowd"], a["bbox"]) for a in annotations)
    assert summary == [
        (PERSON, 1, [8.0, 8.0, 8.0, 4.0]),
        (RIDER, 0, [2.0, 8.0, 4.0, 4.0]),
        (CAR, 0, [2.0, 2.0, 8.0, 4.0]),
        (CAR, 0, [12.0, 2.0, 8.0, 4.0]),
    ]  # the caravan (not evaluated), road and ego car are left out


def test_crowd_regions_can_be_left_out(cityscapes_root: Path) -> None:
    annotations = cityscapes_to_coco(cityscapes_root, "train", include_crowd=False)["annotations"]
    assert all(a["iscrowd"] == 0 for a in annotations) and len(annotations) == 3


def test_instance_rle_decodes_to_the_instance_pixels(cityscapes_root: Path) -> None:
    annotations = cityscapes_to_coco(cityscapes_root, "train")["annotations"]
    car = next(a for a in annotations if a["category_id"] == CAR and a["bbox"][0] == 12.0)
    assert np.array_equal(mask_utils.decode(car["segmentation"]), (instance_ids() == CAR * 1000 + 1))
    assert car["area"] == 32.0


def test_written_json_loads_as_a_dataset_with_bitmap_targets(cityscapes_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ann" / "instancesonly_filtered_gtFine_train.json"
    cityscapes_to_coco(cityscapes_root, "train", out)
    dataset = CocoDetection(out, cityscapes_root / "leftImg8bit" / "train", keep_polygons=False)
    image, target = dataset[0]
    assert image.shape == (3, H, W) and dataset.problems == []
    assert dataset.category_names == list(INSTANCE_CLASSES)
    assert sorted(target["labels"].tolist()) == [2, 3, 3] and target["polygons"] == [None] * 3
    assert json.loads(out.read_text())["images"][0]["id"] == 1


def test_written_json_passes_check_data(cityscapes_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "train.json"
    cityscapes_to_coco(cityscapes_root, "train", out)
    parser = argparse.ArgumentParser()
    check_data.add_arguments(parser)
    args = parser.parse_args([str(out), "--images", str(cityscapes_root / "leftImg8bit" / "train")])
    assert check_data.run(args) == 0


def test_missing_split_folder_raises(cityscapes_root: Path) -> None:
    with pytest.raises(RefineMaskError, match="Cityscapes folder not found.*test"):
        cityscapes_to_coco(cityscapes_root, "test")


def test_missing_instance_file_raises_naming_it(cityscapes_root: Path) -> None:
    (cityscapes_root / "gtFine/train/bochum/bochum_000000_000020_gtFine_instanceIds.png").unlink()
    with pytest.raises(RefineMaskError, match="bochum_000000_000020_gtFine_instanceIds.png"):
        cityscapes_to_coco(cityscapes_root, "train")
