"""Large images: training on crops of a few huge scenes, then tiled against whole-image inference.

1. A large synthetic set: easy-preset scenes of ``--cell`` px (1-3 objects of about a third of
   the cell each) stitched into ``--train-images`` mosaics of ``--train-cells`` x
   ``--train-cells`` cells and ``--val-images`` of ``--val-cells`` x ``--val-cells`` (RLE
   annotations moved with :func:`refinemask.evaluation.coco.encode_mask_windows`).
2. ``quickstart_refinemask`` (256 px input) trained on the training mosaics with
   ``data.crop_size=--cell``: every sample is a window at the model's scale.
3. On the validation mosaics: whole-image inference (the model shrinks each scene to its input,
   ``detections_per_img`` raised to 1000 so that it is not the cap) against tiled inference
   (``--tile``, ``--overlap``; each tile at the model's scale): mask AP, Boundary AP and box AP,
   the time ratio and each one's peak RSS (Linux ``/proc/self/clear_refs``), in one process.

    python benchmarks/large_images.py --iters 300 --out bench-large
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROWS = (("segm", "AP"), ("segm", "AP50"), ("boundary", "AP"), ("bbox", "AP"))


def stitch(cells_json: Path, cell_images: Path, first: int, grid: int, count: int, out: Path, prefix: str):
    """``count`` mosaics of grid x grid cells taken in order from image ``first`` of ``cells_json``."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    from refinemask.data.validation import segmentation_to_rle
    from refinemask.evaluation.coco import encode_mask_windows
    from refinemask.modeling.box_masks import MaskWindows

    import torch

    data = json.loads(cells_json.read_text())
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cells = data["images"]
    images, annotations = [], []
    out.mkdir(parents=True, exist_ok=True)
    for m in range(count):
        size = grid * cells[0]["width"]
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        image_id = m + 1
        for k in range(grid * grid):
            cell = cells[first + m * grid * grid + k]
            top, left = (k // grid) * cell["height"], (k % grid) * cell["width"]
            canvas[top : top + cell["height"], left : left + cell["width"]] = np.asarray(
                Image.open(cell_images / cell["file_name"]).convert("RGB"))
            for a in by_image.get(cell["id"], []):
                cell_rle = segmentation_to_rle(a["segmentation"], cell["height"], cell["width"])
                if isinstance(cell_rle["counts"], str):
                    cell_rle = {**cell_rle, "counts": cell_rle["counts"].encode()}
                mask = torch.from_numpy(mask_utils.decode(cell_rle).astype(bool))
                rle = encode_mask_windows(MaskWindows((size, size), [(top, left)], [mask]))[0]
                x, y, w, h = a["bbox"]
                annotations.append({**a, "id": len(annotations) + 1, "image_id": image_id, "segmentation": rle,
                                    "bbox": [x + left, y + top, w, h]})
        name = f"{prefix}_{m:03d}.png"
        Image.fromarray(canvas).save(out / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
    path = out / f"{prefix}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": data["categories"]}))
    return path


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(label, predict, images, ids, val_json, label_to_category):
    from refinemask.evaluation import evaluate_coco, predictions_to_coco_results

    Path("/proc/self/clear_refs").write_text("5")
    started = time.perf_counter()
    results = []
    for image, image_id in zip(images, ids):
        results += predictions_to_coco_results([predict(image)], [image_id], label_to_category)
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    metrics = evaluate_coco(str(val_json), results, ["bbox", "segm", "boundary"], [0.02]) if results else {}
    row = {"inference": label, "seconds": seconds, "peak_rss_bytes": peak, "detections": len(results)}
    for kind, name in ROWS:
        row[f"{kind}.{name}"] = metrics.get(kind, {}).get(name, 0.0)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", type=int, default=256, help="side of one synthetic scene (the model's scale)")
    parser.add_argument("--train-images", type=int, default=4)
    parser.add_argument("--train-cells", type=int, default=8, help="cells per side of a training mosaic")
    parser.add_argument("--val-images", type=int, default=1)
    parser.add_argument("--val-cells", type=int, default=16, help="cells per side of a validation mosaic")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="training overrides")
    parser.add_argument("--out", default="bench-large")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    out = Path(args.out)

    import torch

    from refinemask.data.images import load_image
    from refinemask.data.synthetic import make_synthetic
    from refinemask.engine.predict import Predictor
    from refinemask.model_files import load_model

    train_cells, val_cells = args.train_images * args.train_cells**2, args.val_images * args.val_cells**2
    data = out / "data"
    if not (data / "val.json").is_file():
        paths = make_synthetic(out / "cells", train_cells, size=args.cell, seed=args.seed, preset="easy",
                               num_val_images=val_cells)
        stitch(paths.train, paths.images, 0, args.train_cells, args.train_images, data, "train")
        stitch(paths.val, paths.images, 0, args.val_cells, args.val_images, data, "val")
    train_json, val_json = data / "train.json", data / "val.json"
    run_dir = out / "crop_trained"
    if not (run_dir / "model_final.safetensors").is_file():
        from common import run

        started = time.perf_counter()
        run("quickstart_refinemask", run_dir, [
            "data.synthetic=null", "model.num_classes=null", f"data.train_annotations={train_json}",
            f"data.train_images={data}", f"data.val_annotations={val_json}", f"data.val_images={data}",
            f"data.crop_size={args.cell}", f"solver.max_iters={args.iters}",
            f"solver.warmup_iters={max(1, args.iters // 10)}", f"train.checkpoint_every={args.iters}",
            "train.eval_at_end=false", f"train.seed={args.seed}", *args.set,
        ])
        print(f"trained {args.iters} iterations on crops in {time.perf_counter() - started:.0f} s", flush=True)

    model = load_model(run_dir / "model_final.safetensors")
    val = json.loads(val_json.read_text())
    images = [load_image(data / im["file_name"]) for im in val["images"]]
    ids = [im["id"] for im in val["images"]]
    predictor = Predictor(model)
    heads = model.roi_heads
    tiled = measure(f"tiled {args.tile} px, overlap {args.overlap:g}",
                    lambda im: predictor(im, masks="box", tile=args.tile, overlap=args.overlap),
                    images, ids, val_json, predictor.label_to_category)
    # whole images get as many detections as the scene holds objects
    heads.detections_per_img = 1000
    model.rpn._post_nms_top_n["testing"] = max(model.rpn._post_nms_top_n["testing"], 2000)
    model.rpn._pre_nms_top_n["testing"] = max(model.rpn._pre_nms_top_n["testing"], 2000)
    whole = measure("whole image, shrunk to the model's input", lambda im: predictor(im, masks="box"),
                    images, ids, val_json, predictor.label_to_category)
    rows = [whole, tiled]
    size = images[0].shape[-1]
    objects = len(val["annotations"])
    print()
    print(f"{len(images)} validation scene(s) of {size}x{size} px, {objects} objects; model input {model.config.max_size} px; "
          f"trained {args.iters} iterations on {args.train_images} mosaics of {args.train_cells * args.cell} px "
          f"with data.crop_size={args.cell}")
    print()
    print("| inference | mask AP | mask AP50 | Boundary AP | box AP | detections | time (x whole) | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['inference']} | {r['segm.AP']:.3f} | {r['segm.AP50']:.3f} | {r['boundary.AP']:.3f} | "
              f"{r['bbox.AP']:.3f} | {r['detections']} | {r['seconds'] / whole['seconds']:.1f} | {r['peak_rss_bytes'] / 1e9:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
