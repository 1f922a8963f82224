import json
from pathlib import Path

import pytest

from refinemask.data.lvis import LvisDetection, set_lvis_file_names
from refinemask.data.samplers import repeat_factors


def lvis_dict() -> dict:
    """Two LVIS v1 images (one from COCO train2017, one from val2017), no file_name, no iscrowd."""
    polygon = [[2.0, 2.0, 10.0, 2.0, 10.0, 8.0, 2.0, 8.0]]
    box = {"bbox": [2.0, 2.0, 8.0, 6.0], "area": 48.0, "segmentation": polygon}
    return {
        "images": [
            {"id": 7, "width": 16, "height": 12, "coco_url": "http://images.cocodataset.org/train2017/000000000007.jpg",
             "not_exhaustive_category_ids": [3], "neg_category_ids": [2]},
            {"id": 8, "width": 12, "height": 16, "coco_url": "http://images.cocodataset.org/val2017/000000000008.jpg",
             "not_exhaustive_category_ids": [], "neg_category_ids": []},
        ],
        "categories": [
            {"id": 1, "name": "aerosol_can", "frequency": "r", "synonyms": ["aerosol_can"]},
            {"id": 2, "name": "apple", "frequency": "f", "synonyms": ["apple"]},
            {"id": 3, "name": "zebra", "frequency": "c", "synonyms": ["zebra"]},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, **box},
            {"id": 2, "image_id": 7, "category_id": 2, **box},
            {"id": 3, "image_id": 8, "category_id": 2, **box},
        ],
    }


def test_file_name_is_the_last_part_of_coco_url(tmp_path: Path) -> None:
    data = set_lvis_file_names(lvis_dict(), tmp_path)
    assert [im["file_name"] for im in data["images"]] == ["000000000007.jpg", "000000000008.jpg"]


def test_file_name_keeps_the_coco_folder_when_image_dir_has_it(tmp_path: Path) -> None:
    (tmp_path / "train2017").mkdir()
    (tmp_path / "val2017").mkdir()
    data = set_lvis_file_names(lvis_dict(), tmp_path)
    assert [im["file_name"] for im in data["images"]] == ["train2017/000000000007.jpg", "val2017/000000000008.jpg"]


@pytest.fixture
def lvis_files(make_coco):
    data = lvis_dict()
    with_names = set_lvis_file_names(lvis_dict(), None)
    ann_file, image_dir = make_coco(with_names, name="with_names.json")  # writes the images
    ann_file.write_text(json.dumps(data))  # the dataset sees the original LVIS json
    return ann_file, image_dir


def test_lvis_item_loads_with_polygons_and_contiguous_labels(lvis_files) -> None:
    dataset = LvisDetection(*lvis_files)
    image, target = dataset[0]
    assert image.shape == (3, 12, 16)
    assert target["labels"].tolist() == [1, 2] and target["image_id"] == 7
    assert target["masks"].sum(dim=(1, 2)).tolist() == [48, 48]
    assert dataset.problems == []


def test_lvis_annotations_get_iscrowd_zero_for_evaluation(lvis_files) -> None:
    dataset = LvisDetection(*lvis_files)
    assert all(a["iscrowd"] == 0 for a in dataset.coco.anns.values())


def test_lvis_image_fields_are_kept_for_evaluation(lvis_files) -> None:
    dataset = LvisDetection(*lvis_files)
    assert dataset.coco.imgs[7]["neg_category_ids"] == [2]
    assert dataset.coco.imgs[7]["not_exhaustive_category_ids"] == [3]


def test_label_frequency_follows_the_categories(lvis_files) -> None:
    assert LvisDetection(*lvis_files).label_frequency == {1: "r", 2: "f", 3: "c"}


def test_repeat_factors_of_an_lvis_dataset(lvis_files) -> None:
    dataset = LvisDetection(*lvis_files)
    # aerosol_can is in 1 of 2 images: f = 0.5; with threshold 0.8, r = sqrt(0.8 / 0.5)
    factors = repeat_factors(dataset.labels_per_image(), threshold=0.8)
    assert factors.tolist() == pytest.approx([(0.8 / 0.5) ** 0.5, 1.0])
