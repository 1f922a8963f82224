"""ONNX export of library backbones (torchvision:NAME, timm:NAME): a graph right at every image
size, or a one-line refusal; never a file that is right only at the traced size."""
from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("timm")

from refinemask.errors import RefineMaskError
from refinemask.export import check_export, export_onnx
from tests.tiny_models import confident_tiny_model, smooth_image


@pytest.mark.parametrize("backbone", ["timm:convnext_atto", "torchvision:mobilenet_v3_small"])
def test_a_library_backbone_exports_and_matches_pytorch_at_other_sizes(tmp_path, backbone):
    model = confident_tiny_model("maskrcnn", backbone=backbone, max_size=128)
    path = export_onnx(model, tmp_path / "model.onnx", example=smooth_image(128, 128, seed=0))
    check = check_export(model, path, [smooth_image(96, 128, seed=1), smooth_image(128, 80, seed=2)])
    assert check.num_matched == check.num_detections > 0 and check.count_mismatches == 0
    assert check.max_box_difference <= 1e-3 and check.min_mask_iou >= 0.99


def test_torchvisions_swin_is_refused_in_one_line_since_its_graph_is_right_at_one_size_only(tmp_path):
    # its window shift is switched off by a Python comparison of sizes, which tracing freezes
    model = confident_tiny_model("maskrcnn", backbone="torchvision:swin_t", max_size=128)
    with pytest.raises(RefineMaskError, match="does not export to ONNX for other image sizes") as info:
        export_onnx(model, tmp_path / "swin.onnx", example=smooth_image(128, 128, seed=0))
    assert "\n" not in str(info.value) and "timm:swin_tiny_patch4_window7_224" in str(info.value)
    assert not (tmp_path / "swin.onnx").exists()
