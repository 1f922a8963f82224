"""``refinemask train CONFIG [key=value ...] [--resume]``: train a model from a YAML config."""
from __future__ import annotations

import argparse

EPILOG = """\
CONFIG is a YAML file or the name of a bundled config:
{names}

Overrides set any config value, e.g.
  refinemask train coco_r50_refinemask_1x data.train_images=/data/coco/train2017 \\
      train.batch_size=2 solver.base_lr=0.02 model.backbone=resnet101 train.output_dir=runs/r101

Sections: model (architecture, image sizes, RoI counts), data (paths, sampling), solver
(optimiser, learning rate, schedule), train (output, batch, devices, checkpoints, logging),
eval (metrics). An unknown key is an error naming the nearest valid one.

The learning rate solver.base_lr is for a total batch of solver.reference_batch_size images; it
is scaled linearly to train.batch_size x processes x train.grad_accum_steps.

Several GPUs or machines: start one process per device with torchrun, e.g.
  torchrun --nproc_per_node=8 -m refinemask.cli train coco_r50_refinemask_1x

Writes to train.output_dir: config.yaml, checkpoint_*.pth (every train.checkpoint_every
iterations, at the end and on Ctrl-C or SIGTERM; status 130 after Ctrl-C, 0 after SIGTERM),
model_final.safetensors, metrics.json, log.txt and
tensorboard/. --resume continues exactly where the last checkpoint left off.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from refinemask.config import bundled_config_names

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    names = bundled_config_names()
    parser.epilog = EPILOG.format(names="\n".join(f"  {name}" for name in names) or "  (none)")
    parser.add_argument("config", metavar="CONFIG", help="YAML config file or bundled config name")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in train.output_dir (same as train.resume=true)",
    )
    # overrides may come after options (`train CONFIG --resume a.b=1`); plain parse_args would
    # stop collecting positionals at the first option


def run(args: argparse.Namespace) -> int:
    import sys

    from refinemask.engine.stopping import TrainingStopped
    from refinemask.engine.train import train_from_config

    try:
        train_from_config(args.config, list(args.overrides), resume=args.resume)  # its log names the final weights
    except TrainingStopped as stopped:  # SIGTERM (preemption): a clean stop, --resume goes on
        print(f"refinemask train: {stopped}; continue with --resume", file=sys.stderr)
    return 0
