"""Mask quality of the RefineMask heads against Mask R-CNN with an equal, fixed training budget.

RefineMask, its faster-better head (``simple_refinemask``) and Mask R-CNN train the same number
of iterations on a synthetic preset (*hard* by default; ``--preset easy`` is the demo's data)
with the same backbone (pretrained EfficientNet-Lite0-FPN), data and schedule, through the normal engine
(the bundled ``quickstart_*`` configs with overrides). For each seed it reports mask AP, AP75
and Boundary AP at dilation 0.02 and 0.008, and beside the models the ceilings of the two mask
resolutions: the ground-truth masks squeezed through a 28×28 and a 112×112 grid (the per-RoI
targets the heads are trained on) and pasted back. A second row per model scores its masks on
the ground-truth boxes and labels (``refinemask eval --gt-boxes``): the masks apart from the boxes.

    python benchmarks/quality.py --iters 300 --seeds 0 1 --out bench-quality
    python benchmarks/quality.py --preset easy --heads simple_refinemask maskrcnn
    python benchmarks/quality.py --ceilings-only
    python benchmarks/quality.py --preset easy --heads refinemask maskrcnn refinemask_mask_grad_stopped refinemask_mask_losses_scaled

The ``refinemask_mask_*`` entries are the study of RefineMask's box AP (docs/benchmarks.md,
"RefineMask's boxes"): the same RefineMask with its mask losses' gradient stopped at the FPN
(``model.mask_loss_to_features=false``), or with every mask-loss weight scaled by 0.4 (the BAR
stage weights then sum to 1.0, as Mask R-CNN's one mask loss). Not official settings.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROWS = (("segm", "AP"), ("segm", "AP75"), ("boundary", "AP"), ("boundary@0.008", "AP"), ("bbox", "AP"))
# --heads name -> (bundled config, name in the table)
HEADS = {
    "refinemask": ("quickstart_refinemask", "RefineMask"),
    "simple_refinemask": ("quickstart_simple_refinemask", "RefineMask faster-better"),
    "refinemask_narrow": ("quickstart_refinemask_narrow", "RefineMask narrow (not official)"),
    "simple_refinemask_narrow": ("quickstart_simple_refinemask_narrow", "faster-better narrow (not official)"),
    "maskrcnn": ("quickstart_maskrcnn", "Mask R-CNN"),
}
# the box-AP study: --heads name -> (bundled config, name in the table, overrides)
STUDY = {
    "refinemask_mask_grad_stopped": ("quickstart_refinemask", "RefineMask, mask losses stopped at the FPN",
                                     ["model.mask_loss_to_features=false"]),
    "refinemask_mask_losses_scaled": ("quickstart_refinemask", "RefineMask, mask losses x0.4",
                                      ["model.bar_stage_weights=[0.1,0.2,0.3,0.4]", "model.semantic_loss_weight=0.4"]),
}


def ceiling_results(dataset, size: int) -> list[dict]:
    """COCO results of the ground truth squeezed through a size×size grid on its own box."""
    from refinemask.evaluation import predictions_to_coco_results
    from refinemask.modeling.ops import paste_masks
    from refinemask.modeling.targets import stage_mask_targets

    results = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        h, w = image.shape[-2:]
        boxes = torch.as_tensor(target["boxes"]).float()
        if boxes.shape[0] == 0:
            continue
        masks = torch.as_tensor(target["masks"])
        squeezed = stage_mask_targets(boxes, torch.arange(len(boxes)), {**target, "masks": masks}, (size,), (h, w))[0]
        pasted = paste_masks(squeezed[:, None], boxes, h, w)
        output = {"boxes": boxes, "labels": torch.as_tensor(target["labels"]), "scores": torch.ones(len(boxes)), "masks": pasted}
        results += predictions_to_coco_results([output], [int(target["image_id"])], dataset.label_to_category)
    return results


def ceilings(dataset, dilations) -> dict[str, dict]:
    from refinemask.evaluation import evaluate_coco

    out = {}
    for size in (28, 112):
        metrics = evaluate_coco(dataset.coco.dataset, ceiling_results(dataset, size), ("segm", "boundary"), dilations)
        out[f"GT through {size}×{size}"] = metrics
    return out


def train_and_score(key: str, config_name: str, out: Path, iters: int, seed: int, data: list[str],
                    extra: list[str] = ()) -> dict:
    from refinemask.config import load_config
    from refinemask.demo_report import evaluate_run
    from refinemask.engine.train import train

    config = load_config(
        config_name,
        [
            f"train.output_dir={out / f'{key}_seed{seed}'}", *data,
            f"train.seed={seed}", f"solver.max_iters={iters}", "train.eval_at_end=false",
            "train.progress_bar=false", f"train.checkpoint_every={max(iters, 1)}", *extra,
        ],
    )
    weights = train(config)
    return evaluate_run(config, weights)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--images", type=int, default=200, help="training images")
    parser.add_argument("--val-images", type=int, default=50, help="validation images")
    parser.add_argument("--preset", default="hard")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for both models, e.g. solver.base_lr=4e-4")
    parser.add_argument("--heads", nargs="+", choices=[*HEADS, *STUDY], default=list(HEADS))
    parser.add_argument("--out", default="bench-quality")
    parser.add_argument("--ceilings-only", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)

    from refinemask.config import load_config
    from refinemask.demo_report import GT_BOXES
    from refinemask.engine.data import build_dataset, prepare_synthetic_data

    data = [
        f"data.synthetic.root={out / 'data'}", f"data.synthetic.preset={args.preset}",
        f"data.synthetic.num_images={args.images}", f"data.synthetic.num_val_images={args.val_images}",
        *args.set,
    ]
    base = load_config("quickstart_refinemask", [f"train.output_dir={out}", *data])
    prepare_synthetic_data(base)
    val = build_dataset(base, "val")
    dilations = list(base.eval.boundary_dilations)
    table: dict[str, list[dict]] = {name: [m] for name, m in ceilings(val, dilations).items()}
    if not args.ceilings_only:
        for seed in args.seeds:
            for key in args.heads:
                config_name, display, extra = STUDY[key] if key in STUDY else (*HEADS[key], [])
                metrics = train_and_score(key, config_name, out, args.iters, seed, data, extra)
                table.setdefault(display, []).append(metrics)
                gt_rows = {k[len(GT_BOXES):]: v for k, v in metrics.items() if k.startswith(GT_BOXES)}
                table.setdefault(f"{display} on GT boxes", []).append(gt_rows)
                print(display, "seed", seed, json.dumps({f"{a}.{b}": metrics.get(a, {}).get(b) for a, b in ROWS}), flush=True)

    header = "| | " + " | ".join(f"{a} {b}" for a, b in ROWS) + " |"
    print()
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name, runs in table.items():
        cells = []
        for a, b in ROWS:
            values = [r[a][b] for r in runs if a in r]  # no box AP on GT boxes or for the ceilings
            if not values:
                cells.append("")
                continue
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{np.mean(values):.3f}{spread}")
        print(f"| {name} ({len(runs)} run{'s' if len(runs) > 1 else ''}) | " + " | ".join(cells) + " |")
    (out / "quality.json").write_text(json.dumps(table, indent=1, default=lambda v: None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
