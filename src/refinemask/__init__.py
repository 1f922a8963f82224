"""RefineMask instance segmentation on PyTorch + torchvision."""

__version__ = "0.1.0"


def build_model(*args, **kwargs):
    """Build a detector; see :func:`refinemask.modeling.detector.build_model`."""
    from refinemask.modeling.detector import build_model as _build

    return _build(*args, **kwargs)


def load_model(path, **kwargs):
    """Load a trained or converted model ready to predict; see :mod:`refinemask.model_files`."""
    from refinemask.model_files import load_model as _load

    return _load(path, **kwargs)


def __getattr__(name):
    # `refinemask.Predictor` without importing torch when the package is imported
    if name == "Predictor":
        from refinemask.engine.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'refinemask' has no attribute {name!r}")
