"""RefineMask instance segmentation on PyTorch + torchvision."""

__version__ = "0.1.0"


def build_model(*args, **kwargs):
    """Build a detector; see :func:`refinemask.modeling.detector.build_model`."""
    from refinemask.modeling.detector import build_model as _build

    return _build(*args, **kwargs)


def load_model(path, **kwargs):
    """Load a trained or converted model ready to predict; see :mod:`refinemask.engine.checkpoint`."""
    from refinemask.engine.checkpoint import load_model as _load

    return _load(path, **kwargs)
