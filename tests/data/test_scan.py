"""The image-file scan before training: parallel, cached, problems listed once."""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from refinemask.data.scan import scan_image_files


def tiny_set(root, count=4, size=16, mode="L"):
    images = []
    for i in range(count):
        name = f"im{i}.png"
        Image.fromarray(np.full((size, size), 10 * i, dtype=np.uint8)).save(root / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    data = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    (root / "ann.json").write_text(json.dumps(data))
    return data


def test_missing_and_truncated_files_are_found_in_file_order(tmp_path):
    data = tiny_set(tmp_path)
    (tmp_path / "im1.png").unlink()
    raw = (tmp_path / "im3.png").read_bytes()
    (tmp_path / "im3.png").write_bytes(raw[: len(raw) // 2])
    scan = scan_image_files(data, tmp_path, tmp_path / "ann.json", workers=3)
    assert [p.kind for p in scan.problems] == ["missing_file", "unreadable_file"]
    assert "im1.png" in scan.problems[0].message and "im3.png" in scan.problems[1].message
    assert scan.bad_image_ids(data) == {2, 4} and scan.num_images == 4 and not scan.cached


def test_a_second_scan_is_cached_until_a_file_changes(tmp_path):
    data = tiny_set(tmp_path)
    assert not scan_image_files(data, tmp_path, tmp_path / "ann.json").cached
    again = scan_image_files(data, tmp_path, tmp_path / "ann.json")
    assert again.cached and again.problems == []
    (tmp_path / "im2.png").write_bytes(b"not an image any more")
    changed = scan_image_files(data, tmp_path, tmp_path / "ann.json")
    assert not changed.cached and [p.kind for p in changed.problems] == ["unreadable_file"]
    assert scan_image_files(data, tmp_path, tmp_path / "ann.json").problems == changed.problems  # from the cache


def test_the_cache_lives_in_refinemask_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINEMASK_CACHE", str(tmp_path / "cache"))
    data = tiny_set(tmp_path)
    scan_image_files(data, tmp_path, tmp_path / "ann.json")
    assert len(os.listdir(tmp_path / "cache" / "scans")) == 1


def test_16_bit_images_using_a_small_part_of_their_range_are_reported(tmp_path):
    data = tiny_set(tmp_path)
    for i, image in enumerate(data["images"][:2]):
        values = np.linspace(0, 235 - i, 256).astype(np.uint16).reshape(16, 16)
        Image.fromarray(values).save(tmp_path / image["file_name"])  # mode I;16
    scan = scan_image_files(data, tmp_path)
    assert scan.ranges == {1: (0, 235, 65535), 2: (0, 234, 65535)}
    assert scan.range_note() == "2 of 4 images are 16-bit and use values 0-235 of 0-65535 (0.36% of the range)"


def test_16_bit_images_using_their_range_are_not_reported(tmp_path):
    data = tiny_set(tmp_path)
    Image.fromarray(np.linspace(0, 40000, 256).astype(np.uint16).reshape(16, 16)).save(tmp_path / "im0.png")
    scan = scan_image_files(data, tmp_path)
    assert scan.ranges == {1: (0, 40000, 65535)} and scan.range_note() is None


def test_32_bit_images_are_measured_against_the_white_point_the_loader_uses(tmp_path):
    from refinemask.data.images import as_rgb_array

    data = tiny_set(tmp_path)
    data["images"][0]["file_name"] = "wide.tif"
    values = np.linspace(0, 100_000, 256).astype(np.int32).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "wide.tif")  # mode I, values beyond 16 bits
    scan = scan_image_files(data, tmp_path)
    # the loader stretches 0..peak to black..white, so the note must not call this a faint image
    assert scan.ranges == {1: (0, 100_000, 100_000)} and scan.range_note() is None
    assert float(as_rgb_array(tmp_path / "wide.tif", scaling="full").max()) == 1.0


def faint_16_bit_set(root):
    data = tiny_set(root)
    for image in data["images"]:
        Image.fromarray(np.linspace(0, 235, 256).astype(np.uint16).reshape(16, 16)).save(root / image["file_name"])
    return data


def test_check_data_notes_a_16_bit_set_using_a_small_part_of_its_range(tmp_path, capsys):
    from refinemask.cli import main

    faint_16_bit_set(tmp_path)
    assert main(["check-data", str(tmp_path / "ann.json"), "--images", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "note: 4 of 4 images are 16-bit and use values 0-235 of 0-65535 (0.36% of the range)" in out
    assert "model.high_bit_scaling=percentiles, the default" in out


def test_training_start_warns_when_full_range_scaling_would_show_a_faint_set_black(tmp_path, caplog):
    from refinemask.data.coco import CocoDetection
    from refinemask.engine.data import leave_out_bad_images

    faint_16_bit_set(tmp_path)
    dataset = CocoDetection(tmp_path / "ann.json", tmp_path)
    with caplog.at_level("INFO", logger="refinemask.run"):
        leave_out_bad_images(dataset, strict=False, high_bit_scaling="full")
        leave_out_bad_images(dataset, strict=False, high_bit_scaling="percentiles")
    full, default = [r for r in caplog.records if "0-235 of 0-65535" in r.getMessage()]
    assert full.levelname == "WARNING" and "the network sees them nearly black" in full.getMessage()
    assert default.levelname == "INFO" and "scaled per image (model.high_bit_scaling=percentiles)" in default.getMessage()
