"""Mixed precision (``train.amp``) without a GPU: CPU autocast follows the same rules as CUDA's.

Under autocast the convolutions and linear layers run in fp16/bf16; coordinates (anchors,
proposals, boxes), mask targets and losses stay float32; the fp16 GradScaler's state travels
with the checkpoints. ``benchmarks/gpu.py`` runs the same path on a real GPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from refinemask.config import load_config
from refinemask.tensor_files import read_checkpoint
from refinemask.engine.distributed import init_distributed
from refinemask.engine.precision import autocast
from refinemask.engine.train import Trainer
from tests.tiny_runs import write_config
from tests.tiny_models import image_and_target, tiny_model

# bf16 for the layer-by-layer checks: CPU autocast applies the same op lists to fp16, but CPU fp16
# convolutions are ~40x slower; fp16 runs where its GradScaler matters (and in test_train.py)
HALF = [torch.bfloat16]


def _batch():
    """Two images whose rectangles carry polygons too, as COCO training targets do."""
    batch = [image_and_target(96, 128, seed=1), image_and_target(128, 96, seed=2)]
    for _, target in batch:
        target["polygons"] = [[np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float32)]
                              for x0, y0, x1, y1 in target["boxes"].tolist()]
    return [b[0] for b in batch], [b[1] for b in batch]


def _record_output_dtypes(model, names) -> dict[str, set]:
    seen: dict[str, set] = {name: set() for name in names}
    modules = dict(model.named_modules())
    for name in names:
        def hook(module, args, out, name=name):
            outs = list(out.values()) if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else [out]
            seen[name].update(o.dtype for o in outs if isinstance(o, torch.Tensor))
        modules[name].register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("head", ["refinemask", "maskrcnn"])
def test_every_convolution_and_linear_layer_runs_in_half_precision(head, dtype):
    model = tiny_model(head).train()
    layers = [name for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    seen = _record_output_dtypes(model, layers)
    images, targets = _batch()
    with torch.autocast("cpu", dtype=dtype):
        model(images, targets)
    ran = {name: dtypes for name, dtypes in seen.items() if dtypes}
    assert all(d == {dtype} for d in ran.values()), {n: d for n, d in ran.items() if d != {dtype}}
    # backbone, FPN, RPN, box head and the mask head's own convolutions all ran
    for part in ("backbone.body.", "backbone.fpn.", "rpn.head.", "roi_heads.box_head.", "roi_heads.mask_"):
        assert any(name.startswith(part) for name in ran), part


@pytest.mark.parametrize("dtype", HALF)
def test_anchors_proposals_mask_targets_and_losses_stay_float32(dtype, monkeypatch):
    model = tiny_model("refinemask").train()
    anchors, proposals, targets_seen = [], set(), set()
    model.rpn.anchor_generator.register_forward_hook(lambda m, args, out: anchors.append(out[0]))
    model.roi_heads.register_forward_pre_hook(lambda m, args: proposals.update(p.dtype for p in args[1]))
    from refinemask.modeling import roi_heads

    original = roi_heads.stage_mask_targets

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        targets_seen.update(t.dtype for t in out)
        return out

    monkeypatch.setattr(roi_heads, "stage_mask_targets", recording)
    images, targets = _batch()
    with torch.autocast("cpu", dtype=dtype):
        losses = model(images, targets)
    torch.manual_seed(0)
    model(images, targets)  # the same anchors in full precision
    half_anchors, full_anchors = anchors
    # anchors of 1-2k px would round to 1 px (fp16) or 8 px (bf16) steps in half precision
    assert half_anchors.dtype == torch.float32 and torch.equal(half_anchors, full_anchors)
    assert proposals == {torch.float32} and targets_seen == {torch.float32}
    assert {v.dtype for v in losses.values()} == {torch.float32}
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_trainer_autocasts_only_when_amp_is_set():
    device = torch.device("cpu")
    with autocast("none", device):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("bf16", device):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast("fp16", device):
        assert torch.get_autocast_dtype("cpu") == torch.float16


def test_the_grad_scaler_state_is_saved_in_checkpoints_and_restored_on_resume(tmp_path, synthetic_data, monkeypatch):
    monkeypatch.setattr("refinemask.engine.train.check_amp", lambda amp, device: None)
    # the scaler is the subject, not the kernels: bf16 ones (the CPU's fp16 conv backward takes ~50 s a step)
    monkeypatch.setattr("refinemask.engine.train.autocast", lambda amp, device: torch.autocast("cpu", dtype=torch.bfloat16))
    path = write_config(tmp_path / "run.yaml", synthetic_data, tmp_path / "out",
                        solver={"max_iters": 1}, train={"amp": "fp16", "device": "cpu", "checkpoint_every": 1})
    trainer = Trainer(load_config(path), init_distributed("cpu"))
    # a scale that moves every step, so a scaler left at its defaults would not pass for restored
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=1)
    trainer.run()
    saved = read_checkpoint(tmp_path / "out" / "checkpoint_0000001.pth")["scaler"]
    assert saved["scale"] == 2.0**5 and saved["growth_interval"] == 1  # one step, not skipped
    assert saved == trainer.scaler.state_dict()

    resumed = Trainer(load_config(path, ["train.resume=true"]), init_distributed("cpu"))
    assert resumed.scaler.get_scale() == 2.0**16  # a fresh scaler, before the checkpoint is read
    assert resumed.resume()
    assert resumed.scaler.state_dict() == saved


def test_full_precision_checkpoints_hold_no_scaler(trained_run):
    checkpoint = read_checkpoint(trained_run / "checkpoint_0000003.pth")
    assert "scaler" in checkpoint and checkpoint["scaler"] is None


def _record_roi_align_inputs(monkeypatch) -> list[tuple[torch.dtype, torch.Tensor]]:
    """Every RoIAlign call of the model (box and mask pooling, the fusion stages' semantic pooling,
    the faster-better head's point sampling): the dtype its features were sampled in, and its RoIs."""
    import torchvision

    calls = []
    original = torchvision.ops.roi_align

    def recording(features, rois, *args, **kwargs):
        calls.append((features.dtype, rois.detach().clone()))
        return original(features, rois, *args, **kwargs)

    # the kernel every RoIAlign of ours calls (refinemask.modeling.ops.roi_align looks it up per call)
    monkeypatch.setattr(torchvision.ops, "roi_align", recording)
    return calls


def _assert_float32_unrounded(calls, dtype):
    assert calls
    assert {rois.dtype for _, rois in calls} == {torch.float32}
    assert {sampled for sampled, _ in calls} == {torch.float32}
    coords = torch.cat([rois[:, 1:].reshape(-1) for _, rois in calls])
    large = coords[coords >= 256]
    assert large.numel() > 20
    # bf16 keeps 8 significant bits: rounded coordinates would all lie on its 2 px grid from 256 px
    off_grid = large != large.to(dtype).float()
    assert off_grid.float().mean() > 0.5, f"{int(off_grid.sum())} of {large.numel()} coordinates off the {dtype} grid"


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("head", ["refinemask", "simple_refinemask", "maskrcnn"])
def test_every_roi_align_samples_float32_unrounded_boxes_in_a_training_step(head, dtype, monkeypatch):
    model = tiny_model(head, min_size=[384], max_size=512).train()
    batch = [image_and_target(384, 512, seed=1), image_and_target(384, 512, n=3, seed=2)]
    calls = _record_roi_align_inputs(monkeypatch)
    with torch.autocast("cpu", dtype=dtype):
        losses = model([b[0] for b in batch], [b[1] for b in batch])
    _assert_float32_unrounded(calls, dtype)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("head", ["refinemask", "simple_refinemask", "maskrcnn"])
def test_every_roi_align_samples_float32_unrounded_boxes_in_an_eval_forward(head, dtype, monkeypatch):
    from tests.tiny_models import as_tensor, confident_tiny_model, smooth_image

    model = confident_tiny_model(head, min_size=[384], max_size=512, detections_per_img=20)
    image = as_tensor(smooth_image(384, 512, seed=3))
    calls = _record_roi_align_inputs(monkeypatch)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        out = model([image])[0]
    assert len(out["boxes"]) > 0
    _assert_float32_unrounded(calls, dtype)
    # the mask branch pooled the very detections it returns (the same float32 numbers; the
    # faster-better head's point sampling shifts them by its stride into a zero-padded map)
    rows = torch.cat([rois[:, 1:] for _, rois in calls])
    for box in out["boxes"]:
        assert any(((rows - box - shift) == 0).all(dim=1).any() for shift in (0.0, 4.0)), box


@pytest.mark.parametrize("dtype", HALF)
def test_frozen_batchnorm_keeps_the_half_precision_of_its_input(dtype):
    model = tiny_model("refinemask").train()
    from refinemask.modeling.frozen_batchnorm import FrozenBatchNorm2d

    norms = [name for name, m in model.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms
    seen = _record_output_dtypes(model, norms)
    images, targets = _batch()
    with torch.autocast("cpu", dtype=dtype):
        model(images, targets)
    ran = {name: d for name, d in seen.items() if d}
    assert ran and all(d == {dtype} for d in ran.values()), {n: d for n, d in ran.items() if d != {dtype}}


def test_frozen_batchnorm_in_float32_equals_torchvisions():
    from torchvision.ops import FrozenBatchNorm2d as Reference

    from refinemask.modeling.frozen_batchnorm import FrozenBatchNorm2d

    g = torch.Generator().manual_seed(0)
    ours, reference = FrozenBatchNorm2d(8, eps=1e-3), Reference(8, eps=1e-3)
    for name in ("weight", "bias", "running_mean"):
        getattr(ours, name).copy_(torch.randn(8, generator=g))
    ours.running_var.copy_(torch.rand(8, generator=g) + 0.1)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 5, 7, generator=g)
    assert torch.equal(ours(x), reference(x))
    assert list(ours.state_dict()) == list(reference.state_dict())
