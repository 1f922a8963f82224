"""`refinemask import`: each format, from a small export written the way its tool writes it.

Every import must give a COCO json that check-data accepts (no problem in the annotations or
the image files) and whose masks are the drawn regions.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from pycocotools import mask as mask_utils

from refinemask.cli import main
from refinemask.data.importers import import_dataset
from refinemask.data.validation import check_image_files, iter_problems, segmentation_to_rle
from refinemask.errors import RefineMaskError


def _image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _accepted(json_path: Path, image_root: Path) -> dict:
    data = json.loads(json_path.read_text())
    assert list(iter_problems(data)) == []
    assert list(check_image_files(data, image_root)) == []
    return data


def _mask(data: dict, annotation: dict) -> np.ndarray:
    image = next(im for im in data["images"] if im["id"] == annotation["image_id"])
    return mask_utils.decode(segmentation_to_rle(annotation["segmentation"], image["height"], image["width"]))


# --- YOLO ---------------------------------------------------------------------------------


def _roboflow_yolo(root: Path) -> Path:
    """A Roboflow 'YOLOv8' export: data.yaml with ../train/images, polygons and a box line."""
    for split, seed in (("train", 0), ("valid", 1)):
        _image(root / split / "images" / f"{split}_a.jpg", 40, 20, seed)
        (root / split / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "train_a.txt").write_text(
        "1 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n0 0.1 0.5 0.1 0.2\n"
    )
    (root / "valid" / "labels" / "valid_a.txt").write_text("0 0.5 0.1 0.9 0.1 0.9 0.9\n")
    yaml_path = root / "data.yaml"
    yaml_path.write_text(
        "train: ../train/images\nval: ../valid/images\n\nnc: 2\nnames: ['cat', 'dog']\n"
        "roboflow:\n  workspace: w\n  project: p\n"
    )
    return yaml_path


def test_yolo_import_keeps_the_splits_and_scales_normalised_polygons(tmp_path):
    yaml_path = _roboflow_yolo(tmp_path / "set")
    written, imported = import_dataset("yolo", yaml_path, tmp_path / "coco")
    assert set(written) == {"train", "val"}
    train = _accepted(written["train"], imported.image_root)
    assert train["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]  # class k -> k + 1
    assert [im["file_name"] for im in train["images"]] == ["train/images/train_a.jpg"]
    polygon, box = train["annotations"]
    assert polygon["category_id"] == 2 and polygon["segmentation"] == [[10.0, 5.0, 30.0, 5.0, 30.0, 15.0, 10.0, 15.0]]
    assert polygon["area"] == 200.0
    assert box["category_id"] == 1 and box["segmentation"] == [] and box["bbox"] == pytest.approx([2.0, 8.0, 4.0, 4.0])
    val = _accepted(written["val"], imported.image_root)
    assert len(val["annotations"]) == 1 and val["images"][0]["id"] not in {im["id"] for im in train["images"]}


def test_yolo_import_from_a_relative_path_with_an_ultralytics_root(tmp_path, monkeypatch):
    _roboflow_yolo(tmp_path / "set")
    (tmp_path / "set" / "data.yaml").write_text("path: .\ntrain: train/images\nval: valid/images\nnames: {0: cat, 1: dog}\n")
    monkeypatch.chdir(tmp_path)
    written, imported = import_dataset("yolo", "set/data.yaml", "coco")
    assert _accepted(written["train"], imported.image_root)["images"][0]["file_name"] == "train/images/train_a.jpg"
    _roboflow_yolo(tmp_path / "roboflow")  # no path key, ../train/images: relative to the yaml's folder
    written, imported = import_dataset("yolo", "roboflow/data.yaml", "coco2")
    assert len(_accepted(written["val"], imported.image_root)["images"]) == 1


def test_yolo_class_outside_the_names_is_one_line_naming_file_and_line(tmp_path):
    yaml_path = _roboflow_yolo(tmp_path / "set")
    (tmp_path / "set" / "valid" / "labels" / "valid_a.txt").write_text("0 0.5 0.1 0.9 0.1 0.9 0.9\n7 0.1 0.1 0.2 0.2\n")
    with pytest.raises(RefineMaskError, match=r"valid_a.txt, line 2: class 7 is not in the yaml's names"):
        import_dataset("yolo", yaml_path, tmp_path / "coco")


# --- labelme ------------------------------------------------------------------------------


def _labelme_file(folder: Path, name: str, shapes: list[dict], width: int = 40, height: int = 30) -> None:
    _image(folder / f"{name}.jpg", width, height)
    document = {
        "version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{name}.jpg",
        "imageData": None, "imageHeight": height, "imageWidth": width,
    }
    (folder / f"{name}.json").write_text(json.dumps(document, indent=2))


def _shape(label, points, shape_type="polygon", group_id=None, **extra):
    return {"label": label, "points": points, "group_id": group_id, "description": "",
            "shape_type": shape_type, "flags": {}, "mask": None, **extra}


def test_labelme_folder_imports_polygons_groups_rectangles_and_masks(tmp_path):
    folder = tmp_path / "labelme"
    crop = np.zeros((4, 6), dtype=np.uint8)
    crop[1:3, 1:5] = 1
    png = io.BytesIO()
    Image.fromarray(crop * 255).save(png, format="PNG")
    _labelme_file(folder, "one", [
        _shape("dog", [[2, 2], [12, 2], [12, 10], [2, 10]]),
        _shape("cat", [[20, 2], [24, 2], [24, 6]], group_id=1),
        _shape("cat", [[30, 2], [34, 2], [34, 6]], group_id=1),  # one cat in two parts
        _shape("cat", [[5, 15], [15, 25]], shape_type="rectangle"),
        _shape("dog", [[20, 20], [25, 23]], shape_type="mask", mask=base64.b64encode(png.getvalue()).decode()),
        _shape("dog", [[1, 1]], shape_type="point"),
    ])
    _labelme_file(folder, "two", [_shape("cat", [[1, 1], [9, 1], [9, 9]])], width=16, height=12)
    written, imported = import_dataset("labelme", folder, tmp_path / "coco", val_fraction=0.5)
    train, val = (_accepted(written[s], imported.image_root) for s in ("train", "val"))
    assert train["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    one = train if train["images"][0]["file_name"] == "one.jpg" else val
    kinds = {(a["category_id"], type(a["segmentation"]).__name__, len(a["segmentation"])) for a in one["annotations"]}
    assert kinds == {(2, "list", 1), (1, "list", 2), (1, "list", 0), (2, "dict", 2)}
    mask_annotation = next(a for a in one["annotations"] if isinstance(a["segmentation"], dict))
    expected = np.zeros((30, 40), dtype=np.uint8)
    expected[21:23, 21:25] = 1
    np.testing.assert_array_equal(_mask(one, mask_annotation), expected)
    assert imported.builder.left_out == {"labelme point shapes (no region)": 1}


# --- Pascal VOC ---------------------------------------------------------------------------


def _palette_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8), mode="P")
    palette = np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8)
    image.putpalette(palette.tolist())
    image.save(path)


def test_voc_segmentation_object_pngs_import_with_classes_and_splits(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    objects = np.zeros((24, 32), dtype=np.uint8)
    classes = np.zeros((24, 32), dtype=np.uint8)
    objects[2:10, 2:12], classes[2:10, 2:12] = 1, 15  # a person
    objects[12:20, 16:30], classes[12:20, 16:30] = 2, 8  # a cat
    objects[10, :], classes[10, :] = 255, 255  # VOC's void border
    for stem, seed in (("2007_000032", 0), ("2007_000033", 1)):
        _image(root / "JPEGImages" / f"{stem}.jpg", 32, 24, seed)
        _palette_png(root / "SegmentationObject" / f"{stem}.png", objects)
        _palette_png(root / "SegmentationClass" / f"{stem}.png", classes)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    written, imported = import_dataset("voc", tmp_path / "VOCdevkit", tmp_path / "coco")
    train = _accepted(written["train"], imported.image_root)
    assert len(train["categories"]) == 20 and train["categories"][14] == {"id": 15, "name": "person"}
    person, cat = sorted(train["annotations"], key=lambda a: a["category_id"], reverse=True)
    assert (person["category_id"], cat["category_id"]) == (15, 8)
    np.testing.assert_array_equal(_mask(train, person), objects == 1)
    assert person["bbox"] == [2.0, 2.0, 10.0, 8.0]
    assert [im["file_name"] for im in _accepted(written["val"], imported.image_root)["images"]] == [
        "JPEGImages/2007_000033.jpg"
    ]


# --- CVAT ---------------------------------------------------------------------------------

CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>cells</name>
      <labels>
        <label><name>cell</name><color>#fa3253</color><type>any</type><attributes></attributes></label>
        <label><name>debris</name><color>#33ddff</color><type>any</type><attributes></attributes></label>
      </labels>
    </task>
  </meta>
  <image id="0" name="a.png" width="30" height="20">
    <polygon label="cell" source="manual" occluded="0" points="2.00,2.00;10.00,2.00;10.00,8.00;2.00,8.00" z_order="0">
    </polygon>
    <box label="debris" source="manual" occluded="0" xtl="12.5" ytl="3.0" xbr="18.0" ybr="9.5" z_order="0">
    </box>
    <mask label="cell" source="manual" occluded="0" rle="1, 2, 2, 2, 1" left="20" top="10" width="4" height="2" z_order="0">
    </mask>
    <polyline label="cell" source="manual" occluded="0" points="1.0,1.0;5.0,5.0" z_order="0">
    </polyline>
  </image>
</annotations>
"""


def test_cvat_for_images_xml_imports_polygons_boxes_and_brush_masks(tmp_path):
    export = tmp_path / "task_7"
    _image(export / "images" / "a.png", 30, 20)
    (export / "annotations.xml").write_text(CVAT_XML)
    written, imported = import_dataset("cvat", export / "annotations.xml", tmp_path / "coco")
    data = _accepted(written["annotations"], imported.image_root)
    assert imported.image_root == export / "images"
    assert data["categories"] == [{"id": 1, "name": "cell"}, {"id": 2, "name": "debris"}]
    polygon, box, brush = data["annotations"]
    assert polygon["segmentation"] == [[2.0, 2.0, 10.0, 2.0, 10.0, 8.0, 2.0, 8.0]]
    assert box["segmentation"] == [] and box["bbox"] == [12.5, 3.0, 5.5, 6.5] and box["category_id"] == 2
    expected = np.zeros((20, 30), dtype=np.uint8)
    expected[10, 21:23] = 1  # row 0 of the crop: 1 background, 2 object, 1 background
    expected[11, 20:21] = 0
    expected[11, 21:23] = 1  # row 1: (then) 2 object, 1 background
    np.testing.assert_array_equal(_mask(data, brush), expected)
    assert imported.builder.left_out == {"CVAT <polyline> (no region)": 1}


# --- instance label images ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_label_images_in_the_stardist_layout_give_one_instance_per_id(tmp_path, dtype):
    root = tmp_path / "nuclei"
    labels = np.zeros((20, 24), dtype=dtype)
    labels[2:6, 2:6] = 1
    labels[10:14, 3:9] = 7
    labels[15:18, 18:22] = 300 if dtype != np.uint8 else 200
    labels[0:2, 20:24] = 7  # a second piece of object 7
    (root / "masks").mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 4000, (20, 24)).astype(np.uint16)  # 16-bit microscopy
    (root / "images").mkdir()
    tifffile.imwrite(root / "images" / "img_001.tif", image)
    tifffile.imwrite(root / "masks" / "img_001.tif", labels)
    written, imported = import_dataset("label-images", root, tmp_path / "coco", category="nucleus")
    data = _accepted(written["annotations"], imported.image_root)
    assert data["categories"] == [{"id": 1, "name": "nucleus"}]
    assert data["images"][0]["file_name"] == "images/img_001.tif"
    masks = [_mask(data, a) for a in data["annotations"]]
    assert len(masks) == 3
    np.testing.assert_array_equal(masks[1], labels == 7)
    assert [a["area"] for a in data["annotations"]] == [16.0, 32.0, 12.0]


def test_cellpose_masks_beside_the_images_and_a_channel_of_a_multi_plane_file(tmp_path):
    root = tmp_path / "cells"
    root.mkdir()
    _image(root / "b.png", 16, 12)
    planes = np.zeros((2, 12, 16), dtype=np.uint16)
    planes[0, 1:4, 1:4] = 1  # nuclei
    planes[1, 0:6, 0:8] = 1  # cells
    planes[1, 6:12, 8:16] = 2
    tifffile.imwrite(root / "b_masks.tif", planes)
    with pytest.raises(RefineMaskError, match=r"b_masks.tif has 2 planes .* --channel K"):
        import_dataset("label-images", root, tmp_path / "coco")
    written, imported = import_dataset("label-images", root, tmp_path / "coco", channel=1)
    data = _accepted(written["annotations"], imported.image_root)
    assert [a["area"] for a in data["annotations"]] == [48.0, 48.0]


# --- the command --------------------------------------------------------------------------


def test_import_command_prints_the_counts_and_the_check_data_command(tmp_path, capsys):
    yaml_path = _roboflow_yolo(tmp_path / "set")
    assert main(["import", "yolo", str(yaml_path), str(tmp_path / "coco")]) == 0
    out = capsys.readouterr().out
    assert "train.json: 1 images, 2 annotations (1 box-only), 2 categories" in out
    assert f"next: refinemask check-data {tmp_path / 'coco' / 'train.json'} --images {tmp_path / 'set'}" in out
    assert main(["check-data", str(tmp_path / "coco" / "train.json"), "--images", str(tmp_path / "set")]) == 0


def test_import_of_a_missing_source_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["import", "labelme", str(tmp_path / "nothing"), str(tmp_path / "coco")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing: not found" in err


def test_check_data_names_the_format_and_the_import_command(tmp_path, capsys):
    folder = tmp_path / "labelme"
    _labelme_file(folder, "one", [_shape("dog", [[2, 2], [12, 2], [12, 10]])])
    yaml_path = _roboflow_yolo(tmp_path / "set")
    for path, expected in (
        (folder / "one.json", f"is a labelme file, not a COCO json; convert it first: refinemask import labelme {folder} OUT_DIR"),
        (yaml_path, f"is a YOLO data.yaml, not a COCO json; convert it first: refinemask import yolo {yaml_path} OUT_DIR"),
        (folder, "is a folder of labelme files"),
    ):
        assert main(["check-data", str(path)]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1
