"""Training starts by scanning every image file: bad ones are left out and listed, or (strict) refused."""
from __future__ import annotations

import json
import shutil

import pytest

from refinemask.cli import main
from tests.tiny_runs import write_config


@pytest.fixture
def damaged(tmp_path, synthetic_data):
    """A copy of the synthetic set whose first training image is missing and second truncated."""
    images = tmp_path / "images"
    shutil.copytree(synthetic_data.images, images)
    train = json.loads(synthetic_data.train.read_text())
    missing, truncated = (images / train["images"][i]["file_name"] for i in (0, 1))
    missing.unlink()
    truncated.write_bytes(truncated.read_bytes()[:200])
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
                          data={"train_images": str(images), "val_images": str(images)})
    return config, missing, truncated


def test_a_set_with_a_missing_and_a_truncated_image_trains_and_says_which_were_left_out(damaged, tmp_path):
    config, missing, truncated = damaged
    assert main(["train", str(config)]) == 0
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "train.json: left out 2 image(s) whose files have problems" in log
    assert f"file not found: {missing}" in log and f"cannot read image {truncated}" in log
    assert log.count(f"file not found: {missing}") == 1  # listed once
    assert (tmp_path / "out" / "model_final.safetensors").is_file()


def test_data_strict_makes_a_bad_file_an_error_in_one_line(damaged, capsys):
    config, missing, _ = damaged
    assert main(["train", str(config), "data.strict=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "2 image file(s) with problems, first:" in err and str(missing) in err and "data.strict=true" in err


def test_the_start_of_training_names_crowded_images_and_empty_categories(tmp_path, synthetic_data, caplog):
    import logging

    from refinemask.config import load_config
    from refinemask.engine.data import build_dataset

    train = json.loads(synthetic_data.train.read_text())
    train["categories"].append({"id": 99, "name": "_background_"})
    ann_file = tmp_path / "train.json"
    ann_file.write_text(json.dumps(train))
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
                          data={"train_annotations": str(ann_file), "scan_images": False},
                          model={"detections_per_img": 1, "num_classes": None})
    with caplog.at_level(logging.WARNING, logger="refinemask.run"):
        build_dataset(load_config(config), "train")
    assert "1 of 6 categories have no annotation: 99 (_background_)" in caplog.text
    assert "more instances than model.detections_per_img=1" in caplog.text
