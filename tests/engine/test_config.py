"""Run configs: YAML + overrides into typed sections, typos named, official schedules bundled."""
from __future__ import annotations

import re

import pytest

from refinemask.cli import main
from refinemask.config import (
    Config,
    bundled_config_names,
    load_config,
    resolve_config_path,
    save_config,
    to_dict,
)
from refinemask.errors import RefineMaskError

OFFICIAL = [
    "coco_r50_refinemask_1x", "coco_r50_refinemask_2x", "coco_r101_refinemask_1x", "coco_r101_refinemask_2x",
    "lvis_r50_refinemask_1x", "cityscapes_r50_refinemask",
]


def test_every_bundled_config_loads_by_name():
    names = bundled_config_names()
    assert set(OFFICIAL) <= set(names)
    assert "quickstart_refinemask" in names
    for name in names:
        assert isinstance(load_config(name), Config)


def test_a_file_path_and_a_bundled_name_both_resolve(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {num_classes: 3}\n")
    assert load_config(path).model.num_classes == 3
    assert resolve_config_path("coco_r50_refinemask_1x.yaml").name == "coco_r50_refinemask_1x.yaml"
    with pytest.raises(RefineMaskError, match="did you mean 'coco_r50_refinemask_1x'"):
        resolve_config_path("coco_r50_refinemask_1")


def test_overrides_set_typed_values_in_any_section():
    config = load_config(
        "coco_r50_refinemask_1x",
        ["solver.base_lr=0.01", "model.backbone=resnet18", "model.min_size=[640,800]", "train.resume=true",
         "data.synthetic.size=96"],
    )
    assert config.solver.base_lr == 0.01 and config.model.backbone == "resnet18"
    assert config.model.min_size == [640, 800] and config.train.resume is True
    assert config.data.synthetic.size == 96 and config.data.synthetic.preset == "easy"


def test_a_typo_in_an_override_names_the_nearest_key():
    with pytest.raises(RefineMaskError, match=r"unknown key 'base_lrr' \(did you mean 'base_lr'\?\)"):
        load_config("coco_r50_refinemask_1x", ["solver.base_lrr=0.01"])
    with pytest.raises(RefineMaskError, match="did you mean 'solver'"):
        load_config("coco_r50_refinemask_1x", ["sovler.base_lr=0.01"])


def test_a_typo_in_the_file_names_the_file_and_the_nearest_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model:\n  backbon: resnet18\n")
    with pytest.raises(RefineMaskError, match=r"typo.yaml: model: unknown key 'backbon' \(did you mean 'backbone'"):
        load_config(path)


def test_a_value_outside_the_choices_is_refused():
    with pytest.raises(RefineMaskError, match="train.amp: 'fp32' is not one of none, fp16, bf16"):
        load_config("quickstart_refinemask", ["train.amp=fp32"])


def test_the_cli_reports_a_config_typo_in_one_line(capsys):
    assert main(["train", "quickstart_refinemask", "solver.base_lrr=0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'base_lr'" in err


def test_a_saved_config_loads_back_unchanged(tmp_path):
    config = load_config("lvis_r50_refinemask_1x", ["train.batch_size=1"])
    assert load_config(save_config(config, tmp_path / "config.yaml")) == config


@pytest.mark.parametrize("name", [n for n in OFFICIAL] + ["quickstart_refinemask"])
def test_each_baseline_differs_from_its_refinemask_config_only_in_the_mask_head(name):
    ours = to_dict(load_config(name))
    baseline = to_dict(load_config(name.replace("refinemask", "maskrcnn")))
    assert ours["model"].pop("mask_head") == "refinemask" and baseline["model"].pop("mask_head") == "maskrcnn"
    assert ours["train"].pop("output_dir") != baseline["train"].pop("output_dir")
    assert ours == baseline


@pytest.mark.parametrize("name", ["coco_r50_simple_refinemask_1x", "quickstart_simple_refinemask"])
def test_each_faster_better_config_differs_from_its_refinemask_config_only_in_the_mask_head(name):
    ours = to_dict(load_config(name))
    original = to_dict(load_config(name.replace("simple_refinemask", "refinemask")))
    assert ours["model"].pop("mask_head") == "simple_refinemask" and original["model"].pop("mask_head") == "refinemask"
    assert ours["train"].pop("output_dir") != original["train"].pop("output_dir")
    if name.startswith("coco"):  # the official faster-better config spells its head settings out
        assert ours["model"].pop("bar_stage_weights") == [0.5, 0.75, 0.75, 1.0]
        assert ours["model"].pop("class_agnostic_last_stage") is True
        original["model"].pop("bar_stage_weights"), original["model"].pop("class_agnostic_last_stage")
    assert ours == original


@pytest.mark.parametrize("name, widths", [("coco_r50_refinemask_narrow_1x", (128, 64)),
                                           ("quickstart_refinemask_narrow", (64, 32)),
                                           ("coco_r50_simple_refinemask_narrow_1x", (128, 64)),
                                           ("quickstart_simple_refinemask_narrow", (64, 32))])
def test_each_narrow_config_differs_from_its_refinemask_config_only_in_the_head_widths(name, widths):
    ours = to_dict(load_config(name))
    original = to_dict(load_config(name.replace("_narrow", "")))
    assert (ours["model"].pop("mask_instance_channels"), ours["model"].pop("mask_semantic_channels")) == widths
    assert (original["model"].pop("mask_instance_channels"), original["model"].pop("mask_semantic_channels")) == (None, None)
    assert ours["train"].pop("output_dir") != original["train"].pop("output_dir")
    assert ours == original
    # the same proportions of the FPN's width: half for the instance convs, a quarter for the semantic
    assert widths == (ours["model"]["fpn_channels"] // 2, ours["model"]["fpn_channels"] // 4)


@pytest.mark.parametrize("name", OFFICIAL + ["coco_r50_simple_refinemask_1x"])
def test_official_schedules_share_the_spec_solver(name):
    config = load_config(name)
    solver = config.solver
    assert (solver.optimizer, solver.momentum, solver.weight_decay) == ("sgd", 0.9, 1e-4)
    assert (solver.warmup_iters, solver.warmup_ratio, solver.grad_clip_norm) == (500, 0.001, 35.0)
    assert (solver.reference_batch_size, solver.gamma, solver.lr_schedule) == (16, 0.1, "step")
    assert config.model.backbone_weights == "imagenet" and config.model.box_loss_weight == 2.0
    assert config.model.fpn_channels == 256  # the official width; only the CPU quickstart narrows it


def test_official_schedules_have_their_own_epochs_rates_and_data_settings():
    coco_1x, coco_2x = load_config("coco_r50_refinemask_1x"), load_config("coco_r101_refinemask_2x")
    assert (coco_1x.solver.epochs, coco_1x.solver.lr_steps, coco_1x.solver.base_lr) == (12, [8, 11], 0.02)
    assert (coco_2x.solver.epochs, coco_2x.solver.lr_steps, coco_2x.model.backbone) == (24, [16, 22], "resnet101")
    assert (coco_1x.model.num_classes, coco_1x.model.min_size, coco_1x.model.max_size) == (80, [800], 1333)

    lvis = load_config("lvis_r50_refinemask_1x")
    assert lvis.data.format == "lvis" and lvis.data.repeat_factor_threshold == 1e-3
    assert lvis.model.min_size == [640, 672, 704, 736, 768, 800] and lvis.model.class_agnostic_last_stage
    assert (lvis.model.num_classes, lvis.model.box_score_thresh, lvis.model.detections_per_img) == (1203, 1e-4, 300)

    city = load_config("cityscapes_r50_refinemask")
    assert (city.solver.base_lr, city.solver.epochs, city.solver.lr_steps, city.data.repeat) == (0.01, 8, [7], 8)
    assert city.model.box_reg_loss == "smooth_l1" and city.data.polygons is False
    # range mode 800-1024 as every integer; the test scale (the last entry) is 2048x1024
    assert city.model.min_size == list(range(800, 1025)) and city.model.max_size == 2048


def test_the_quickstart_trains_on_synthetic_data_with_a_pretrained_light_backbone():
    config = load_config("quickstart_refinemask")
    assert config.data.synthetic is not None and config.model.backbone == "efficientnet_lite0"
    assert config.model.backbone_weights == "imagenet" and max(config.model.min_size) <= 320


def test_a_file_inherits_a_bundled_config_and_changes_only_what_it_names(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: quickstart_refinemask\nmodel: {num_classes: 3}\nsolver: {max_iters: 7}\n")
    mine, base = to_dict(load_config(path)), to_dict(load_config("quickstart_refinemask"))
    assert mine["model"].pop("num_classes") == 3 and mine["solver"].pop("max_iters") == 7
    base["model"].pop("num_classes"), base["solver"].pop("max_iters")
    assert mine == base


def test_inherit_finds_a_file_beside_this_one_before_a_bundled_name(tmp_path):
    (tmp_path / "quickstart_refinemask.yaml").write_text("inherit: quickstart_refinemask\ntrain: {seed: 5}\n")
    (tmp_path / "child.yaml").write_text("inherit: quickstart_refinemask\nsolver: {max_iters: 9}\n")
    config = load_config(tmp_path / "child.yaml")
    assert (config.train.seed, config.solver.max_iters, config.model.backbone) == (5, 9, "efficientnet_lite0")


def test_an_inherit_loop_is_one_clear_error(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(RefineMaskError, match=r"inherit: 'a.yaml' leads back to a.yaml \(a loop\)"):
        load_config(tmp_path / "a.yaml")


def test_every_bundled_child_config_shows_only_what_differs_from_its_base():
    from importlib import resources

    import yaml

    folder = resources.files("refinemask") / "configs"
    for name in bundled_config_names():
        own = yaml.safe_load((folder / f"{name}.yaml").read_text())
        if "inherit" not in own:
            continue
        base = to_dict(load_config(own["inherit"]))
        for section, values in own.items():
            if section == "inherit":
                continue
            for key, value in values.items():
                assert base[section][key] != value, f"{name}: {section}.{key} repeats its base's value"


def test_valid_values_are_checked_however_a_section_is_built():
    from refinemask import build_model
    from refinemask.config import ModelConfig, TrainConfig

    with pytest.raises(RefineMaskError, match="mask_head: 'mask_rcnn' is not one of refinemask, simple_refinemask, maskrcnn"):
        ModelConfig(mask_head="mask_rcnn")
    with pytest.raises(RefineMaskError, match="batch_size must be at least 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(RefineMaskError, match="model.mask_logits_init: 'tiny' is not one of official, small"):
        build_model(num_classes=2, backbone="resnet18", mask_logits_init="tiny")
    with pytest.raises(RefineMaskError, match="mask_instance_channels must be a multiple of 8, at least 16, got 20"):
        ModelConfig(mask_instance_channels=20)
    with pytest.raises(RefineMaskError, match="mask_semantic_channels 64 needs mask_semantic_convs of at least 1"):
        ModelConfig(mask_semantic_channels=64, mask_semantic_convs=0)


@pytest.mark.parametrize("override, message", [
    ("model.mask_head=null", "model.mask_head: None is not one of refinemask, simple_refinemask, maskrcnn"),
    ("model.mask_head=[refinemask]", "model.mask_head: ['refinemask'] is not one of"),
    ("train.amp=", "train.amp: '' is not one of none, fp16, bf16"),
    ("data.format=~", "data.format: None is not one of coco, lvis"),
    ("eval.iou_types=[segm, null]", "eval.iou_types: None is not one of segm, bbox, boundary"),
])
def test_a_choice_key_refuses_null_and_lists(override, message):
    with pytest.raises(RefineMaskError, match=re.escape(message)):
        load_config("quickstart_refinemask", [override])


def test_an_empty_section_in_an_inheriting_file_changes_nothing_and_a_null_key_clears_one(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: quickstart_maskrcnn\nmodel:\n  # num_classes: 3\ndata:\n  synthetic: null\n")
    config = load_config(path)
    assert config.model == load_config("quickstart_maskrcnn").model and config.data.synthetic is None


def test_inherit_looks_beside_the_file_and_in_the_bundled_configs_only(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "base.yaml").write_text("train: {seed: 3}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("inherit: base.yaml\n")
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(RefineMaskError, match=r"child.yaml: inherit: base.yaml is neither a file nor a bundled config"):
        load_config(tmp_path / "sub" / "child.yaml")


def test_the_readme_own_data_yaml_loads_and_leaves_the_class_count_to_the_data(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```yaml\n(# mine.yaml.*?)```", readme, re.S).group(1)
    path = tmp_path / "mine.yaml"
    path.write_text(block)
    config = load_config(path)
    assert config.model.num_classes is None and config.model.backbone == "efficientnet_lite0"
    assert config.data.synthetic is None and config.data.train_annotations == "train.json"
