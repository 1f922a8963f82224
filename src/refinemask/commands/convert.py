"""``refinemask convert``: an official RefineMask checkpoint (mmdetection v2.3) -> a model file.

    refinemask convert r50-refinemask-1x.pth r50-coco-1x.safetensors

writes the weights (``.safetensors``, with the config and category ids in its header) and a
readable ``r50-coco-1x.yaml`` beside it; ``refinemask.load_model("r50-coco-1x.safetensors")``
returns the model ready to predict. The checkpoint is read with ``torch.load(weights_only=True)``:
a file carrying pickled code is refused and nothing in it runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
What is read from the weights: the number of classes (80 = COCO, 1203 = LVIS v1, 8 = Cityscapes),
ResNet-50 or -101, and LVIS's class-agnostic last mask stage. The data set sets what the
weights do not hold: test scale (1333x800; Cityscapes 2048x1024), score threshold (0.05;
LVIS 1e-4), detections per image (100; LVIS 300) and the category ids and names.
See docs/official-checkpoints.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("checkpoint", metavar="OFFICIAL.pth", type=Path, help="official mmdetection checkpoint")
    parser.add_argument(
        "out", metavar="OUT", type=Path,
        help="output model file: .safetensors (default; added when OUT has no suffix) or .pth",
    )
    parser.add_argument(
        "--dataset", choices=("coco", "lvis", "cityscapes", "custom"), default=None,
        help="data set of the checkpoint (default: from the number of classes)",
    )
    parser.add_argument(
        "--categories", metavar="ANNOTATIONS.json", type=Path, default=None,
        help="take category ids and names from this COCO/LVIS-format json (e.g. LVIS names)",
    )


def run(args: argparse.Namespace) -> int:
    from refinemask.convert.files import convert_checkpoint

    result = convert_checkpoint(args.checkpoint, args.out, dataset=args.dataset, categories=args.categories)
    cfg = result.config
    print(f"{args.checkpoint}: {result.official.describe()}")
    print(
        f"test settings: short side {cfg.min_size[-1]}, long side <= {cfg.max_size}, score > {cfg.box_score_thresh:g}, "
        f"{cfg.detections_per_img} detections per image"
    )
    print(f"wrote {result.path} (+ {result.path.with_suffix('.yaml').name})")
    return 0
