"""Converting a checkpoint of the faster-better head (SimpleRefineMaskHead).

No such checkpoint was released; these are built in the official key layout (docs/design.md
§7.1), as the official code would save one (coco/r50-refinemask-1x-faster-better, or Co-DETR's
settings).
"""
import torch

import refinemask
from refinemask.cli import main
from refinemask.convert import inspect_official
from refinemask.convert.files import convert_checkpoint
from refinemask.modeling.simple_refinemask_head import SimpleRefineMaskHead
from tests.convert.official_checkpoint import official_checkpoint, official_state_dict


def test_the_official_faster_better_layout_converts_and_loads_with_every_tensor_in_place(tmp_path, capsys):
    state = official_state_dict(80, 50, seed=7, faster_better=True)
    source = tmp_path / "faster_better.pth"
    torch.save(official_checkpoint(state), source)
    assert main(["convert", str(source), str(tmp_path / "fb")]) == 0
    assert "RefineMask faster-better (SimpleRefineMaskHead) R50-FPN, COCO (80 classes, class-agnostic last stage)" in (
        capsys.readouterr().out
    )
    model = refinemask.load_model(tmp_path / "fb.safetensors")
    assert isinstance(model.roi_heads.mask_head, SimpleRefineMaskHead)
    assert model.config.mask_head == "simple_refinemask" and model.roi_heads.bar_stage_weights == (0.5, 0.75, 0.75, 1.0)
    ours = model.state_dict()
    head_keys = [k for k in state if k.startswith("roi_head.mask_head.")]
    assert len(head_keys) == 62
    for key in head_keys:
        assert torch.equal(ours["roi_heads.mask_head." + key[len("roi_head.mask_head."):]], state[key]), key


def test_co_detr_conv_depths_are_read_from_the_keys(tmp_path):
    state = official_state_dict(3, 50, seed=8, faster_better=True, num_convs_instance=1, num_convs_semantic=2)
    official = inspect_official(state)
    assert (official.mask_head, official.instance_convs, official.semantic_convs) == ("simple_refinemask", 1, 2)
    source = tmp_path / "co_detr_like.pth"
    torch.save(official_checkpoint(state), source)
    result = convert_checkpoint(source, tmp_path / "out")  # loads strictly into the built model
    assert (result.config.mask_instance_convs, result.config.mask_semantic_convs) == (1, 2)
    assert "1 instance and 2 semantic convs" in result.official.describe()


def test_the_original_head_is_still_read_as_refinemask():
    official = inspect_official(official_state_dict(3, 50, seed=9))
    assert (official.mask_head, official.instance_convs, official.semantic_convs) == ("refinemask", 2, 4)


def test_head_widths_other_than_256_are_read_from_the_keys_for_both_heads(tmp_path):
    # conv_out_channels_instance / _semantic: 256 in every official config, but parameters of both heads
    for faster_better in (False, True):
        state = official_state_dict(3, 50, seed=10, faster_better=faster_better, instance_channels=128, semantic_channels=64)
        official = inspect_official(state)
        assert (official.instance_channels, official.semantic_channels) == (128, 64)
        assert "widths 128 instance and 64 semantic" in official.describe()
        source = tmp_path / f"narrow_{faster_better}.pth"
        torch.save(official_checkpoint(state), source)
        result = convert_checkpoint(source, tmp_path / f"narrow_{faster_better}")  # strict load
        assert (result.config.mask_instance_channels, result.config.mask_semantic_channels) == (128, 64)
    # the released width keeps the config as it was: None, the FPN's 256
    official = inspect_official(official_state_dict(3, 50, seed=9))
    assert (official.instance_channels, official.semantic_channels) == (256, 256)
    assert "widths" not in official.describe()
