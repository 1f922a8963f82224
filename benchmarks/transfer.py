"""Fine-tuning from a pretrained detector against training from the ImageNet backbone alone.

1. Pretrain RefineMask and Mask R-CNN (the ``quickstart_*`` recipes) on the easy synthetic
   preset (5 classes: stroke, star, comb, ring, tailed blob).
2. Make another data set with other classes and other shapes (common.make_transfer_set: cross, crescent,
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

from common import ROWS, make_transfer_set, run


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
