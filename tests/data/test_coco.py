import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from refinemask.data import collate
from refinemask.data.coco import CocoDetection
from refinemask.errors import RefineMaskError


def index_of(dataset: CocoDetection, image_id: int) -> int:
    return dataset.ids.index(image_id)


def test_item_follows_the_data_contract(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    image, target = dataset[index_of(dataset, 1)]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32 and image.shape == (3, 30, 40)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].dtype == torch.float32
    assert target["boxes"].shape == (3, 4) and target["boxes"].canvas_size == (30, 40)
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (3,)
    assert isinstance(target["masks"], tv_tensors.Mask)
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (3, 30, 40)
    assert len(target["polygons"]) == 3 and target["image_id"] == 1


def test_image_pixels_are_the_file_pixels(tiny_coco) -> None:
    ann_file, image_dir = tiny_coco
    image, _ = CocoDetection(ann_file, image_dir)[0]
    pixels = np.asarray(Image.open(image_dir / "a.png"), dtype=np.float32) / 255
    assert torch.allclose(image, torch.from_numpy(pixels).permute(2, 0, 1))


def test_category_ids_map_to_contiguous_labels_in_id_order(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    assert dataset.label_to_category == {1: 1, 2: 5, 3: 9}
    assert dataset.category_names == ["cat", "dog", "bird"]
    target = dataset.load_target(index_of(dataset, 1))
    assert target["labels"].tolist() == [2, 1, 2]  # annotations 10 (dog), 11 (cat), 12 (dog)


def test_boxes_are_xyxy_pixels(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    boxes = dataset.load_target(index_of(dataset, 1))["boxes"]
    assert boxes[0].tolist() == [14.0, 2.0, 26.0, 10.0]


def test_crowd_is_left_out_of_the_target_and_kept_in_the_ground_truth(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    target = dataset.load_target(index_of(dataset, 1))
    assert len(target["labels"]) == 3
    crowd = [a for a in dataset.coco.imgToAnns[1] if a["iscrowd"]]
    assert [a["id"] for a in crowd] == [13]


def test_polygon_masks_match_pycocotools(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    target = dataset.load_target(index_of(dataset, 2))
    expected = dataset.coco.annToMask(dataset.coco.anns[20])
    assert np.array_equal(target["masks"][0].numpy(), expected)
    assert expected.sum() > 0


def test_rle_masks_decode_to_their_pixels(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    masks = dataset.load_target(index_of(dataset, 1))["masks"]
    uncompressed = np.zeros((30, 40), np.uint8)
    uncompressed[3:12, 2:10] = 1
    compressed = np.zeros((30, 40), np.uint8)
    compressed[20:28, 30:38] = 1
    assert np.array_equal(masks[1].numpy(), uncompressed)
    assert np.array_equal(masks[2].numpy(), compressed)


def test_polygons_are_float32_pixel_arrays_and_none_for_rle(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    polygons = dataset.load_target(index_of(dataset, 1))["polygons"]
    assert polygons[1] is None and polygons[2] is None
    [polygon] = polygons[0]
    assert polygon.dtype == np.float32 and polygon.tolist() == [14, 2, 26, 2, 26, 10, 14, 10]
    assert len(dataset.load_target(index_of(dataset, 2))["polygons"][0]) == 2


def test_keep_polygons_false_gives_none_for_every_instance(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco, keep_polygons=False)
    assert dataset.load_target(index_of(dataset, 2))["polygons"] == [None]


def test_image_without_annotations_gives_an_empty_target(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    image, target = dataset[index_of(dataset, 3)]
    assert image.shape == (3, 24, 24)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 24, 24) and target["polygons"] == []


def test_remove_empty_leaves_out_images_without_instances(make_coco, coco_dict) -> None:
    coco_dict["annotations"] = [a for a in coco_dict["annotations"] if a["id"] == 13]  # crowd only
    dataset = CocoDetection(*make_coco(coco_dict), remove_empty=True)
    assert dataset.ids == []
    assert len(CocoDetection(*make_coco(coco_dict))) == 3


def test_aspect_ratios_come_from_the_json(tiny_coco) -> None:
    dataset = CocoDetection(*tiny_coco)
    assert dataset.aspect_ratios() == [40 / 30, 20 / 36, 1.0]


def test_labels_per_image_lists_non_crowd_labels(tiny_coco) -> None:
    assert CocoDetection(*tiny_coco).labels_per_image() == [{1, 2}, {3}, set()]


def test_bad_annotations_are_skipped_and_counted_in_one_log_line(make_coco, coco_dict, caplog) -> None:
    coco_dict["annotations"][0]["bbox"] = [0, 0, 0, 0]
    coco_dict["annotations"][4]["category_id"] = 42
    with caplog.at_level(logging.DEBUG, logger="refinemask.data.coco"):
        dataset = CocoDetection(*make_coco(coco_dict))
    assert sorted(dataset.coco.anns) == [11, 12, 13]
    assert len(dataset.problems) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 annotations" in warnings[0].getMessage()
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 2 and "annotation 20" in debug[1]


def test_strict_raises_at_the_first_problem(make_coco, coco_dict) -> None:
    coco_dict["annotations"][1]["segmentation"]["size"] = [1, 1]
    coco_dict["annotations"][4]["category_id"] = 42
    with pytest.raises(RefineMaskError, match="annotation 11 .*RLE size.*strict"):
        CocoDetection(*make_coco(coco_dict), strict=True)


def test_missing_image_file_raises_naming_it_when_read(make_coco) -> None:
    dataset = CocoDetection(*make_coco(skip_files=("c.png",)))
    with pytest.raises(RefineMaskError, match="image 3 of ann.json: .*not found.*c.png"):
        dataset[index_of(dataset, 3)]


def test_corrupt_image_file_raises_naming_it_when_read(tiny_coco) -> None:
    ann_file, image_dir = tiny_coco
    (image_dir / "c.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(RefineMaskError, match="image 3 of ann.json: cannot read image .*c.png"):
        CocoDetection(ann_file, image_dir)[2]


def test_image_size_differing_from_the_json_raises(tiny_coco) -> None:
    ann_file, image_dir = tiny_coco
    Image.new("RGB", (24, 25)).save(image_dir / "c.png")
    dataset = CocoDetection(ann_file, image_dir)
    with pytest.raises(RefineMaskError, match=r"image 3 .*24x25.*says 24x24"):
        dataset[index_of(dataset, 3)]


def test_missing_annotation_file_raises(tmp_path) -> None:
    with pytest.raises(RefineMaskError, match="annotation file not found"):
        CocoDetection(tmp_path / "missing.json", tmp_path)


def test_boxes_overshooting_by_rounding_are_clipped(make_coco, coco_dict) -> None:
    coco_dict["annotations"][0]["bbox"] = [-0.5, 2.0, 40.8, 8.0]
    dataset = CocoDetection(*make_coco(coco_dict))
    assert dataset.load_target(0)["boxes"][0].tolist() == [0.0, 2.0, 40.0, 10.0]


def test_transforms_receive_image_and_target(tiny_coco) -> None:
    def mark(image, target):
        return image * 0, {**target, "seen": True}

    image, target = CocoDetection(*tiny_coco, transforms=mark)[0]
    assert image.max() == 0 and target["seen"]


def test_batches_through_a_dataloader(tiny_coco) -> None:
    loader = DataLoader(CocoDetection(*tiny_coco), batch_size=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert [tuple(i.shape) for i in images] == [(3, 30, 40), (3, 36, 20)]
    assert [t["image_id"] for t in targets] == [1, 2]


def test_box_only_annotations_are_box_targets_without_a_mask(make_coco, coco_dict, caplog) -> None:
    # CVAT rectangles: "segmentation": []; kept (not skipped) and flagged for the mask losses
    coco_dict["annotations"][0]["segmentation"] = []
    del coco_dict["annotations"][0]["area"]
    with caplog.at_level(logging.WARNING, logger="refinemask.data.coco"):
        dataset = CocoDetection(*make_coco(coco_dict))
    assert dataset.problems == []
    assert "1 of 5 annotations have a box but no segmentation" in caplog.text and "ignored for masks" in caplog.text
    target = dataset.load_target(0)
    assert target["has_mask"].tolist() == [False, True, True]
    assert target["masks"][0].sum() == 0 and target["polygons"][0] is None
    assert target["boxes"][0].tolist() == [14.0, 2.0, 26.0, 10.0]
    assert dataset.coco.anns[10]["area"] == 96.0  # the box's area


def test_a_dataset_with_annotation_ids_from_zero_scores_its_own_ground_truth_one(make_coco, coco_dict) -> None:
    # the path of the metrics written after training: the dataset's checked ground truth
    from refinemask.config import EvalConfig
    from refinemask.engine.evaluate import score_results

    for number, annotation in enumerate(coco_dict["annotations"]):
        annotation["id"] = number  # as labelme and Label Studio write them
        annotation.pop("area")
    dataset = CocoDetection(*make_coco(coco_dict))
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
         "segmentation": a["segmentation"]}
        for a in dataset.coco.dataset["annotations"] if not a["iscrowd"]
    ]
    metrics = score_results(dataset, results, dataset.ids, EvalConfig(iou_types=["bbox", "segm"]), lvis=False)
    assert metrics["bbox"]["AP"] == 1.0 and metrics["segm"]["AP"] == 1.0
    assert sorted(dataset.coco.anns) == [0, 1, 2, 3, 4]  # the user's ids, kept


def test_images_without_width_and_height_take_the_size_of_their_files(make_coco, coco_dict) -> None:
    ann_file, image_dir = make_coco(coco_dict)
    for image in coco_dict["images"]:
        del image["width"], image["height"]
    ann_file.write_text(json.dumps(coco_dict))
    dataset = CocoDetection(ann_file, image_dir)
    assert dataset.problems == [] and dataset.aspect_ratios() == [40 / 30, 20 / 36, 1.0]
    image, _ = dataset[1]
    assert tuple(image.shape) == (3, 36, 20)
