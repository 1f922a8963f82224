"""BatchNorm with fixed statistics and affine parameters that keeps its input's dtype.

torchvision's ``FrozenBatchNorm2d`` computes ``x * scale + bias`` with float32 buffers, so under
autocast an fp16/bf16 activation comes out float32: every later op then reads (and autograd
stores) float32 activations, and mixed precision saves much less memory in the backbone than it
should. Here the folded scale and bias are computed in float32 (as before: ``rsqrt`` of a small
variance is where half precision would lose digits) and only then cast to the activation's dtype.
Buffers, names and state-dict keys are torchvision's, so weights load unchanged.
"""
from __future__ import annotations

import torch
from torchvision.ops import FrozenBatchNorm2d as _TorchvisionFrozenBatchNorm2d


class FrozenBatchNorm2d(_TorchvisionFrozenBatchNorm2d):
    """``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` in ``x``'s dtype; (B, C, H, W) -> same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        # a Python dtype check, not a no-op cast: an fp32 ONNX trace stays as it was
        if scale.dtype != x.dtype:
            scale, bias = scale.to(x.dtype), bias.to(x.dtype)
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)
