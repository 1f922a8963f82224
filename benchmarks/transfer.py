"""Fine-tuning from a pretrained detector against training from the ImageNet backbone alone.

1. Pretrain RefineMask and Mask R-CNN (the ``quickstart_*`` recipes) on the easy synthetic
   preset (5 classes: stroke, star, comb, ring, tailed blob).
2. Make another data set with other classes and other shapes (written here: cross, crescent,
   triangle, arrow; 4 classes), in COCO format with RLE masks.
3. On it, train RefineMask for each budget three ways: from the ImageNet backbone alone (the
   quickstart's EfficientNet-Lite0), fine-tuned from the pretrained RefineMask, and fine-tuned
   from the pretrained Mask R-CNN (detector loaded, RefineMask head new), all through
   ``train.init_weights`` with ``model.num_classes`` left out (taken from the annotations).

    python benchmarks/transfer.py --pretrain-iters 300 --budgets 50 150 --out bench-transfer
    # quicker: 128 px images everywhere
    python benchmarks/transfer.py --pretrain-iters 200 --budgets 40 120 --size 128 --pretrain-size 128 \
        --set model.min_size=[128] model.max_size=128 --out bench-transfer-128
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROWS = (("segm", "AP"), ("boundary", "AP"), ("boundary@0.008", "AP"), ("bbox", "AP"))
CATEGORIES = ("cross", "crescent", "triangle", "arrow")


def _shape(draw, kind: str, cx: float, cy: float, r: float, angle: float, rng) -> None:
    """Draw one filled shape of radius ~r at (cx, cy) into a PIL ImageDraw of a mode-L mask."""
    def rotated(points):
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if kind == "cross":
        w = r * rng.uniform(0.18, 0.3)
        arm = [(-r, -w), (r, -w), (r, w), (-r, w)]
        draw.polygon(rotated(arm), fill=1)
        draw.polygon(rotated([(y, x) for x, y in arm]), fill=1)
    elif kind == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        shift = r * rng.uniform(0.35, 0.6)
        ox, oy = cx + shift * np.cos(angle), cy + shift * np.sin(angle)
        draw.ellipse([ox - r, oy - r, ox + r, oy + r], fill=0)
    elif kind == "triangle":
        draw.polygon(rotated([(r * np.cos(a), r * np.sin(a)) for a in (0, 2.1, 4.2)]), fill=1)
    else:  # arrow: a shaft and a head
        w = r * 0.15
        draw.polygon(rotated([(-r, -w), (0.3 * r, -w), (0.3 * r, -0.5 * r), (r, 0), (0.3 * r, 0.5 * r),
                              (0.3 * r, w), (-r, w)]), fill=1)


def make_transfer_set(root: Path, num_train: int, num_val: int, size: int, seed: int) -> tuple[Path, Path, Path]:
    """(train.json, val.json, images/) of the shapes above, 1-3 objects per image."""
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": 11 + 10 * i, "name": name} for i, name in enumerate(CATEGORIES)]  # ids with gaps
    rng = np.random.default_rng(seed)
    paths = []
    for split, count in (("train", num_train), ("val", num_val)):
        images, annotations = [], []
        for index in range(count):
            background = rng.uniform(0.2, 0.8, 3)
            canvas = np.ones((size, size, 3)) * background + rng.normal(0, 0.04, (size, size, 3))
            owner = np.zeros((size, size), dtype=np.int32)
            kinds = []
            for n in range(int(rng.integers(1, 4))):
                kind = int(rng.integers(len(CATEGORIES)))
                mask_image = Image.new("L", (size, size), 0)
                r = size * rng.uniform(0.12, 0.28)
                _shape(ImageDraw.Draw(mask_image), CATEGORIES[kind], *rng.uniform(r, size - r, 2), r,
                       rng.uniform(0, 2 * np.pi), rng)
                mask = np.asarray(mask_image) > 0
                colour = (background + rng.choice([-1, 1], 3) * rng.uniform(0.25, 0.45, 3)).clip(0, 1)
                canvas[mask] = colour
                owner[mask] = n + 1
                kinds.append(kind)
            name = f"{split}_{index:05d}.png"
            Image.fromarray((canvas.clip(0, 1) * 255).astype(np.uint8)).save(images_dir / name)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for n, kind in enumerate(kinds):
                visible = np.asfortranarray((owner == n + 1).astype(np.uint8))
                if visible.sum() < 30:
                    continue
                rle = mask_utils.encode(visible)
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": categories[kind]["id"],
                    "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")},
                    "bbox": [x, y, w, h], "area": float(visible.sum()), "iscrowd": 0,
                })
        path = root / f"{split}.json"
        path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        paths.append(path)
    return paths[0], paths[1], images_dir


def run(config_name: str, out: Path, overrides: list[str]) -> dict:
    from refinemask.config import load_config
    from refinemask.engine.train import train

    config = load_config(config_name, [f"train.output_dir={out}", "train.progress_bar=false", *overrides])
    train(config)
    metrics = out / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain-iters", type=int, default=300)
    parser.add_argument("--pretrain-images", type=int, default=200, help="easy-preset training images")
    parser.add_argument("--pretrain-size", type=int, default=256, help="easy-preset image size")
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 150])
    parser.add_argument("--images", type=int, default=120, help="training images of the new set")
    parser.add_argument("--val-images", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    parser.add_argument("--out", default="bench-transfer")
    args = parser.parse_args(argv)
    out = Path(args.out)

    common = ["train.eval_at_end=true", f"train.seed={args.seed}", *args.set]
    pretrained = {}
    for key, config_name in (("refinemask", "quickstart_refinemask"), ("maskrcnn", "quickstart_maskrcnn")):
        run_dir = out / f"pretrain_{key}"
        if not (run_dir / "model_final.safetensors").is_file():
            run(config_name, run_dir, [f"solver.max_iters={args.pretrain_iters}", f"data.synthetic.root={out / 'easy'}",
                                       f"data.synthetic.num_images={args.pretrain_images}",
                                       f"data.synthetic.size={args.pretrain_size}",
                                       f"train.checkpoint_every={args.pretrain_iters}", "train.eval_at_end=false",
                                       f"train.seed={args.seed}", *args.set])
        pretrained[key] = run_dir / "model_final.safetensors"

    train_json, val_json, images = make_transfer_set(out / "transfer_data", args.images, args.val_images, args.size, args.seed)
    data = ["data.synthetic=null", "model.num_classes=null", f"data.train_annotations={train_json}",
            f"data.val_annotations={val_json}", f"data.train_images={images}", f"data.val_images={images}"]
    starts = (
        ("ImageNet backbone only", None),
        ("fine-tuned from RefineMask", pretrained["refinemask"]),
        ("fine-tuned from Mask R-CNN (new head)", pretrained["maskrcnn"]),
    )
    table = []
    for budget in args.budgets:
        for label, weights in starts:
            init = [f"train.init_weights={weights}"] if weights else []
            metrics = run("quickstart_refinemask", out / f"b{budget}_{len(table)}", [
                *data, *common, *init, f"solver.max_iters={budget}", f"solver.warmup_iters={max(1, budget // 10)}",
                f"train.checkpoint_every={budget}",
            ])
            row = {"budget": budget, "start": label, **{f"{a}.{b}": metrics[a][b] for a, b in ROWS}}
            table.append(row)
            print(json.dumps(row), flush=True)

    print()
    print("| iterations | start | mask AP | Boundary AP (0.02) | Boundary AP (0.008) | box AP |")
    print("|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row['budget']} | {row['start']} | " + " | ".join(f"{row[f'{a}.{b}']:.3f}" for a, b in ROWS) + " |")
    (out / "transfer.json").write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
