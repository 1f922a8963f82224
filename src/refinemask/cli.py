"""The ``refinemask`` command: one entry point, one verb per job.

Each verb lives in ``refinemask.commands.<verb>`` and provides two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their verb
runs, so ``refinemask --help`` stays fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from refinemask.errors import RefineMaskError

# verb -> (module under refinemask.commands, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "train RefineMask and Mask R-CNN on built-in synthetic data and compare them"),
    "train": ("train", "train a model from a YAML config (key=value overrides)"),
    "eval": ("eval", "evaluate a model, or score a saved COCO results file"),
    "predict": ("predict", "predict masks on images or folders; write overlays and COCO json"),
    "convert": ("convert", "convert an official mmdetection RefineMask checkpoint"),
    "export": ("export", "export a trained model (ONNX)"),
    "make-synthetic": ("make_synthetic", "write a synthetic thin-structure COCO dataset"),
    "check-data": ("check_data", "validate a COCO-format annotation file and its images"),
    "import": ("import_data", "convert YOLO, labelme, VOC, CVAT or label-image annotations to COCO json"),
    "serve": ("serve", "a local web page to upload an image and see the masks"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refinemask",
        description="RefineMask instance segmentation on PyTorch + torchvision.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_, help_text) in VERBS.items():
        # add_help=False: the verb's own parser (built on demand) provides --help
        sub.add_parser(verb, help=help_text, add_help=False)
    return parser


def _verb_parser(verb: str) -> argparse.ArgumentParser:
    module_name, help_text = VERBS[verb]
    module = importlib.import_module(f"refinemask.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"refinemask {verb}", description=help_text)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    verb = argv[0]
    if verb not in VERBS:
        top.error(f"unknown verb {verb!r}; choose one of: {', '.join(VERBS)}")
    try:
        parser = _verb_parser(verb)
        # intermixed: key=value overrides may stand before or after options
        args = parser.parse_intermixed_args(argv[1:])
        return int(args._run(args) or 0)
    except RefineMaskError as err:
        print(f"refinemask {verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"refinemask {verb}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            f"refinemask {verb}: error: out of memory; lower the image size (model.max_size, "
            "model.min_size), the batch size (train.batch_size) or the sampled RoIs "
            "(model.box_batch_size_per_image)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
