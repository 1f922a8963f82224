"""``refinemask make-synthetic``: write the built-in synthetic thin-structure data set."""

from __future__ import annotations

import argparse
from pathlib import Path

LAYOUT = """\
files written:
  OUT/images/*.png        the images (train_000000.png ..., val_000000.png ...)
  OUT/annotations.json    COCO annotations, when --val-images is 0 (the default)
  OUT/train.json          COCO annotations of the --images training images and
  OUT/val.json            of the --val-images validation images, when --val-images > 0

Categories: stroke, star, comb, ring, tailed_blob. Each annotation is the visible part of an
object: polygons when nothing covers it, compressed RLE otherwise. The same --seed writes
byte-identical files.

presets:
  easy   1-3 large objects, strong contrast, mild textures, 2-4 px thin parts
         (learnable on a CPU in minutes)
  hard   3-8 objects, 1-2 px thin parts, strong textures, weak contrast, more occlusion
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = LAYOUT
    parser.add_argument("out", metavar="OUT", type=Path, help="output folder (created if missing)")
    parser.add_argument(
        "--images",
        metavar="N",
        type=int,
        default=100,
        help="number of (training) images (default 100)",
    )
    parser.add_argument(
        "--size",
        metavar="S",
        type=int,
        default=256,
        help="side of the square images in pixels, 64-4096 (default 256)",
    )
    parser.add_argument("--seed", metavar="K", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--preset", choices=("easy", "hard"), default="hard", help="difficulty (default hard)"
    )
    parser.add_argument(
        "--val-images",
        metavar="M",
        type=int,
        default=0,
        help="number of validation images; writes train.json + val.json (default 0)",
    )


def run(args: argparse.Namespace) -> int:
    from refinemask.data.synthetic import make_synthetic

    paths = make_synthetic(
        args.out,
        num_images=args.images,
        size=args.size,
        seed=args.seed,
        preset=args.preset,
        num_val_images=args.val_images,
    )
    written = [paths.train] if paths.val is None else [paths.train, paths.val]
    print(
        f"wrote {args.images + args.val_images} images to {paths.images} and annotations to "
        + ", ".join(str(path) for path in written)
    )
    return 0
