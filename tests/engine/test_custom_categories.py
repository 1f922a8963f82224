"""A user's own categories: ids with gaps, their names, and no model.num_classes in the config.

The names and ids are learnt from the training annotations, stored with the weights, and come
back in predict's results, the Predictor, the web page and the COCO evaluation.
"""
from __future__ import annotations

import json

import pytest
import yaml

from refinemask import load_model
from refinemask.cli import main
from refinemask.engine.predict import Predictor
from tests.tiny_runs import write_config
from tests.scratch import scratch_dir

# the synthetic set's categories 1..5 renamed and renumbered with gaps
USER_IDS = {1: 7, 2: 19, 3: 20, 4: 101, 5: 3000}
USER_NAMES = {7: "Kelp frond", 19: "urchin", 20: "sea star", 101: "anemone", 3000: "crab"}


def relabel(source, destination) -> None:
    data = json.loads(source.read_text())
    for category in data["categories"]:
        category["id"] = USER_IDS[category["id"]]
        category["name"] = USER_NAMES[category["id"]]
    data["categories"].reverse()  # the file's order must not matter
    for annotation in data["annotations"]:
        annotation["category_id"] = USER_IDS[annotation["category_id"]]
    destination.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory, synthetic_data):
    with scratch_dir(tmp_path_factory, "custom") as root:
        yield _train_relabelled(root, synthetic_data)


def _train_relabelled(root, synthetic_data):
    relabel(synthetic_data.train, root / "train.json")
    relabel(synthetic_data.val, root / "val.json")
    config = write_config(root / "run.yaml", synthetic_data, root / "out", data={
        "train_annotations": str(root / "train.json"), "val_annotations": str(root / "val.json"),
    }, train={"eval_at_end": True})
    data = yaml.safe_load(config.read_text())
    del data["model"]["num_classes"]
    config.write_text(yaml.safe_dump(data))
    assert main(["train", str(config)]) == 0
    return root


def test_num_classes_left_out_is_taken_from_the_training_annotations(custom_run):
    log = (custom_run / "out" / "log.txt").read_text()
    assert "model.num_classes=5, the categories of" in log
    assert yaml.safe_load((custom_run / "out" / "config.yaml").read_text())["model"]["num_classes"] == 5


def test_the_weights_carry_the_users_category_ids_and_names_in_id_order(custom_run):
    model = load_model(custom_run / "out" / "model_final.safetensors")
    assert model.label_to_category == {1: 7, 2: 19, 3: 20, 4: 101, 5: 3000}
    assert model.category_names == ["Kelp frond", "urchin", "sea star", "anemone", "crab"]
    predictor = Predictor(model)
    assert predictor.label_to_category == model.label_to_category and predictor.category_names == model.category_names


def test_predict_results_use_the_users_ids_and_names(custom_run, synthetic_data, tmp_path):
    out = tmp_path / "predictions"
    assert main(["predict", "--weights", str(custom_run / "out" / "model_final.safetensors"),
                 str(synthetic_data.images / "val_000000.png"), "--out", str(out), "--score-thresh", "0.0"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results and all(USER_NAMES[r["category_id"]] == r["category_name"] for r in results)


def test_evaluation_writes_coco_results_with_the_users_ids(custom_run, tmp_path):
    out = tmp_path / "metrics.json"
    assert main(["eval", str(custom_run / "run.yaml"), "--weights", str(custom_run / "out" / "model_final.safetensors"),
                 "--out", str(out)]) == 0
    results = json.loads((tmp_path / "metrics_results.json").read_text())
    assert results and {r["category_id"] for r in results} <= set(USER_NAMES)
    assert json.loads(out.read_text()) == json.loads((custom_run / "out" / "metrics.json").read_text())


def test_the_web_page_names_the_users_categories(custom_run):
    from refinemask.serve import make_server

    model = load_model(custom_run / "out" / "model_final.safetensors")
    server = make_server(model, "127.0.0.1", 0, quiet=True)
    try:
        assert server.category_names == ["Kelp frond", "urchin", "sea star", "anemone", "crab"]
    finally:
        server.server_close()


def test_a_model_without_categories_gets_the_same_default_names_everywhere():
    from refinemask import build_model
    from refinemask.model_files import model_categories

    model = build_model(num_classes=2, backbone="resnet18")
    assert model_categories(model) == ({1: 1, 2: 2}, ["class_1", "class_2"])
    assert Predictor(model).category_names == ["class_1", "class_2"]
