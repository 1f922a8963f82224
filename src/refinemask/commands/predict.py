"""``refinemask predict --weights W IMAGE_OR_DIR ... --out DIR``: masks on your images."""
from __future__ import annotations

import argparse

EPILOG = """\
writes:
  DIR/<image name>.png   the image with the predicted masks, boxes, class names and scores
  DIR/results.json       COCO results: image_id, category_id, bbox (XYWH), score,
                         segmentation (RLE) and file_name, one entry per detection

Image ids are 1..N in the order the images are listed (folders sorted by name), or, with
--annotations, those of the images of that COCO json (matched by file name), so that
`refinemask eval --annotations GT.json --predictions DIR/results.json` scores them.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    parser.add_argument(
        "--weights", required=True, metavar="W",
        help="model file: model_final.safetensors of a training run, a converted model, or a checkpoint_*.pth",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--score-thresh", type=float, default=0.5, metavar="S",
        help="keep detections scoring at least S (default 0.5)",
    )
    parser.add_argument(
        "--mask-thresh", type=float, default=0.5, metavar="P",
        help="mask probability at which a pixel belongs to the object (default 0.5)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--annotations", metavar="GT.json",
        help="take image ids from this COCO json (matched by file name)",
    )
    parser.add_argument("--no-overlays", action="store_true", help="write results.json only")
    # images may come before and after options; plain parse_args stops at the first option


def run(args: argparse.Namespace) -> int:
    import torch

    from refinemask.engine.predict import Predictor, predict_files
    from refinemask.errors import RefineMaskError

    if not 0.0 <= args.score_thresh <= 1.0:
        raise RefineMaskError(f"--score-thresh must be between 0 and 1, got {args.score_thresh}")
    if not 0.0 < args.mask_thresh < 1.0:
        raise RefineMaskError(f"--mask-thresh must be between 0 and 1 (exclusive), got {args.mask_thresh}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RefineMaskError("--device cuda: no CUDA device is available; use --device cpu")
    predictor = Predictor(args.weights, device=args.device, score_thresh=args.score_thresh, mask_threshold=args.mask_thresh)
    results = predict_files(predictor, args.inputs, args.out, args.annotations, overlays=not args.no_overlays)
    print(f"results: {results}")
    return 0
