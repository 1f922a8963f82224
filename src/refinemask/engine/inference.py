"""The one forward for inference: images in, detections in the images' pixels out.

Shapes: B images; N_i detections (or given boxes) of image i; H_i x W_i its size.

:class:`~refinemask.engine.predict.Predictor` (behind ``refinemask predict`` and ``serve``),
the evaluation loop (:func:`~refinemask.engine.evaluate.predict_dataset`), the ONNX export's
check and the demo report all run the model through :func:`detect`, so eval mode, no_grad and
where the images go are decided once. Resizing the images and mapping the detections back to
them is the model's own (:class:`~refinemask.modeling.transform.DetectionTransform`), the same
for every caller; so is batching, which each caller chooses by the list it passes (a batch is
padded to its largest image, so callers keep their batch size to keep their numbers).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and no_grad for the block; the model's training mode is restored after it.

    For callers that run several forwards around which they change other state (hooks,
    thresholds); :func:`detect` enters it for each call, and nesting it costs nothing.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def detect(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor],
    device: torch.device | str | None = None,
    boxes: Sequence[Any] | None = None,
    labels: Sequence[Any] | None = None,
    mask_output: str | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """The model's detections of B float (3, H_i, W_i) images in [0, 1], run as one batch.

    Returns per image ``boxes`` (N_i, 4) XYXY, ``labels`` (N_i,), ``scores`` (N_i,) and
    ``masks`` (N_i, 1, H_i, W_i) probabilities, in the image's pixels and on ``device`` (default:
    the model's). ``boxes``/``labels``: per image, boxes given to segment instead of the model's
    own detections (see the model's ``forward``). ``mask_output``: "box" returns ``masks`` as
    :class:`~refinemask.modeling.box_masks.BoxMasks` (no full-image map per detection), "image"
    as above; None keeps the model's setting. ``options``: the model's other eval call options
    (``score_thresh``, ``coarse``, ``best_score``). All of them are passed to the forward, so
    nothing on the model changes and threads may share it; the model is in eval mode under
    no_grad for the call (and in its former mode after it).
    """
    device = model_device(model) if device is None else torch.device(device)
    images = [image.to(device) for image in images]
    if mask_output is not None:
        options["mask_output"] = mask_output
    if boxes is not None:
        options.update(boxes=boxes, labels=labels)
    with evaluating(model):
        return model(images, **options)
