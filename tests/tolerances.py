"""How equivalence tests compare floats, so that they hold on any CPU and thread count.

Two float32 computations of the same formula agree only to within rounding: the batch size,
chunking, the number of threads and the CPU's vector width each choose another kernel (oneDNN,
MKL, OpenBLAS) with another summation order. On one machine a difference of 8e-6 appeared where
another machine showed none, so a tolerance tuned on one CPU is a test that fails on the next.

The rule the tests follow:
- what the user sees (binary masks, labels, the order of detections) is compared exactly, except
  at pixels whose probability lies so close to the threshold that rounding alone can flip them;
- probabilities and logits are compared at a tolerance named here, with the reason.
"""
import torch

# Kernel choice (batch of one against a batch of seven, chunked against whole, 1 against 4
# threads) moves float32 logits of O(1) by up to ~1e-5 after a few conv layers; 1e-4 leaves room
# for a wider vector unit or another BLAS while still catching any real difference (a wrong
# weight, a missing stage or a shifted sample point moves values by 1e-2 or more).
KERNEL_ATOL = 1e-4

# Two independent computations of the same formula (ours against a re-computation written from
# the spec, or against the mmdetection reference): the same operations, other kernels and
# summation orders. Logits kept O(1) by small weights agree to ~1e-6; 1e-5 is the bar.
SPEC_ATOL = 1e-5


def assert_same_binary_masks(probs: torch.Tensor, ref_probs: torch.Tensor, threshold: float = 0.5,
                             margin: float = KERNEL_ATOL) -> None:
    """Assert that ``probs >= threshold`` equals ``ref_probs >= threshold`` at every pixel whose
    reference probability is farther than ``margin`` from the threshold.

    Pixels within ``margin`` of the threshold may flip under float rounding alone, so they are
    left out, and there must be few of them: at most 0.1% of the pixels (or one pixel), else the
    comparison would say nothing.
    """
    assert probs.shape == ref_probs.shape, (probs.shape, ref_probs.shape)
    ambiguous = (ref_probs.float() - threshold).abs() <= margin
    assert int(ambiguous.sum()) <= max(1, ref_probs.numel() // 1000), f"{int(ambiguous.sum())} pixels at the threshold"
    differ = (probs >= threshold) != (ref_probs >= threshold)
    flipped = int((differ & ~ambiguous).sum())
    assert flipped == 0, f"{flipped} pixels differ away from the threshold"
