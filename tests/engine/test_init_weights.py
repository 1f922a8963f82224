"""Fine-tuning starts (train.init_weights) from models trained for other classes.

Sources are made here with random values: our own weights and checkpoints, an official
mmdetection checkpoint (tests/convert/official_checkpoint.py), and torchvision Mask R-CNN /
Faster R-CNN state dicts. Tiny ResNet-18 models wherever the source allows it.
"""
from __future__ import annotations

import urllib.error

import pytest
import torch
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from refinemask import build_model
from refinemask.cli import main
from refinemask.model_files import save_weights
from refinemask.engine.init_weights import is_class_dependent, load_init_weights, torchvision_weights_file
from refinemask.engine.training_checkpoints import save_training_checkpoint
from refinemask.errors import RefineMaskError
from tests.tiny_runs import write_config

SMALL = {"backbone": "resnet18", "min_size": [64], "max_size": 64}


def small(num_classes: int, mask_head: str = "refinemask", seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model(num_classes=num_classes, mask_head=mask_head, **{**SMALL, **options})


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def torchvision_state(kind: str = "maskrcnn", num_classes: int = 91, seed: int = 1) -> dict[str, torch.Tensor]:
    """A torchvision detector with a ResNet-18 FPN and random weights, as ``state_dict()`` saves it."""
    torch.manual_seed(seed)
    cls = MaskRCNN if kind == "maskrcnn" else FasterRCNN
    return cls(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=num_classes).state_dict()


def assert_loaded_and_fresh(model, source: dict, before: dict, fresh_prefixes: tuple[str, ...] = ()) -> None:
    """Every tensor copied from ``source`` except the class-dependent ones and ``fresh_prefixes``,
    which keep the model's own initialisation (``before``)."""
    after = model.state_dict()
    copied = fresh = 0
    for key, value in after.items():
        if key.startswith(fresh_prefixes) or (is_class_dependent(key) and source[key].shape != value.shape):
            assert torch.equal(value, before[key]), key
            fresh += 1
        else:
            assert torch.equal(value, source[key]), key
            copied += 1
    assert copied > 100 and fresh > 0


@pytest.mark.parametrize("mask_head", ["refinemask", "maskrcnn"])
def test_the_class_dependent_tensors_are_exactly_those_whose_shape_follows_the_class_count(mask_head):
    two, three = small(2, mask_head).state_dict(), small(3, mask_head).state_dict()
    changing = {k for k in two if two[k].shape != three[k].shape}
    assert changing == {k for k in two if is_class_dependent(k)}


def test_our_weights_for_other_classes_load_all_but_the_class_dependent_tensors(tmp_path):
    source = small(5, seed=1)
    path = save_weights(source, tmp_path / "five.safetensors")
    model = small(3)
    before = snapshot(model)
    summary = load_init_weights(model, str(path))
    assert_loaded_and_fresh(model, source.state_dict(), before)
    assert f"from {path} (refinemask weights, 5 classes)" in summary
    assert "re-initialised 12: box predictor 4 (5 -> 3 classes), mask head 8 (5 -> 3 classes)" in summary
    assert summary.startswith("init_weights: loaded 188 of 200 tensors")


def test_our_training_checkpoint_is_a_starting_point_too(tmp_path):
    source = small(5, seed=1)
    config = {"model": {"num_classes": 5, "mask_head": "refinemask", **SMALL}}
    path = save_training_checkpoint({"model": source.state_dict(), "config": config, "iteration": 7}, tmp_path)
    model = small(2)
    before = snapshot(model)
    assert "(refinemask checkpoint, 5 classes)" in load_init_weights(model, str(path))
    assert_loaded_and_fresh(model, source.state_dict(), before)


def test_the_same_class_count_loads_every_tensor(tmp_path):
    source = small(3, seed=1)
    model = small(3)
    summary = load_init_weights(model, str(save_weights(source, tmp_path / "w.safetensors")))
    assert summary.endswith("tensors from " + str(tmp_path / "w.safetensors") + " (refinemask weights, 3 classes)")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_refinemask_weights_into_a_mask_rcnn_initialise_its_mask_head(tmp_path):
    source = small(5, seed=1)
    model = small(4, "maskrcnn")
    before = snapshot(model)
    summary = load_init_weights(model, str(save_weights(source, tmp_path / "w.safetensors")))
    assert "mask head 12 (the source's mask head is of another kind)" in summary
    assert_loaded_and_fresh(model, source.state_dict(), before, fresh_prefixes=("roi_heads.mask_",))


def test_a_torchvision_mask_rcnn_state_dict_loads_the_detector_and_a_fresh_refinemask_head(tmp_path):
    state = torchvision_state("maskrcnn")
    torch.save(state, tmp_path / "tv.pth")
    model = small(12)
    before = snapshot(model)
    summary = load_init_weights(model, str(tmp_path / "tv.pth"))
    assert_loaded_and_fresh(model, state, before, fresh_prefixes=("roi_heads.mask_",))
    assert "(torchvision-layout state dict, 90 classes)" in summary
    assert "box predictor 4 (90 -> 12 classes), mask head 70 (the source's mask head is of another kind)" in summary


def test_a_torchvision_mask_rcnn_into_our_mask_rcnn_keeps_its_mask_head_but_the_logits(tmp_path):
    state = torchvision_state("maskrcnn")
    torch.save(state, tmp_path / "tv.pth")
    model = small(12, "maskrcnn")
    before = snapshot(model)
    summary = load_init_weights(model, str(tmp_path / "tv.pth"))
    assert_loaded_and_fresh(model, state, before)
    assert "re-initialised 6: box predictor 4 (90 -> 12 classes), mask head 2 (90 -> 12 classes)" in summary


def test_a_torchvision_faster_rcnn_has_no_mask_head_so_ours_starts_fresh(tmp_path):
    state = torchvision_state("fasterrcnn")
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "faster.safetensors"))  # plain safetensors, no refinemask metadata
    model = small(2)
    before = snapshot(model)
    summary = load_init_weights(model, str(tmp_path / "faster.safetensors"))
    assert_loaded_and_fresh(model, state, before, fresh_prefixes=("roi_heads.mask_",))
    assert "mask head 70 (the source has no mask head)" in summary


def test_torchvisions_own_r50_mask_rcnn_fits_an_r50_refinemask(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state = tv.state_dict()
    torch.save(state, tmp_path / "tv50.pth")
    model = build_model(num_classes=12, backbone="resnet50")
    before = snapshot(model)
    summary = load_init_weights(model, str(tmp_path / "tv50.pth"))
    assert_loaded_and_fresh(model, state, before, fresh_prefixes=("roi_heads.mask_",))
    assert summary.startswith("init_weights: loaded 291 of 365 tensors")


def test_an_official_checkpoint_loads_converted_in_memory(tmp_path):
    from refinemask.convert import official_to_refinemask
    from tests.convert.official_checkpoint import official_checkpoint, official_state_dict

    official = official_state_dict(80, 50, None, seed=3)
    torch.save(official_checkpoint(official), tmp_path / "official.pth")
    model = build_model(num_classes=4, backbone="resnet50")
    before = snapshot(model)
    summary = load_init_weights(model, str(tmp_path / "official.pth"))
    assert "(official RefineMask checkpoint, 80 classes)" in summary
    assert_loaded_and_fresh(model, official_to_refinemask(official, 80), before)


def test_another_backbone_is_refused_naming_the_first_mismatch(tmp_path):
    torch.save(torchvision_state("maskrcnn"), tmp_path / "tv.pth")
    with pytest.raises(RefineMaskError) as err:
        load_init_weights(small(3, backbone="resnet34"), str(tmp_path / "tv.pth"))
    text = str(err.value)
    assert len(text.splitlines()) == 1
    assert "first mismatch: backbone.body.layer1.2.conv1.weight is not in the source" in text


def test_another_fpn_width_is_refused_naming_the_first_mismatch(tmp_path):
    source = save_weights(small(3), tmp_path / "w.safetensors")
    with pytest.raises(RefineMaskError, match=r"first mismatch: backbone\.fpn\.inner_blocks\.0\.0\.weight has shape "
                                              r"\[256, 64, 1, 1\] in the source, the model expects \[128, 64, 1, 1\]"):
        load_init_weights(small(3, fpn_channels=128), str(source))


def test_an_unknown_torchvision_name_lists_the_known_ones():
    with pytest.raises(RefineMaskError, match="known: torchvision:maskrcnn_resnet50_fpn, torchvision:fasterrcnn_resnet50_fpn"):
        load_init_weights(small(3), "torchvision:maskrcnn_resnet50_fpn_v2")


def test_offline_a_torchvision_name_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    url, path = torchvision_weights_file("maskrcnn_resnet50_fpn")
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    with pytest.raises(RefineMaskError) as err:
        load_init_weights(small(3), "torchvision:maskrcnn_resnet50_fpn")
    assert str(err.value) == (
        f"torchvision:maskrcnn_resnet50_fpn: cannot download {url} (URLError); offline, fetch that file "
        f"elsewhere and put it at {path}"
    )


def test_a_torchvision_name_reads_the_file_from_torchs_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    _, path = torchvision_weights_file("fasterrcnn_resnet50_fpn")
    path.parent.mkdir(parents=True)
    state = torchvision_state("fasterrcnn")
    torch.save(state, path)
    model = small(3)  # a ResNet-18 stands in for the R50 here: the file is ours
    summary = load_init_weights(model, "torchvision:fasterrcnn_resnet50_fpn")
    assert "from torchvision:fasterrcnn_resnet50_fpn (torchvision fasterrcnn_resnet50_fpn (COCO), 90 classes)" in summary


@pytest.mark.parametrize("content, expected", [
    (None, "train.init_weights: file not found"),
    (b"\x00garbage" * 10, "not a model file (train.init_weights takes"),
    (b"\x80\x02 not a pickle", "cannot be read as a checkpoint"),
    ({"epoch": torch.tensor(3), "note": "hello"}, "not a model state dict"),
])
def test_a_missing_corrupt_or_non_model_init_file_fails_in_one_line(tmp_path, synthetic_data, capsys, content, expected):
    path = tmp_path / "init.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out", train={"init_weights": str(path)})
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "init.pth" in err


def test_fine_tuning_from_weights_for_other_classes_trains_and_logs_the_summary(tmp_path, synthetic_data):
    source = save_weights(small(2, seed=4), tmp_path / "two_classes.safetensors")
    out = tmp_path / "out"
    config = write_config(tmp_path / "run.yaml", synthetic_data, out, train={"init_weights": str(source)})
    assert main(["train", str(config)]) == 0
    log = (out / "log.txt").read_text()
    assert "init_weights: loaded 188 of 200 tensors" in log and "(2 -> 5 classes)" in log


def test_the_bundled_fine_tuning_config_trains_on_custom_data_from_a_torchvision_state_dict(tmp_path, synthetic_data):
    torch.save(torchvision_state("maskrcnn"), tmp_path / "tv.pth")
    out = tmp_path / "out"
    tiny = [  # the bundled recipe on a ResNet-18 stand-in, 64 px images and 2 iterations
        f"train.init_weights={tmp_path / 'tv.pth'}", "model.backbone=resnet18", "model.min_size=[64]",
        "model.max_size=64", "model.box_batch_size_per_image=16", "model.rpn_post_nms_top_n_train=20",
        "solver.max_iters=2", "train.batch_size=1", "train.eval_at_end=false", "train.progress_bar=false",
        "train.tensorboard=false", "train.num_threads=1", "data.num_workers=0", f"train.output_dir={out}",
        f"data.train_annotations={synthetic_data.train}", f"data.train_images={synthetic_data.images}",
        f"data.val_annotations={synthetic_data.val}", f"data.val_images={synthetic_data.images}",
    ]
    assert main(["train", "finetune_r50_refinemask", *tiny]) == 0
    log = (out / "log.txt").read_text()
    assert "model.num_classes=5, the categories of" in log
    assert "re-initialised 74: box predictor 4 (90 -> 5 classes), mask head 70 (the source's mask head is of another kind)" in log


def test_an_unknown_torchvision_name_fails_in_one_line_with_exit_status_2(tmp_path, synthetic_data, capsys):
    config = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
                          train={"init_weights": "torchvision:resnet50"})
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "torchvision:resnet50: not a torchvision model" in err and "known: torchvision:maskrcnn_resnet50_fpn" in err
