"""The demo's report: metrics table, side-by-side mask pictures, loss curves."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

METRIC_ROWS = (
    ("segm", "AP", "mask AP"),
    ("segm", "AP50", "mask AP50"),
    ("segm", "AP75", "mask AP75"),
    ("boundary", "AP", "Boundary AP (dilation 0.02)"),
    ("boundary@0.008", "AP", "Boundary AP (dilation 0.008)"),
    ("bbox", "AP", "box AP"),
    ("gt_boxes/segm", "AP", "mask AP on ground-truth boxes"),
    ("gt_boxes/boundary", "AP", "Boundary AP (0.02) on ground-truth boxes"),
    ("gt_boxes/boundary@0.008", "AP", "Boundary AP (0.008) on ground-truth boxes"),
)
GT_BOXES = "gt_boxes/"  # prefix of the metrics of masks on the ground-truth boxes and labels


def evaluate_run(config, weights: Path, gt_boxes: bool = True) -> dict:
    """Metrics of the weights on the config's validation split (single process).

    With ``gt_boxes`` also those of the masks on the ground-truth boxes and labels (the masks
    apart from the boxes, ``refinemask eval --gt-boxes``), under keys ``gt_boxes/<iou type>``.
    """
    from refinemask.engine.evaluate import evaluate_config

    metrics = evaluate_config(config, weights)
    if gt_boxes:
        metrics.update({GT_BOXES + k: v for k, v in evaluate_config(config, weights, gt_boxes=True).items()})
    return metrics


def loss_history(output_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``train/<loss>`` scalars from the run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(output_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag.startswith("train/") and tag not in ("train/lr",):
                history.setdefault(tag[len("train/"):], []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return history


def plot_losses(histories: dict[str, dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(histories.values()):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, history in histories.items():
        points = sorted(history.get("loss", []))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=f"{name}: total")
        mask_key = "loss_instance" if "loss_instance" in history else "loss_mask"
        points = sorted(history.get(mask_key, []))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "--", label=f"{name}: {mask_key}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _thinness(mask: np.ndarray) -> float:
    """Boundary pixels per area: high for thin, bent shapes."""
    inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    edge = mask[1:-1, 1:-1] & ~inner
    return float(edge.sum()) / max(1.0, float(mask.sum()))


def mask_panel(image, labels, masks) -> np.ndarray:
    """uint8 (H, W, 3): ``image`` (float (3, H, W) in [0, 1]) with ``masks`` (bool (N, H, W) or
    MaskWindows) of ``labels`` (N,) drawn by the overlay drawer of ``refinemask predict``.

    At the image's own size (the report zooms on its own) and without boxes or tags: the
    comparison is of the masks, and their outline over a dark halo shows where each boundary is.
    """
    import torch

    from refinemask.overlay import draw_overlay

    drawn = draw_overlay(image, {"labels": torch.as_tensor(labels), "masks": masks}, (), min_side=0, labels=False)
    return drawn.permute(1, 2, 0).numpy()


def comparison_picture(runs: dict[str, Path], dataset, path: Path, num_images: int = 4, zoom: int = 3,
                       score_thresh: float = 0.5) -> Path | None:
    """Rows of [ground truth | model A | model B], each followed by a zoom on the thinnest object."""
    import torch

    from refinemask.engine.inference import detect
    from refinemask.model_files import load_model

    if not runs:
        return None
    models = {name: load_model(w) for name, w in runs.items()}
    # the validation images whose objects are thinnest
    scored = []
    for i in range(len(dataset)):
        target = dataset.load_target(i) if hasattr(dataset, "load_target") else dataset[i][1]
        masks = np.asarray(target["masks"]).astype(bool)
        if len(masks):
            thin = [(_thinness(m), j) for j, m in enumerate(masks)]
            scored.append((max(thin)[0], i, max(thin)[1]))
    scored.sort(reverse=True)
    rows = []
    for _, index, obj in scored[:num_images]:
        image, target = dataset[index]
        image_h, image_w = image.shape[-2:]
        gt = np.asarray(target["masks"]).astype(bool)
        ys, xs = np.nonzero(gt[obj])
        pad = 6
        box = (max(0, xs.min() - pad), max(0, ys.min() - pad), min(image_w, xs.max() + pad + 1), min(image_h, ys.max() + pad + 1))
        panels = [("ground truth", mask_panel(image, target["labels"], torch.from_numpy(gt)))]
        for name, model in models.items():
            out = detect(model, [image], mask_output="box")[0]
            keep = out["scores"] >= score_thresh
            panels.append((name, mask_panel(image, out["labels"][keep], out["masks"][keep].binarize(0.5))))
        tiles = []
        for title, panel in panels:
            full = Image.fromarray(panel)
            crop = full.crop(box)
            crop = crop.resize((crop.width * zoom, crop.height * zoom), Image.NEAREST)
            tile = Image.new("RGB", (full.width + crop.width + 4, max(full.height, crop.height) + 16), (255, 255, 255))
            tile.paste(full, (0, 16))
            tile.paste(crop, (full.width + 4, 16))
            ImageDraw.Draw(tile).text((2, 2), title, fill=(0, 0, 0))
            tiles.append(tile)
        width = sum(t.width for t in tiles) + 6 * (len(tiles) - 1)
        row = Image.new("RGB", (width, max(t.height for t in tiles)), (255, 255, 255))
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width + 6
        rows.append(row)
    if not rows:
        return None
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height + 6 for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 6
    sheet.save(path)
    return path


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def weights_of(output_dir: Path) -> Path | None:
    """The final weights of a run, or its newest checkpoint when it was stopped early."""
    from refinemask.engine.training_checkpoints import find_last_checkpoint

    final = output_dir / "model_final.safetensors"
    last = find_last_checkpoint(output_dir)
    # a run stopped mid-chunk (Ctrl-C) leaves a checkpoint newer than the previous chunk's weights
    if final.is_file() and (last is None or final.stat().st_mtime_ns >= last.stat().st_mtime_ns):
        return final
    return last


def unequal_training(iterations: dict[str, int]) -> str | None:
    """The line that replaces the side-by-side table when the models trained different iterations.

    ``iterations``: each model's (display name) trained iterations. None when they are equal.
    Models trained for different lengths are not compared: the longer one would win by time.
    """
    if len(set(iterations.values())) <= 1:
        return None
    trained = ", ".join(f"{name} {count}" for name, count in iterations.items())
    return (
        f"**Not a comparison**: the models trained different numbers of iterations ({trained}), "
        "so their figures are not set side by side (each is in metrics.json). Run the demo again "
        "with more --minutes, or without interrupting it."
    )


def write_report(out: Path, configs: dict, models, status: dict, interrupted: bool, elapsed_s: float,
                 iterations: dict[str, int]) -> Path:
    """``report.md`` in ``out``; ``iterations``: each model's (display name) trained iterations."""
    from refinemask.engine.data import build_dataset

    runs, metrics, histories = {}, {}, {}
    for key, _, display in models:
        weights = weights_of(out / key)
        histories[display] = loss_history(out / key) if (out / key).is_dir() else {}
        if weights is None:
            status.setdefault(key, "not trained")
            continue
        runs[display] = weights
        status.setdefault(key, "stopped early")
        print(f"[demo] evaluating {display} ({weights.name})", flush=True)
        try:
            metrics[display] = evaluate_run(configs[key], weights)
        except KeyboardInterrupt:
            status[key] += ", evaluation interrupted"
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=lambda v: None))
    curves = plot_losses(histories, out / "loss_curves.png")
    picture = None
    try:
        picture = comparison_picture(runs, build_dataset(configs[models[0][0]], "val"), out / "comparison.png")
    except KeyboardInterrupt:
        pass

    names = [display for _, _, display in models]
    lines = [
        "# refinemask demo",
        "",
        f"RefineMask against Mask R-CNN on the easy synthetic thin-structure preset, same backbone "
        f"(pretrained EfficientNet-Lite0-FPN), data, schedule shape and time budget; "
        f"{elapsed_s / 60:.1f} minutes in all{' (interrupted)' if interrupted else ''}.",
        "",
    ]
    refusal = unequal_training({n: iterations.get(n, 0) for n in names})
    if refusal:
        lines.append(refusal)
    else:
        lines += ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for iou_type, key, label in METRIC_ROWS:
            cells = [_fmt(metrics.get(n, {}).get(iou_type, {}).get(key)) for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| model | run | weights |", "|---|---|---|"]
    for key, _, display in models:
        w = runs.get(display)
        lines.append(f"| {display} | {status.get(key, '')} | {w.relative_to(out) if w else '–'} |")
    lines += [
        "",
        "Boundary AP at dilation 0.02 (the standard) is about 7 px at 256×256, wider than most thin "
        "parts, so it mostly follows mask AP; 0.008 (about 3 px) measures the boundary itself.",
        "",
    ]
    if picture:
        lines += ["![masks side by side](comparison.png)", "",
                  "Each row: ground truth, then each model's masks (score ≥ 0.5), with a zoom on the thinnest object.", ""]
    if curves:
        lines += ["![loss curves](loss_curves.png)", ""]
    if runs:
        first = next(iter(runs.values()))
        lines += ["Predict with the trained weights:", "", "```bash",
                  f"refinemask predict --weights {first} {out / 'data' / 'images'} --out {out / 'predictions'}", "```", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
