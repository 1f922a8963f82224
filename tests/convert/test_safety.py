"""Reading untrusted checkpoints: nothing in them runs, and every refusal is one clear line."""
import os
import pickle

import pytest
import torch

from refinemask.cli import main
from tests.convert.official_checkpoint import official_checkpoint, official_shapes


def official_state_dict(num_classes, depth, mask_head=True, **simple):
    """The official keys; real shapes only where the converter reads them (fast to write)."""
    read = ("roi_head.bbox_head.fc_", "instance_logits")
    return {
        k: torch.zeros(s if any(r in k for r in read) else (1,))
        for k, s in official_shapes(num_classes, depth, mask_head=mask_head, **simple).items()
    }


class CreatesMarker:
    """Unpickling this calls ``open(path, 'w')``: the marker file appears if the pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _convert(capsys, *args):
    code = main(["convert", *map(str, args)])
    err = capsys.readouterr().err
    return code, err


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("refinemask convert: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_the_marker_payload_really_runs_when_unpickled_unsafely(tmp_path):
    # guards the next test against passing vacuously
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(CreatesMarker(marker), f)
    with open(tmp_path / "evil.pkl", "rb") as f:
        pickle.load(f).close()
    assert marker.exists()


@pytest.mark.parametrize("writer", ["pickle", "torch_save", "torch_save_legacy"])
def test_a_pickle_carrying_code_is_refused_and_never_runs(writer, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    payload = {"meta": {}, "state_dict": {"backbone.conv1.weight": torch.ones(1)}, "x": CreatesMarker(marker)}
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch_save")
    code, err = _convert(capsys, path, tmp_path / "out")
    assert code == 2
    line = _one_line_error(err)
    assert "pickled code" in line and str(path) in line
    assert not marker.exists()
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is text\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), os.urandom(4096)],
    ids=["empty", "text", "png", "random"],
)
def test_a_file_that_is_not_a_checkpoint_is_one_clear_error(content, tmp_path, capsys):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    code, err = _convert(capsys, path, tmp_path / "out")
    assert code == 2
    assert "cannot be read as a checkpoint" in _one_line_error(err)


def test_a_missing_file_is_one_clear_error(tmp_path, capsys):
    code, err = _convert(capsys, tmp_path / "nope.pth", tmp_path / "out")
    assert code == 2 and "checkpoint not found" in _one_line_error(err)


def _torchvision_maskrcnn_state():
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    with torch.device("meta"):
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    return {k: torch.zeros(1) for k in model.state_dict()}


def _mmdet_mask_rcnn_state():
    state = official_state_dict(3, 50, mask_head=False)
    state["roi_head.mask_head.convs.0.conv.weight"] = torch.zeros(256, 256, 3, 3)
    state["roi_head.mask_head.conv_logits.weight"] = torch.zeros(3, 256, 1, 1)
    return state


def _faster_better_wrong_last_stage_state():
    state = official_state_dict(3, 50, faster_better=True)
    state["roi_head.mask_head.stage_instance_logits.3.weight"] = torch.zeros(5, 32, 1, 1)
    return state


def _inconsistent_state():
    state = official_state_dict(3, 50)
    state["roi_head.mask_head.stages.0.instance_logits.weight"] = torch.zeros(5, 256, 1, 1)
    return state


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: official_state_dict(3, 50, mask_head=False), "without a mask head (Faster R-CNN?)"),
        (_torchvision_maskrcnn_state, "a torchvision/refinemask state dict"),
        (_mmdet_mask_rcnn_state, "Mask R-CNN checkpoint (FCN mask head), not RefineMask"),
        (_faster_better_wrong_last_stage_state, "stage_instance_logits.3 has 5 classes; expected 1 or 3"),
        (_inconsistent_state, "the box head has 3 classes but the mask head 5"),
        (lambda: {"fc.weight": torch.zeros(10, 2)}, "not an mmdetection two-stage detector"),
    ],
    ids=["faster_rcnn", "torchvision", "mask_rcnn", "faster_better", "inconsistent", "classifier"],
)
def test_a_checkpoint_of_another_model_is_refused_in_one_line(make, message, tmp_path, capsys):
    path = tmp_path / "other.pth"
    torch.save(official_checkpoint(make()), path)
    code, err = _convert(capsys, path, tmp_path / "out")
    assert code == 2
    assert message in _one_line_error(err)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_checkpoint_without_tensors_is_refused(tmp_path, capsys):
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": {"a": 1}}, path)
    code, err = _convert(capsys, path, tmp_path / "out")
    assert code == 2 and "not a mapping of names to tensors" in _one_line_error(err)


def test_a_resnet_of_another_depth_is_refused(tmp_path, capsys):
    state = official_state_dict(3, 50)
    for key in [k for k in state if k.startswith("backbone.layer3.5.")]:
        del state[key]
    path = tmp_path / "r44.pth"
    torch.save(official_checkpoint(state), path)
    code, err = _convert(capsys, path, tmp_path / "out")
    assert code == 2 and "(3, 4, 5, 3) bottleneck blocks" in _one_line_error(err)
