"""``refinemask predict --weights W IMAGE_OR_DIR ... --out DIR``: masks on your images.

With ``--boxes BOXES.json`` (a COCO results file from any detector) the model segments those
boxes instead of detecting its own (:mod:`refinemask.engine.box_results`).
"""
from __future__ import annotations

import argparse

EPILOG = """\
writes:
  DIR/<image name>.png   the image with the predicted masks (filled and outlined), boxes, class
                         names and scores; an image smaller than 768 px is enlarged by a whole
                         factor (pixels kept sharp) so that the labels read
  DIR/results.json       COCO results: image_id, category_id, bbox (XYWH), score,
                         segmentation (RLE), file_name and category_name, one entry per detection

Image ids are 1..N in the order the images are listed (folders sorted by name), or, with
--annotations, those of the images of that COCO json (matched by file name), so that
`refinemask eval --annotations GT.json --predictions DIR/results.json` scores them.

--boxes BOXES.json: masks for another detector's boxes. BOXES.json is a COCO results file
(image_id, category_id, bbox as [x, y, w, h], score); DIR/results.json is the same list with a
segmentation added to every entry (no score threshold applies). An entry's image is the one
its file_name names, else the one with its image_id: ids from --annotations (by file name),
else the numbers of numeric file names (000000000139.jpg is 139), else 1..N as above. Boxes of
an image that is not among the inputs are an error. The category ids must be the model's;
--classify lets the model's box head choose each box's class instead.

An image with no detection scoring at least --score-thresh is named on the console, with the
score of its best box and the --score-thresh that would show it. A folder without images among
several inputs is skipped with a line. Dense images (hundreds of nuclei) read better with
--no-labels (no boxes, names, scores) and --outlines (no fill).
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
    parser.add_argument(
        "--no-labels", action="store_true",
        help="overlays without boxes, class names and scores (dense images: hundreds of nuclei)",
    )
    parser.add_argument("--outlines", action="store_true", help="overlays with mask outlines only, no fill")
    parser.add_argument(
        "--boxes", metavar="BOXES.json",
        help="segment the boxes of this COCO results file (another detector's) instead of detecting",
    )
    parser.add_argument(
        "--classify", action="store_true",
        help="with --boxes: ignore the file's category ids; the model's box head classifies each box",
    )
    parser.add_argument(
        "--tile", type=int, metavar="SIZE",
        help="predict large images in SIZE x SIZE tiles, each at the model's own scale; objects cut by "
             "seams are merged (choose SIZE near the model's input size, e.g. its model.min_size)",
    )
    parser.add_argument(
        "--overlap", type=float, default=0.2, metavar="FRACTION",
        help="with --tile: how much neighbouring tiles overlap, a fraction of SIZE (default 0.2)",
    )
    # images may come before and after options; plain parse_args stops at the first option


def run(args: argparse.Namespace) -> int:
    import torch

    from refinemask.engine.predict import Predictor
    from refinemask.errors import RefineMaskError
    from refinemask.predict_files import predict_files

    if not 0.0 <= args.score_thresh <= 1.0:
        raise RefineMaskError(f"--score-thresh must be between 0 and 1, got {args.score_thresh}")
    if not 0.0 < args.mask_thresh < 1.0:
        raise RefineMaskError(f"--mask-thresh must be between 0 and 1 (exclusive), got {args.mask_thresh}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RefineMaskError("--device cuda: no CUDA device is available; use --device cpu")
    if args.tile is not None:
        from refinemask.engine.tiling import check_tiling

        check_tiling(args.tile, args.overlap)
        if args.boxes is not None:
            raise RefineMaskError("--tile is for the model's own detections, not with --boxes")
    if args.classify and args.boxes is None:
        raise RefineMaskError("--classify is for --boxes BOXES.json")
    if args.boxes is not None:
        from pathlib import Path

        if not Path(args.boxes).is_file():
            raise RefineMaskError(f"boxes file not found: {args.boxes}")
    predictor = Predictor(args.weights, device=args.device, score_thresh=args.score_thresh, mask_threshold=args.mask_thresh)
    if args.boxes is not None:
        from refinemask.engine.box_results import segment_box_results

        results = segment_box_results(
            predictor, args.inputs, args.boxes, args.out, args.annotations,
            classify=args.classify, overlays=not args.no_overlays,
        )
        print(f"results: {results}")
        return 0
    results = predict_files(
        predictor, args.inputs, args.out, args.annotations, overlays=not args.no_overlays,
        overlay_labels=not args.no_labels, overlay_fill=not args.outlines,
        tile=args.tile, overlap=args.overlap,
    )
    print(f"results: {results}")
    return 0
