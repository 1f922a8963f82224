"""Time an exported detector in onnxruntime, for the benchmarks (benchmarks/speed.py)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refinemask.data.images import as_rgb_array
from refinemask.errors import RefineMaskError
from refinemask.export.runtime import OnnxPredictor

@dataclass
class OnnxTiming:
    """Median wall time per image over the repeats, in seconds."""

    seconds_per_image: float  # preprocess + graph + paste (what a user waits for)
    graph_seconds_per_image: float  # the onnxruntime session alone
    num_images: int
    repeats: int
    providers: list[str]


def onnx_inference_time(
    model: str | Path | OnnxPredictor,
    images: Sequence[Any],
    warmup: int = 1,
    repeats: int = 3,
    num_threads: int | None = None,
    score_thresh: float | None = 0.5,
) -> OnnxTiming:
    """Time an exported detector on ``images`` (paths, arrays or tensors), for the benchmarks.

    Images are decoded once before timing. Each repeat runs every image; the median repeat is
    reported per image, once end to end (:meth:`OnnxPredictor.predict_array`) and once for
    the graph alone.
    """
    if not images:
        raise RefineMaskError("onnx_inference_time needs at least one image")
    if isinstance(model, OnnxPredictor):
        predictor = model
    else:
        predictor = OnnxPredictor(model, score_thresh=score_thresh, num_threads=num_threads)
    arrays = [as_rgb_array(image, **predictor.scaling) for image in images]
    for _ in range(warmup):
        predictor.predict_array(arrays[0])
    total, graph = [], []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for array in arrays:
            predictor.predict_array(array)
        total.append((time.perf_counter() - start) / len(arrays))
        start = time.perf_counter()
        for array in arrays:
            predictor.run_graph(array)
        graph.append((time.perf_counter() - start) / len(arrays))
    return OnnxTiming(
        seconds_per_image=statistics.median(total),
        graph_seconds_per_image=statistics.median(graph),
        num_images=len(arrays),
        repeats=max(1, repeats),
        providers=list(predictor.session.get_providers()),
    )
