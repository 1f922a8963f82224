"""Evaluate a model on a dataset: run it, gather every rank's predictions, score them.

Each rank runs the model on its share of the images (every ``world_size``-th, one image per
device by default) and converts the detections to COCO results with RLE masks
(:func:`~refinemask.evaluation.predictions_to_coco_results`); the results of all ranks are
gathered on rank 0, which scores them with :func:`~refinemask.evaluation.evaluate_coco` (mask,
box and Boundary AP at each ``eval.boundary_dilations``) or, for ``data.format: lvis``,
:func:`~refinemask.evaluation.evaluate_lvis`. Every rank returns the same metrics.

From the command line (``refinemask eval CONFIG --weights W``) this is
:func:`evaluate_from_config`; it also works under ``torchrun``.

With ``gt_boxes=True`` (``--gt-boxes``) the model segments the ground-truth boxes with their
ground-truth labels instead of its own detections, so mask AP and Boundary AP measure the masks
alone, not the boxes: two models with different box quality are compared on their masks. The
scores that rank the masks are each model's box-head probability of the true class; box AP is
not reported (the boxes are the ground truth).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from refinemask.config import (
    Config,
    EvalConfig,
    load_config,
)
from refinemask.data import collate
from refinemask.engine import distributed
from refinemask.engine.distributed import DistributedContext
from refinemask.engine.inference import detect
from refinemask.errors import RefineMaskError

logger = logging.getLogger("refinemask.run")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class EvaluationSamples(torch.utils.data.Dataset):
    """``dataset`` for prediction: each image with its boxes, labels and id, but no mask decoded.

    Ground-truth masks are scored from the dataset's COCO index, never from these targets, so
    decoding every instance's full-image bitmap (and shipping it from the workers) is wasted.
    """

    def __init__(self, dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        if not hasattr(self.dataset, "load_image"):  # another dataset: its own items
            return self.dataset[index]
        return self.dataset.load_image(index), self.dataset.load_target(index, masks=False)


def predict_dataset(
    model: torch.nn.Module,
    dataset,
    indices: Sequence[int],
    device: torch.device,
    label_to_category: Mapping[int, int],
    batch_size: int = 1,
    mask_threshold: float = 0.5,
    progress: bool = False,
    gt_boxes: bool = False,
    num_workers: int = 0,
) -> tuple[list[dict], list[int]]:
    """COCO results of ``model`` on ``dataset[i]`` for ``i`` in ``indices``, and their image ids.

    ``gt_boxes``: segment each image's ground-truth boxes with their labels (crowd regions are
    not in the targets) instead of the model's detections. ``num_workers``: data-loader
    processes that read and decode the images while the model runs (``data.num_workers``).
    """
    from refinemask.evaluation import predictions_to_coco_results

    model = unwrap(model)
    loader = torch.utils.data.DataLoader(
        EvaluationSamples(dataset, indices), batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # leave the global RNG alone (a resumed run must not diverge)
    )
    results: list[dict] = []
    image_ids: list[int] = []
    for images, targets in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
        if gt_boxes:
            outputs = detect(
                model, images, device, boxes=[t["boxes"] for t in targets], labels=[t["labels"] for t in targets],
                mask_output="box",
            )
        else:
            # box-local masks: RLE from each mask's window, never an (N, H, W) map
            outputs = detect(model, images, device, mask_output="box")
        ids = [int(t["image_id"]) for t in targets]
        results.extend(predictions_to_coco_results(outputs, ids, label_to_category, mask_threshold))
        image_ids.extend(ids)
    return results, image_ids


def score_results(
    dataset, results: list[dict], image_ids: Sequence[int], eval_config: EvalConfig, lvis: bool
) -> dict[str, dict[str, float]]:
    """Metrics ``{iou type: {AP, AP50, ...}}`` of COCO ``results`` on ``dataset``'s ground truth."""
    from refinemask.evaluation import evaluate_coco, evaluate_lvis

    ground_truth = dataset.coco.dataset  # the checked annotations (problem entries removed)
    dilations = list(eval_config.boundary_dilations) or [0.02]
    iou_types = list(dict.fromkeys(eval_config.iou_types))
    if lvis:
        return evaluate_lvis(ground_truth, results, iou_types, dilations, image_ids=list(image_ids))
    return evaluate_coco(ground_truth, results, iou_types, dilations, image_ids=list(image_ids))


def evaluate(
    model: torch.nn.Module,
    dataset,
    eval_config: EvalConfig,
    context: DistributedContext,
    label_to_category: Mapping[int, int],
    lvis: bool = False,
    progress: bool = True,
    gt_boxes: bool = False,
    num_workers: int = 0,
) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Metrics (the same on every rank) and all COCO results (on rank 0; empty elsewhere).

    Every rank must call it: it gathers the ranks' predictions. ``gt_boxes``: masks on the
    ground-truth boxes and labels (see the module docstring); no box AP then. ``num_workers``:
    image-reading processes (``data.num_workers``).
    """
    if gt_boxes:
        masks_only = [t for t in eval_config.iou_types if t != "bbox"]
        if not masks_only:
            raise RefineMaskError("--gt-boxes scores masks: eval.iou_types needs segm or boundary")
        eval_config = dataclasses.replace(eval_config, iou_types=masks_only)
    count = len(dataset) if eval_config.max_images <= 0 else min(eval_config.max_images, len(dataset))
    shard = range(context.rank, count, context.world_size)
    results, image_ids = predict_dataset(
        model,
        dataset,
        shard,
        context.device,
        label_to_category,
        eval_config.batch_size,
        eval_config.mask_threshold,
        progress=progress and context.is_main,
        gt_boxes=gt_boxes,
        num_workers=num_workers,
    )
    gathered = distributed.gather_objects((results, image_ids))  # on rank 0 only: LVIS's results are large
    all_results: list[dict] = []

    def score() -> dict:
        all_ids: list[int] = []
        for rank_results, rank_ids in gathered:
            all_results.extend(rank_results)
            all_ids.extend(rank_ids)
        metrics = score_results(dataset, all_results, all_ids, eval_config, lvis)
        logger.info("evaluated %d images, %d detections", len(set(all_ids)), len(all_results))
        return metrics

    # the other ranks wait for rank 0's scoring (minutes for LVIS) beyond NCCL's timeout
    metrics = distributed.computed_on_main(score)
    return metrics, all_results


def evaluate_config(
    config: Config,
    weights: str | Path,
    out: str | Path | None = None,
    gt_boxes: bool = False,
    model_overrides: dict | None = None,
) -> dict | None:
    """Evaluate ``weights`` on the data and with the eval section of ``config`` (None off rank 0).

    The model is built from the settings saved with the weights, which are the settings it was
    trained with (a bundled config's model section may differ: another FPN width, another
    backbone); ``model_overrides`` change single model settings on top of them (the ``model.*``
    overrides of the command line, e.g. ``detections_per_img``). ``gt_boxes``: score masks on the
    ground-truth boxes and labels (see the module docstring).
    """
    from refinemask.engine.data import setup_datasets
    from refinemask.model_files import load_model
    from refinemask.engine.distributed import configure_threads

    context = distributed.init_distributed(config.train.device)
    configure_threads(config.train.num_threads)
    dataset = setup_datasets(config, ("val",), context.is_main)["val"]
    model = load_model(weights, context.device, **(model_overrides or {}))
    categories = len(dataset.label_to_category)
    if model.config.num_classes != categories:
        raise RefineMaskError(
            f"{weights} predicts {model.config.num_classes} classes but {dataset.ann_file} has {categories} "
            "categories: a different number of classes; score the weights on the data they were trained for"
        )
    config.model.num_classes = categories
    label_to_category = dataset.label_to_category
    saved = getattr(model, "label_to_category", None)
    if saved and dict(saved) != dict(label_to_category):
        logger.warning(
            "%s was trained with another label -> category mapping than %s; scoring with the dataset's",
            weights, dataset.ann_file,
        )
    metrics, results = evaluate(
        model, dataset, config.eval, context, label_to_category, lvis=config.data.format == "lvis", gt_boxes=gt_boxes,
        num_workers=config.data.num_workers,
    )
    if out is not None and context.is_main:
        from refinemask.evaluation import save_metrics_json

        out = Path(out)
        save_metrics_json(metrics, out)
        results_path = out.with_name(f"{out.stem}_results.json")
        results_path.write_text(json.dumps(results))
        print(f"metrics written to {out}, COCO results to {results_path}")
    return metrics if context.is_main else None


def evaluate_from_config(
    config_path: str | Path,
    weights: str | Path,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    gt_boxes: bool = False,
) -> dict | None:
    """``refinemask eval CONFIG --weights W [key=value ...] [--out metrics.json] [--gt-boxes]``.

    Returns the metrics ``{iou type: {metric: value in [0, 1]}}`` on rank 0 (the caller prints
    them) and None on the other ranks of a ``torchrun`` evaluation.
    """
    config = load_config(config_path, list(overrides))
    if not Path(weights).is_file():
        raise RefineMaskError(f"weights file not found: {weights}")
    # only what the command line names explicitly changes the weights' own model settings
    named = {o.split("=", 1)[0].split(".")[1] for o in overrides if o.startswith("model.") and "=" in o}
    model_overrides = {key: getattr(config.model, key) for key in named if hasattr(config.model, key)}
    owns_group = not distributed.is_initialized()
    try:
        return evaluate_config(config, weights, out, gt_boxes=gt_boxes, model_overrides=model_overrides)
    finally:
        if owns_group:
            distributed.shutdown_distributed()
