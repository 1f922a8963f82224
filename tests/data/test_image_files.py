"""The images of ``refinemask predict``: which files, and their COCO image ids."""
from __future__ import annotations

import json

import pytest

from refinemask.data.image_files import collect_images, image_ids
from refinemask.errors import RefineMaskError


def test_predict_skips_an_empty_folder_among_several_inputs(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.png").write_bytes(b"")
    assert collect_images([tmp_path / "empty", tmp_path / "full"]) == [tmp_path / "full" / "a.png"]
    assert f"skipped {tmp_path / 'empty'}: no image file" in caplog.text
    with pytest.raises(RefineMaskError, match="no image file .* in folder"):
        collect_images([tmp_path / "empty"])


def test_image_ids_are_1_to_n_without_annotations_else_matched_by_file_name(tmp_path):
    files = [tmp_path / "b.jpg", tmp_path / "a.jpg"]
    assert image_ids(files, None) == [1, 2]
    gt = tmp_path / "gt.json"
    images = [{"id": 7, "file_name": "train/a.jpg"}, {"id": 3, "file_name": "b.jpg"}]
    gt.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))
    assert image_ids(files, gt) == [3, 7]
    with pytest.raises(RefineMaskError, match=r"image .*c\.jpg is not listed in .*gt\.json"):
        image_ids([tmp_path / "c.jpg"], gt)
