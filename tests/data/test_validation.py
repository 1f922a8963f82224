import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from refinemask.data.validation import (
    _compressed_rle_total,
    annotation_area,
    check_image_files,
    is_box_only,
    iter_problems,
    load_annotation_json,
    remove_problems,
)
from refinemask.errors import RefineMaskError


def annotation(data: dict, ann_id: int) -> dict:
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def kinds(data: dict) -> list[str]:
    return [p.kind for p in iter_problems(data)]


def test_clean_data_has_no_problems(coco_dict: dict) -> None:
    assert list(iter_problems(coco_dict)) == []


def test_box_outside_the_image_is_reported_with_its_ids(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["bbox"] = [30.0, 2.0, 20.0, 8.0]  # ends at x=50 on a 40 wide image
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "bad_box"
    assert "annotation 10 (image 1)" in problem.message and "outside the 40x30 image" in problem.message


def test_box_entirely_outside_within_tolerance_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["bbox"] = [-0.9, 2.0, 0.5, 8.0]
    assert kinds(coco_dict) == ["bad_box"]


def test_box_overshooting_by_rounding_is_accepted(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["bbox"] = [14.0, 2.0, 26.5, 8.0]  # ends at 40.5 on a 40 wide image
    assert kinds(coco_dict) == []


@pytest.mark.parametrize("bbox", [[14.0, 2.0, 0.0, 8.0], [14.0, 2.0, 12.0, -1.0]])
def test_box_with_zero_area_is_reported(coco_dict: dict, bbox: list) -> None:
    annotation(coco_dict, 10)["bbox"] = bbox
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "bad_box" and "zero area" in problem.message


@pytest.mark.parametrize("bbox", [None, [1, 2, 3], [1, 2, "3", 4], [1, 2, float("nan"), 4]])
def test_box_that_is_not_four_numbers_is_reported(coco_dict: dict, bbox) -> None:
    annotation(coco_dict, 10)["bbox"] = bbox
    assert kinds(coco_dict) == ["bad_box"]


def test_polygon_with_fewer_than_three_points_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 20)["segmentation"][1] = [10.0, 20.0, 18.0, 20.0]
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "bad_polygon"
    assert "annotation 20 (image 2)" in problem.message and "2 points" in problem.message


def test_polygon_with_odd_coordinate_count_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["segmentation"] = [[14.0, 2.0, 26.0, 2.0, 26.0, 10.0, 14.0]]
    assert kinds(coco_dict) == ["bad_polygon"]


def test_rle_size_not_matching_the_image_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 12)["segmentation"]["size"] = [40, 30]  # (width, height) swapped
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "bad_rle"
    assert "annotation 12" in problem.message and "does not match the 40x30 image" in problem.message


def test_uncompressed_rle_with_wrong_pixel_total_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 11)["segmentation"]["counts"][-1] += 5
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "bad_rle" and "1205 pixels" in problem.message


def test_malformed_compressed_rle_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 12)["segmentation"]["counts"] = "!!!!"
    assert kinds(coco_dict) == ["bad_rle"]


def test_compressed_rle_total_agrees_with_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = rng.integers(1, 50, size=2)
        mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
        counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")
        assert _compressed_rle_total(counts) == height * width


@pytest.mark.parametrize("segmentation", ["polygon", {"counts": [1200]}])
def test_unrecognised_segmentation_is_reported(coco_dict: dict, segmentation) -> None:
    annotation(coco_dict, 10)["segmentation"] = segmentation
    assert len(kinds(coco_dict)) == 1 and kinds(coco_dict)[0] in ("bad_segmentation", "bad_rle")


@pytest.mark.parametrize("segmentation", [None, [], "absent"])
def test_a_box_without_segmentation_is_a_box_only_annotation_not_a_problem(coco_dict: dict, segmentation) -> None:
    # CVAT rectangles: kept as box targets and ignored for masks (is_box_only)
    entry = annotation(coco_dict, 10)
    if segmentation == "absent":
        del entry["segmentation"]
    else:
        entry["segmentation"] = segmentation
    assert kinds(coco_dict) == []
    assert is_box_only(entry)
    assert annotation_area(entry, 100, 100) == entry["bbox"][2] * entry["bbox"][3]


def test_a_crowd_region_without_segmentation_is_reported(coco_dict: dict) -> None:
    entry = annotation(coco_dict, 10)
    entry.update(segmentation=[], iscrowd=1)
    assert kinds(coco_dict) == ["bad_segmentation"]


def test_unknown_category_id_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["category_id"] = 77
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "unknown_category" and "annotation 10" in problem.message and "77" in problem.message


def test_annotation_of_an_unknown_image_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["image_id"] = 99
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "unknown_image" and "image id 99" in problem.message


def test_duplicate_image_id_is_reported(coco_dict: dict) -> None:
    coco_dict["images"].append({"id": 2, "file_name": "again.png", "width": 5, "height": 5})
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "duplicate_image" and "image id 2" in problem.message and problem.image_index == 3


def test_duplicate_annotation_id_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 12)["id"] = 10
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "duplicate_annotation" and "annotation id 10" in problem.message
    assert problem.annotation_index == 2  # the second one; the first is kept


def test_duplicate_category_id_is_reported(coco_dict: dict) -> None:
    coco_dict["categories"].append({"id": 5, "name": "dog again"})
    assert kinds(coco_dict) == ["duplicate_category"]


def test_image_entry_without_size_is_reported_and_its_annotations_too(coco_dict: dict) -> None:
    del coco_dict["images"][1]["height"]
    problems = list(iter_problems(coco_dict))
    assert [p.kind for p in problems] == ["bad_image", "unknown_image"]
    assert "height" in problems[0].message and "image entry 2 is broken" in problems[1].message


def test_every_problem_is_listed(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["bbox"] = [0, 0, 0, 0]
    annotation(coco_dict, 11)["category_id"] = 2
    annotation(coco_dict, 20)["segmentation"] = [[1.0, 1.0]]
    assert kinds(coco_dict) == ["bad_box", "unknown_category", "bad_polygon"]


def test_remove_problems_drops_only_the_bad_entries(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["category_id"] = 77
    coco_dict["images"].append({"id": 3, "file_name": "dup.png", "width": 5, "height": 5})
    cleaned = remove_problems(coco_dict, iter_problems(coco_dict))
    assert [a["id"] for a in cleaned["annotations"]] == [11, 12, 13, 20]
    assert [im["file_name"] for im in cleaned["images"]] == ["a.png", "sub/b.png", "c.png"]
    assert len(coco_dict["annotations"]) == 5  # the input lists are not changed


def test_remove_problems_fills_iscrowd_and_area(coco_dict: dict) -> None:
    del annotation(coco_dict, 10)["iscrowd"]
    del annotation(coco_dict, 10)["area"]
    cleaned = remove_problems(coco_dict, iter_problems(coco_dict))
    filled = annotation(cleaned, 10)
    assert filled["iscrowd"] == 0 and filled["area"] == 96.0  # the 12x8 polygon rectangle


def test_missing_annotation_file_raises(tmp_path: Path) -> None:
    with pytest.raises(RefineMaskError, match="annotation file not found"):
        load_annotation_json(tmp_path / "none.json")


def test_invalid_json_raises_one_line_error_with_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(RefineMaskError, match=r"bad.json is not valid JSON \(line 2, column") as info:
        load_annotation_json(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [([1, 2], "expected a JSON object"), ({"annotations": []}, "no 'images' list"),
     ({"images": [], "categories": []}, "'categories' list is empty"),
     ({"images": {}, "categories": [{"id": 1}]}, "'images' must be a list")],
)
def test_document_that_is_not_coco_raises(tmp_path: Path, document, message: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(document))
    with pytest.raises(RefineMaskError, match=message):
        load_annotation_json(path)


def test_missing_image_file_is_reported(make_coco) -> None:
    ann_file, image_dir = make_coco(skip_files=("sub/b.png",))
    data = load_annotation_json(ann_file)
    [problem] = check_image_files(data, image_dir)
    assert problem.kind == "missing_file" and "image 2 (sub/b.png)" in problem.message


def test_unreadable_image_file_is_reported(tiny_coco) -> None:
    ann_file, image_dir = tiny_coco
    (image_dir / "c.png").write_bytes(b"garbage")
    [problem] = check_image_files(load_annotation_json(ann_file), image_dir)
    assert problem.kind == "unreadable_file" and "image 3 (c.png)" in problem.message


def test_truncated_image_is_found_only_when_decoding(tiny_coco) -> None:
    ann_file, image_dir = tiny_coco
    data = (image_dir / "a.png").read_bytes()
    (image_dir / "a.png").write_bytes(data[: len(data) // 2])
    coco = load_annotation_json(ann_file)
    assert [p.kind for p in check_image_files(coco, image_dir)] == ["unreadable_file"]
    assert list(check_image_files(coco, image_dir, decode=False)) == []


def test_image_size_differing_from_the_json_is_reported(tiny_coco) -> None:
    ann_file, image_dir = tiny_coco
    Image.new("RGB", (30, 40)).save(image_dir / "a.png")
    [problem] = check_image_files(load_annotation_json(ann_file), image_dir)
    assert problem.kind == "image_size" and "30x40" in problem.message and "40x30" in problem.message


def test_polygon_far_outside_the_image_is_reported(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["segmentation"] = [[14.0, 2.0, 1e9, 2.0, 26.0, 10.0]]
    [problem] = iter_problems(coco_dict)
    assert problem.kind == "bad_polygon" and "far outside the 40x30 image" in problem.message


def test_polygon_slightly_outside_the_image_is_accepted(coco_dict: dict) -> None:
    annotation(coco_dict, 10)["segmentation"] = [[-3.0, 2.0, 43.0, 2.0, 26.0, 10.0]]
    assert kinds(coco_dict) == []
