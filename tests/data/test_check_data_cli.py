import json
import subprocess
import sys
from pathlib import Path

from refinemask.cli import main


def run_check(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["check-data", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_clean_data_exits_0(tiny_coco, capsys) -> None:
    ann_file, image_dir = tiny_coco
    code, out, _ = run_check(capsys, str(ann_file), "--images", str(image_dir))
    assert code == 0
    assert "ok: 3 images, 5 annotations, 3 categories; image files checked" in out


def test_problems_exit_1_and_are_all_listed_with_their_ids(make_coco, coco_dict, capsys) -> None:
    coco_dict["annotations"][0]["bbox"] = [30.0, 2.0, 20.0, 8.0]  # annotation 10: outside
    coco_dict["annotations"][2]["segmentation"]["size"] = [5, 5]  # annotation 12: RLE size
    coco_dict["annotations"][4]["segmentation"] = [[1.0, 1.0, 2.0, 2.0]]  # annotation 20: 2 points
    coco_dict["annotations"][3]["category_id"] = 4  # annotation 13: unknown category
    coco_dict["annotations"][1]["id"] = 10  # duplicate annotation id
    coco_dict["images"].append({"id": 3, "file_name": "d.png", "width": 4, "height": 4})  # duplicate image id
    ann_file, image_dir = make_coco(coco_dict, skip_files=("c.png",))
    (image_dir / "a.png").write_bytes(b"not a png")
    code, out, _ = run_check(capsys, str(ann_file), "--images", str(image_dir))
    assert code == 1
    lines = out.splitlines()
    expected = [
        "image 3 (d.png): image id 3 appears more than once",
        "annotation 10 (image 1): bbox",
        "annotation 10 (image 1): annotation id 10 appears more than once",
        "annotation 12 (image 1): RLE size [5, 5]",
        "annotation 13 (image 1): unknown category id 4",
        "annotation 20 (image 2): polygon 0 has 2 points",
        "image 1 (a.png): cannot read image",
        "image 3 (c.png): file not found",
    ]
    assert len(lines) == len(expected) + 1
    for line, start in zip(lines, expected, strict=False):
        assert line.startswith(start), (line, start)
    assert lines[-1].startswith(f"{ann_file}: 8 problems")


def test_missing_json_exits_2(tmp_path, capsys) -> None:
    code, _, err = run_check(capsys, str(tmp_path / "missing.json"))
    assert code == 2 and "annotation file not found" in err


def test_invalid_json_exits_2_with_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"images": [}')
    code, out, err = run_check(capsys, str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "broken.json is not valid JSON (line 1, column 13" in err


def test_missing_image_directory_exits_2(tiny_coco, tmp_path, capsys) -> None:
    code, _, err = run_check(capsys, str(tiny_coco[0]), "--images", str(tmp_path / "nowhere"))
    assert code == 2 and "image directory not found" in err


def test_without_images_the_files_are_not_checked(make_coco, capsys) -> None:
    ann_file, _ = make_coco(skip_files=("a.png",))
    code, out, _ = run_check(capsys, str(ann_file))
    assert code == 0 and "image files not checked" in out


def test_header_only_skips_decoding(tiny_coco, capsys) -> None:
    ann_file, image_dir = tiny_coco
    data = (image_dir / "c.png").read_bytes()
    (image_dir / "c.png").write_bytes(data[: len(data) // 2])
    assert run_check(capsys, str(ann_file), "--images", str(image_dir), "--header-only")[0] == 0
    assert run_check(capsys, str(ann_file), "--images", str(image_dir))[0] == 1


def test_lvis_file_names_are_understood(make_coco, coco_dict, capsys) -> None:
    ann_file, image_dir = make_coco(coco_dict)
    for image in coco_dict["images"]:
        image["coco_url"] = "http://images.cocodataset.org/val2017/" + Path(image.pop("file_name")).name
    ann_file.write_text(json.dumps(coco_dict))
    (image_dir / "b.png").write_bytes((image_dir / "sub" / "b.png").read_bytes())
    code, out, _ = run_check(capsys, str(ann_file), "--images", str(image_dir))
    assert code == 0, out


def test_installed_command_exit_status(tiny_coco, tmp_path) -> None:
    ann_file, image_dir = tiny_coco
    (image_dir / "a.png").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "refinemask.cli", "check-data", str(ann_file), "--images", str(image_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "image 1 (a.png): file not found" in done.stdout
    assert "Traceback" not in done.stderr


def test_notes_name_empty_categories_doubled_files_and_crowded_images(make_coco, coco_dict, capsys) -> None:
    coco_dict["categories"].append({"id": 0, "name": "_background_"})  # labelme / Roboflow's extra category
    coco_dict["images"].append({"id": 4, "file_name": "a.png", "width": 40, "height": 30})  # a.png again
    ann_file, image_dir = make_coco(coco_dict)
    code, out, _ = run_check(capsys, str(ann_file), "--images", str(image_dir), "--detections-per-img", "2")
    assert code == 0  # notes, not problems
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 3
    assert "1 of 4 categories have no annotation: 0 (_background_)" in notes[0]
    assert "1 files are listed under more than one image id (e.g. a.png: ids 1, 4)" in notes[1]
    assert "1 images have more instances than model.detections_per_img=2 (up to 3)" in notes[2]


def test_images_without_a_size_are_read_from_their_files(make_coco, coco_dict, capsys) -> None:
    ann_file, image_dir = make_coco(coco_dict)
    for image in coco_dict["images"]:
        del image["width"], image["height"]
    ann_file.write_text(json.dumps(coco_dict))
    code, out, _ = run_check(capsys, str(ann_file), "--images", str(image_dir))
    assert code == 0 and "note: 3 images have no width/height in the json; read from their files" in out
    code, out, _ = run_check(capsys, str(ann_file))
    assert code == 1 and "has no width; give the image folder (check-data --images DIR)" in out


def test_an_image_folder_that_doubles_the_file_names_prefix_is_named(make_coco, coco_dict, capsys) -> None:
    for image in coco_dict["images"]:
        image["file_name"] = "images/" + image["file_name"]
    ann_file, image_dir = make_coco(coco_dict)  # writes image_dir/images/...
    code, out, _ = run_check(capsys, str(ann_file), "--images", str(image_dir / "images"))
    assert code == 1
    assert f"the file names already start with images/, so the image folder is {image_dir}" in out


def test_a_wrong_area_is_a_note_of_check_data(make_coco, coco_dict, capsys) -> None:
    coco_dict["annotations"][0]["area"] = 960.0  # ten times the polygon's 96 px
    ann_file, image_dir = make_coco(coco_dict)
    code, out, _ = run_check(capsys, str(ann_file), "--images", str(image_dir))
    assert code == 0
    assert "note: 1 annotations' 'area' differs from their segmentation's pixel area by more than 25% (annotation 10: 960" in out


def test_images_far_larger_than_the_model_input_get_a_note_on_crops_and_tiles(make_coco, coco_dict, capsys) -> None:
    ann_file, image_dir = make_coco(coco_dict)
    code, out, _ = run_check(capsys, str(ann_file), "--input-size", "1333")
    assert code == 0 and "note:" not in out  # 40 px images: nothing to say
    code, out, _ = run_check(capsys, str(ann_file), "--input-size", "16")
    assert code == 0
    (note,) = [line for line in out.splitlines() if line.startswith("note:")]
    assert "2 of 3 images have a long side over 2x the model's 16 px input (up to 40 px" in note
    assert "data.crop_size" in note and "--tile" in note
