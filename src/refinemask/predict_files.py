"""The loop behind ``refinemask predict``: every image of the inputs through a
:class:`~refinemask.engine.predict.Predictor`, one PNG overlay per image
(:func:`refinemask.overlay.draw_overlay`) and one COCO results json with RLE masks, whose category
ids come from the model's ``label_to_category``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from refinemask.data.categories import label_name
from refinemask.data.image_files import collect_images, image_ids
from refinemask.overlay import draw_overlay, overlay_path

if TYPE_CHECKING:
    from refinemask.engine.predict import Predictor


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    annotations: str | Path | None = None,
    overlays: bool = True,
    progress: bool = True,
    overlay_labels: bool = True,
    overlay_fill: bool = True,
    tile: int | None = None,
    overlap: float = 0.2,
) -> Path:
    """Predict every image of ``inputs``; write ``out_dir/<name>.png`` overlays and
    ``out_dir/results.json`` (COCO results with RLE masks, plus each image's ``file_name`` and
    each detection's ``category_name``).

    ``overlay_labels``, ``overlay_fill``: :func:`draw_overlay`'s ``labels`` and ``fill``.
    ``tile``/``overlap``: predict each image tile by tile (see :class:`Predictor`).

    Returns the results path.
    """
    from PIL import Image
    from tqdm import tqdm

    from refinemask.data.images import load_image
    from refinemask.evaluation import predictions_to_coco_results

    files = collect_images(inputs)
    ids = image_ids(files, annotations)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    used_names: set[str] = set()
    empty = 0
    category_name = {cat: label_name(label, predictor.category_names) for label, cat in predictor.label_to_category.items()}
    for path, image_id in tqdm(list(zip(files, ids)), desc="predict", unit="image", disable=not progress):
        image = load_image(path, **predictor.scaling)
        prediction = predictor(image, masks="box", tile=tile, overlap=overlap)  # no full-image map per detection
        if len(prediction["scores"]) == 0:
            empty += 1
            tqdm.write(f"{path}: {nothing_found(predictor)}")
        rows = predictions_to_coco_results([prediction], [image_id], predictor.label_to_category)
        for row in rows:
            row["file_name"] = path.name
            row["category_name"] = category_name[row["category_id"]]
        results.extend(rows)
        if overlays:
            drawn = draw_overlay(image, prediction, predictor.category_names, labels=overlay_labels, fill=overlay_fill)
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(overlay_path(out_dir, path, used_names))
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(results))
    if empty and len(files) > 1:
        tqdm.write(f"{empty} of {len(files)} images have no detection scoring at least {predictor.score_thresh:g}")
    return results_path


def nothing_found(predictor: Predictor) -> str:
    """Why the last image came back empty, and the flag that would show its best boxes."""
    best = predictor.best_scores[-1] if predictor.best_scores else 0.0
    threshold = predictor.score_thresh
    floor = float(predictor.model.roi_heads.score_thresh)  # the model's own; below it nothing is kept
    if threshold is None or best < floor:
        return f"no detection (the best box scored {best:.3f}, below the model's own threshold {floor:g})"
    # both rounded down: the best box scores at least the suggested threshold, and the score
    # shown never reads above the box's (0.5699 as 0.569, not 0.570 beside a suggested 0.56)
    suggestion = max(math.floor(best * 100) / 100, floor)
    return (
        f"no detection scoring at least {threshold:g}; the best box scored {math.floor(best * 1000) / 1000:.3f} "
        f"(--score-thresh {suggestion:g} shows it)"
    )
