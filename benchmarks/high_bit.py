"""Faint 16-bit images: training with each ``model.high_bit_scaling``.

The data set of ``benchmarks/transfer.py`` (cross, crescent, triangle, arrow) turned into 16-bit
grayscale files whose values span 0-235, as a 12-bit camera or a faint microscopy signal gives.
RefineMask (the ``quickstart_refinemask`` recipe, ImageNet backbone) trains the same iterations
with each scaling; the table gives mask AP, Boundary AP and box AP on the validation split.

    python benchmarks/high_bit.py --iters 100 --size 128 --set model.min_size=[128] model.max_size=128
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import ROWS, make_transfer_set, run


def to_faint_16_bit(images: Path, top: int = 235) -> None:
    """Rewrite every PNG of ``images`` as 16-bit grayscale with values 0..top (in place)."""
    from PIL import Image

    for path in sorted(images.glob("*.png")):
        gray = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        Image.fromarray(np.round(gray / 255.0 * top).astype(np.uint16)).save(path)  # mode I;16


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--val-images", type=int, default=30)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scalings", nargs="+", default=["full", "percentiles", "minmax"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    parser.add_argument("--out", default="bench-high-bit")
    args = parser.parse_args(argv)
    out = Path(args.out)

    train_json, val_json, images = make_transfer_set(out / "data", args.images, args.val_images, args.size, args.seed)
    to_faint_16_bit(images)
    data = ["data.synthetic=null", "model.num_classes=null", f"data.train_annotations={train_json}",
            f"data.val_annotations={val_json}", f"data.train_images={images}", f"data.val_images={images}"]
    table = []
    for scaling in args.scalings:
        metrics = run("quickstart_refinemask", out / scaling, [
            *data, f"model.high_bit_scaling={scaling}", "train.eval_at_end=true", f"train.seed={args.seed}",
            f"solver.max_iters={args.iters}", f"solver.warmup_iters={max(1, args.iters // 10)}",
            f"train.checkpoint_every={args.iters}", *args.set,
        ])
        row = {"scaling": scaling, **{f"{a}.{b}": metrics[a][b] for a, b in ROWS}}
        table.append(row)
        print(json.dumps(row), flush=True)

    print()
    print("| model.high_bit_scaling | mask AP | Boundary AP (0.02) | Boundary AP (0.008) | box AP |")
    print("|---|---|---|---|---|")
    for row in table:
        print(f"| {row['scaling']} | " + " | ".join(f"{row[f'{a}.{b}']:.3f}" for a, b in ROWS) + " |")
    (out / "high_bit.json").write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
