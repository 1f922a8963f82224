"""A library backbone (timm:NAME / torchvision:NAME) through the commands: train, eval, predict,
fine-tuning from its weights file, and a backbone-weights file. Random weights, nothing downloaded."""
from __future__ import annotations

import json

import pytest
import torch

from refinemask import load_model
from refinemask.cli import main
from tests.tiny_runs import write_config

pytest.importorskip("timm")


def test_train_eval_predict_and_finetune_with_a_timm_backbone(tmp_path, synthetic_data):
    backbone = "timm:convnext_atto"
    config = write_config(
        tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
        model={"backbone": backbone, "trainable_backbone_layers": 1},
        solver={"optimizer": "adamw", "base_lr": 1e-4, "weight_decay": 0.05, "no_weight_decay": ["norm", "bias"]},
        train={"eval_at_end": True},
    )
    assert main(["train", str(config)]) == 0
    weights = tmp_path / "out" / "model_final.safetensors"
    assert load_model(weights).config.backbone == backbone
    assert {"segm", "bbox"} <= set(json.loads((tmp_path / "out" / "metrics.json").read_text()))

    assert main(["eval", str(config), "--weights", str(weights), "--out", str(tmp_path / "m.json")]) == 0
    image = str(synthetic_data.images / "val_000000.png")
    assert main(["predict", "--weights", str(weights), image, "--out", str(tmp_path / "pred"), "--score-thresh", "0.0"]) == 0
    assert json.loads((tmp_path / "pred" / "results.json").read_text())

    finetune = write_config(
        tmp_path / "finetune.yaml", synthetic_data, tmp_path / "finetuned",
        model={"backbone": backbone}, train={"init_weights": str(weights)},
    )
    assert main(["train", str(finetune)]) == 0
    tuned = load_model(tmp_path / "finetuned" / "model_final.safetensors")
    start = load_model(weights)
    # every backbone tensor came from the first run's weights (and trained on from there, or stayed frozen)
    frozen = "backbone.body.stem_0.weight"
    assert torch.equal(tuned.state_dict()[frozen], start.state_dict()[frozen])


def test_a_torchvision_backbone_starts_from_a_local_classifier_file(tmp_path, synthetic_data):
    from torchvision import models

    torch.manual_seed(0)
    classifier = models.mobilenet_v3_small()
    torch.save(classifier.state_dict(), tmp_path / "mnv3.pth")
    config = write_config(
        tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
        model={"backbone": "torchvision:mobilenet_v3_small", "backbone_weights": str(tmp_path / "mnv3.pth")},
    )
    assert main(["train", str(config)]) == 0
    model = load_model(tmp_path / "out" / "model_final.safetensors")
    # trainable_backbone_layers 0 in the tiny runs: the body is exactly the classifier's
    assert torch.equal(model.backbone.body.get_submodule("features.9.block.0.0").weight, classifier.features[9].block[0][0].weight)
