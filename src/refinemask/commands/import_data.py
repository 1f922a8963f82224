"""`refinemask import FORMAT SRC OUT_DIR`: turn another tool's annotations into COCO json.

Formats, layouts and what becomes what: :mod:`refinemask.data.importers`. The command prints
the files written, their counts, what was left out, the image folder the file names are
relative to, and the ``check-data`` command to run next.
"""
from __future__ import annotations

import argparse
from pathlib import Path

FORMAT_HELP = """\
formats (SRC):
  yolo          Ultralytics / Roboflow data.yaml with polygon (or box) txt labels
  labelme       a folder of labelme .json files (polygons, rectangles, circles, masks)
  voc           a Pascal VOC root with SegmentationObject + SegmentationClass PNGs
  cvat          CVAT for images 1.1 annotations.xml (polygons, boxes, masks, ellipses)
  label-images  a folder of images and instance label images (images/ + masks/, or
                NAME + NAME_masks), 8/16/32-bit PNG or TIFF, as StarDist and Cellpose write

Boxes without a mask become box-only annotations: box targets, ignored for masks.
Image files are not copied: file names are relative to the image folder printed.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from refinemask.data.importers import FORMATS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = FORMAT_HELP
    parser.add_argument("format", choices=FORMATS, metavar="FORMAT", help=", ".join(FORMATS))
    parser.add_argument("source", type=Path, metavar="SRC", help="the export to read (file or folder)")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the COCO json files (created)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.0, metavar="F",
        help="split a source without splits: F of the images (seeded) to val.json, the rest to train.json",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --val-fraction split (default 0)")
    parser.add_argument("--category", default="object", help="label-images: the category name (default object)")
    parser.add_argument(
        "--channel", type=int, default=None, metavar="K",
        help="label-images: the plane of multi-channel label files to take (0-based)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from refinemask.data.importers import import_dataset

    options = {"category": args.category, "channel": args.channel} if args.format == "label-images" else {}
    written, imported = import_dataset(
        args.format, args.source, args.out_dir, val_fraction=args.val_fraction, seed=args.seed, **options
    )
    for path in written.values():
        data = json.loads(path.read_text())
        box_only = sum(1 for a in data["annotations"] if not a["segmentation"])
        extra = f" ({box_only} box-only)" if box_only else ""
        print(
            f"wrote {path}: {len(data['images'])} images, {len(data['annotations'])} annotations{extra}, "
            f"{len(data['categories'])} categories"
        )
    left_out = imported.builder.left_out
    if left_out:
        print("left out: " + ", ".join(f"{n} {what}" for what, n in sorted(left_out.items())))
    root = imported.image_root
    print(f"image file names are relative to {root}")
    first = next(iter(written.values()))
    print(f"next: refinemask check-data {first} --images {root}")
    return 0
