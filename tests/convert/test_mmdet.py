"""Converting official checkpoints: where every tensor lands, what is read from the shapes, and
the model files that come out (docs/design.md §6.2, §7)."""
import json

import pytest
import torch
import yaml

import refinemask
from refinemask.cli import main
from refinemask.convert import inspect_official, read_official_checkpoint
from refinemask.data.categories import (
    CITYSCAPES_CATEGORY_IDS,
    COCO_CATEGORY_IDS,
    COCO_CATEGORY_NAMES,
    default_categories,
)
from refinemask.convert.files import convert_checkpoint
from refinemask.convert.mmdet import categories_from_annotations, model_config
from refinemask.errors import RefineMaskError
from refinemask.modeling.detector import build_model
from tests.convert.official_checkpoint import VARIANTS


def _model_shapes(num_classes, depth, last):
    # on the meta device: the keys and shapes of our model without allocating it
    with torch.device("meta"):
        model = build_model(num_classes, f"resnet{depth}", class_agnostic_last_stage=last == 1)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_keys_and_shapes_are_exactly_our_models(variant, converted_state):
    num_classes, depth, last = VARIANTS[variant]
    converted = converted_state(variant)
    assert {k: tuple(v.shape) for k, v in converted.items()} == _model_shapes(num_classes, depth, last)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_official_tensor_lands_where_the_spec_says(variant, official_state, converted_state):
    state = official_state(variant)
    out = converted_state(variant)
    checked = set()

    def same(ours, theirs):
        assert torch.equal(out[ours], state[theirs]), (ours, theirs)
        checked.add(theirs)

    for key in state:
        if key.startswith("backbone.") and not key.endswith("num_batches_tracked"):
            same("backbone.body." + key[len("backbone."):], key)
        if key.startswith("roi_head.mask_head."):
            same("roi_heads.mask_head." + key[len("roi_head.mask_head."):], key)
    for i in range(4):
        for p in ("weight", "bias"):
            same(f"backbone.fpn.inner_blocks.{i}.0.{p}", f"neck.lateral_convs.{i}.conv.{p}")
            same(f"backbone.fpn.layer_blocks.{i}.0.{p}", f"neck.fpn_convs.{i}.conv.{p}")
    for p in ("weight", "bias"):
        same(f"rpn.head.conv.0.0.{p}", f"rpn_head.rpn_conv.{p}")
        same(f"rpn.head.cls_logits.{p}", f"rpn_head.rpn_cls.{p}")
        same(f"rpn.head.bbox_pred.{p}", f"rpn_head.rpn_reg.{p}")
        same(f"roi_heads.box_head.fc6.{p}", f"roi_head.bbox_head.shared_fcs.0.{p}")
        same(f"roi_heads.box_head.fc7.{p}", f"roi_head.bbox_head.shared_fcs.1.{p}")
    # the two box-predictor tensors are reordered (next tests); everything else is accounted for
    reordered = {f"roi_head.bbox_head.{n}.{p}" for n in ("fc_cls", "fc_reg") for p in ("weight", "bias")}
    dropped = {k for k in state if k.endswith("num_batches_tracked")}
    assert checked | reordered | dropped == set(state)
    assert len(out) == len(state) - len(dropped)


@pytest.mark.parametrize("variant", ["coco_r50", "lvis_r50", "cityscapes_r50"])
def test_classifier_background_row_moves_from_last_to_first(variant, official_state, converted_state):
    state = official_state(variant)
    c = VARIANTS[variant][0]
    out = converted_state(variant)
    for p in ("weight", "bias"):
        theirs, ours = state[f"roi_head.bbox_head.fc_cls.{p}"], out[f"roi_heads.box_predictor.cls_score.{p}"]
        assert ours.shape[0] == c + 1
        assert torch.equal(ours[0], theirs[c])  # mmdetection's background row C -> our row 0
        assert torch.equal(ours[1:], theirs[:c])  # classes 0..C-1 -> 1..C


@pytest.mark.parametrize("variant", ["coco_r50", "lvis_r50", "cityscapes_r50"])
def test_box_regressor_gets_four_zero_background_rows_first(variant, official_state, converted_state):
    state = official_state(variant)
    c = VARIANTS[variant][0]
    out = converted_state(variant)
    for p in ("weight", "bias"):
        theirs, ours = state[f"roi_head.bbox_head.fc_reg.{p}"], out[f"roi_heads.box_predictor.bbox_pred.{p}"]
        assert ours.shape[0] == 4 * (c + 1)
        assert not ours[:4].any()
        assert torch.equal(ours[4:], theirs)


def test_num_batches_tracked_is_dropped(official_state, converted_state):
    assert any(k.endswith("num_batches_tracked") for k in official_state("coco_r50"))
    assert not any(k.endswith("num_batches_tracked") for k in converted_state("coco_r50"))


@pytest.mark.parametrize(
    "variant, expected",
    [
        ("coco_r50", (80, 50, False, "coco")),
        ("coco_r101", (80, 101, False, "coco")),
        ("lvis_r50", (1203, 50, True, "lvis")),
        ("lvis_r101", (1203, 101, True, "lvis")),
        ("cityscapes_r50", (8, 50, False, "cityscapes")),
    ],
)
def test_the_kind_of_model_is_read_from_tensor_shapes(variant, expected, official_state):
    found = inspect_official(official_state(variant))
    assert (found.num_classes, found.depth, found.class_agnostic_last_stage, found.dataset) == expected


@pytest.mark.parametrize(
    "variant, short, long, score, detections",
    [
        ("coco_r50", 800, 1333, 0.05, 100),
        ("lvis_r101", 800, 1333, 1e-4, 300),
        ("cityscapes_r50", 1024, 2048, 0.05, 100),
    ],
)
def test_the_data_set_decides_the_test_settings(variant, short, long, score, detections, official_state):
    config = model_config(inspect_official(official_state(variant)))
    assert (config.min_size[-1], config.max_size, config.box_score_thresh, config.detections_per_img) == (
        short, long, score, detections,
    )
    assert config.class_agnostic_last_stage == variant.startswith("lvis")
    # mmdetection's RPN ranking and no small-box filters (docs/design.md §6.2)
    assert (config.rpn_rank_by_sigmoid, config.rpn_min_box_size, config.box_min_size) == (True, 0.0, 0.0)


def test_category_lists_are_the_standard_ones():
    assert len(COCO_CATEGORY_IDS) == len(set(COCO_CATEGORY_IDS)) == 80
    assert list(COCO_CATEGORY_IDS) == sorted(COCO_CATEGORY_IDS) and COCO_CATEGORY_IDS[-1] == 90
    assert len(set(COCO_CATEGORY_NAMES)) == 80 and COCO_CATEGORY_NAMES[0] == "person"
    assert COCO_CATEGORY_NAMES[COCO_CATEGORY_IDS.index(90)] == "toothbrush"
    labels, names = default_categories("cityscapes", 8)
    assert labels == dict(zip(range(1, 9), CITYSCAPES_CATEGORY_IDS)) and names[1] == "rider"
    labels, names = default_categories("lvis", 1203)
    assert labels[1203] == 1203 and names[0] == "lvis_1"


def test_convert_cli_writes_safetensors_and_yaml_that_load_model_reads(official_file, converted_state, tmp_path, capsys):
    out = tmp_path / "coco_r50"
    assert main(["convert", str(official_file("coco_r50")), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "RefineMask R50-FPN, COCO (80 classes)" in printed
    weights = tmp_path / "coco_r50.safetensors"
    assert weights.is_file() and (tmp_path / "coco_r50.yaml").is_file()
    model = refinemask.load_model(weights)
    assert not model.training
    assert model.config.backbone == "resnet50" and model.config.num_classes == 80
    assert model.label_to_category[1] == 1 and model.label_to_category[80] == 90
    assert model.category_names[0] == "person"
    expected = converted_state("coco_r50")
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in expected.items())
    beside = yaml.safe_load((tmp_path / "coco_r50.yaml").read_text())
    assert beside["model"]["min_size"] == [800] and beside["model"]["max_size"] == 1333


def test_r101_lvis_converts_to_pth_with_names_from_the_checkpoint_meta(official_file, official_state, tmp_path):
    names = tuple(f"name_{i}" for i in range(1203))
    result = convert_checkpoint(official_file("lvis_r101", classes=names), tmp_path / "lvis.pth")
    assert result.path.suffix == ".pth" and result.official.depth == 101
    model = refinemask.load_model(result.path)
    assert model.config.backbone == "resnet101" and model.config.class_agnostic_last_stage
    assert model.roi_heads.mask_head.final_instance_logits.weight.shape == (1, 32, 1, 1)
    assert model.config.box_score_thresh == 1e-4 and model.config.detections_per_img == 300
    assert model.category_names[5] == "name_5" and model.label_to_category[1203] == 1203
    state = official_state("lvis_r101")
    ours = model.state_dict()
    assert torch.equal(ours["backbone.body.layer3.22.conv2.weight"], state["backbone.layer3.22.conv2.weight"])
    assert torch.equal(
        ours["roi_heads.mask_head.final_instance_logits.weight"], state["roi_head.mask_head.final_instance_logits.weight"]
    )


def test_a_legacy_non_zip_checkpoint_is_read(tmp_path):
    # PyTorch 1.5 most likely wrote the official files in the legacy format (docs/design.md §7.3)
    path = tmp_path / "legacy.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": {"backbone.conv1.weight": torch.ones(2)}}, path,
               _use_new_zipfile_serialization=False)
    state, meta = read_official_checkpoint(path)
    assert torch.equal(state["backbone.conv1.weight"], torch.ones(2)) and meta == {"epoch": 12}


def test_a_dataparallel_module_prefix_is_removed(tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module.backbone.conv1.weight": torch.ones(1)}}, path)
    assert list(read_official_checkpoint(path)[0]) == ["backbone.conv1.weight"]


def test_dataset_option_must_agree_with_the_class_count(official_file, tmp_path):
    with pytest.raises(RefineMaskError, match="has 8 classes, but coco has 80; use --dataset custom"):
        convert_checkpoint(official_file("cityscapes_r50"), tmp_path / "x", dataset="coco")


def test_categories_json_gives_ids_and_names(tmp_path):
    path = tmp_path / "cats.json"
    path.write_text(json.dumps({"categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]}))
    assert categories_from_annotations(path, 2) == ({1: 3, 2: 7}, ["a", "b"])
    with pytest.raises(RefineMaskError, match="2 categories, but the checkpoint has 80"):
        categories_from_annotations(path, 80)
