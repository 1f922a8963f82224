"""``refinemask demo``: see :mod:`refinemask.demo`."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Generate the built-in synthetic thin-structure data, train RefineMask and a Mask R-CNN "
        "baseline with the same backbone, data and time budget, evaluate both (mask AP, AP50, AP75, "
        "Boundary AP) and write a report with pictures. No downloads."
    )
    parser.add_argument("--minutes", type=float, default=14.0, help="total time budget (default 14)")
    parser.add_argument("--out", default="refinemask-demo", help="report folder (default ./refinemask-demo)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of data and training")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides applied to both models, e.g. data.synthetic.num_images=100")


def run(args) -> int:
    from refinemask.demo import run_demo

    run_demo(args.minutes, args.out, args.device, args.seed, args.overrides)
    return 0
