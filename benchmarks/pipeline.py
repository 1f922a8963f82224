"""Input pipeline at COCO settings: data loading + augmentation, then the mask targets.

What one training process must prepare per image, measured on this CPU:

  * loading: read the JPEG, decode the 7-or-so polygons into full-size masks, the random flip
    (``CocoDetection`` + ``TrainingSamples``, exactly what a data-loader worker runs), timed in
    this process: the per-worker rate. Then the same through a ``DataLoader`` with the default
    workers of the COCO configs (4) and batches of 2, as the trainer builds it;
  * targets: what the training process computes on the CPU per image once the RoIs are
    sampled: the 14/28/56/112 polygon targets of every positive RoI (all positives train the
    mask head, as in the official code; 512 sampled RoIs at a positive fraction of 0.25 give up
    to 128) and the semantic target.

The images are generated: 800×1333 JPEGs, each with ``--instances`` star-shaped polygon
instances of 12–60 vertices (COCO's polygons have about 25 on average), 24–400 px across.
Positive RoIs are the GT boxes jittered to IoU ≥ 0.5, as the sampler's positives are.

    python benchmarks/pipeline.py                       # 16 images, 7 instances, 128 positives
    python benchmarks/pipeline.py --positives 512 --workers 4 --json pipeline.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import positive_rois, scene_polygons

STAGE_SIZES = (14, 28, 56, 112)

# Per-image steps are timed in this process's CPU time by default: on a shared machine it is
# inflated far less than wall time, and it is what a dedicated core would take (``--clock wall``
# for wall time). The DataLoader's throughput is wall time by nature.
CLOCK = time.process_time


def write_dataset(root: Path, images: int, height: int, width: int, instances: int, seed: int = 0) -> tuple[Path, Path]:
    """``images`` JPEGs (quality 90) and a COCO json of their polygon instances; (json, image dir)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 81)]}
    for i in range(images):
        name = f"{i:04d}.jpg"
        # smooth colour noise, so the JPEG is about as large as a photo's
        small = rng.uniform(0, 255, (height // 8, width // 8, 3)).astype(np.uint8)
        canvas = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR)).copy()
        for parts in scene_polygons(rng, height, width, instances):
            rle = mask_utils.merge(mask_utils.frPyObjects([p.tolist() for p in parts], height, width))
            mask = mask_utils.decode(rle).astype(bool)
            canvas[mask] = rng.integers(0, 256, 3)
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 81)),
                "segmentation": [p.tolist() for p in parts], "area": float(mask.sum()), "bbox": [x, y, w, h],
                "iscrowd": 0,
            })
        Image.fromarray(canvas).save(image_dir / name, quality=90)
        coco["images"].append({"id": i + 1, "file_name": name, "height": height, "width": width})
    ann = root / "train.json"
    ann.write_text(json.dumps(coco))
    return ann, image_dir


def load_seconds(samples, keys: list[tuple[int, int]]) -> list[float]:
    """Seconds per sample of ``samples[key]``, as one data-loader worker runs it."""
    times = []
    for key in keys:
        start = CLOCK()
        samples[key]
        times.append(CLOCK() - start)
    return times


def loader_images_per_second(samples, keys: list[tuple[int, int]], workers: int, batch_size: int) -> float:
    """Images per second through the trainer's DataLoader (``epoch_loader``), after its first batch."""
    from refinemask.engine.data import epoch_loader

    batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
    loader = iter(epoch_loader(samples, batches, workers, seed=0))
    next(loader)  # worker start-up is paid once per epoch, not per image
    start = time.perf_counter()
    count = 0
    for images, _ in loader:
        count += len(images)
    return count / (time.perf_counter() - start)


def device_bytes(image: torch.Tensor, target: dict) -> int:
    """Bytes the trainer copies to the device for one sample: the image and every tensor of its target."""
    return image.nbytes + sum(v.nbytes for v in target.values() if isinstance(v, torch.Tensor))


def mask_bytes(target: dict) -> int:
    """Bytes of the target's bitmaps: every instance's, or the RLE instances' and the union."""
    return sum(target[k].nbytes for k in ("masks", "semantic") if k in target)


def bytes_per_image(dataset, samples, keys) -> dict[str, float]:
    """Mean bytes per image sent to the device: the plain target (every instance's bitmap, as
    before) and the compact one of ``TrainingSamples`` (bitmaps of RLE instances and the union)."""
    plain = [dataset[index] for index, _ in keys]
    compact = [samples[key] for key in keys]
    return {
        "before": statistics.mean(device_bytes(*p) for p in plain),
        "after": statistics.mean(device_bytes(*c) for c in compact),
        "masks_before": statistics.mean(mask_bytes(p[1]) for p in plain),
        "masks_after": statistics.mean(mask_bytes(c[1]) for c in compact),
    }


def target_seconds(targets: list[dict], positives: int, sizes=STAGE_SIZES, reference: bool = False) -> dict:
    """Median seconds per image of the mask targets (all stage sizes) and of the semantic target.

    With ``reference``, the per-RoI formulation the tests hold the batched targets equal to is
    timed too, alternating with it image by image (a ratio measured under the same load).
    """
    from refinemask.modeling.targets import instance_union, rasterize_polygons_at_sizes, semantic_target, stage_mask_targets

    def rasterise_only(boxes, gt_index, target, sizes, image_size):
        # the CPU part when training on a GPU: uint8 masks, made float on the device
        polygons = [target["polygons"][int(g)] for g in gt_index]
        clipped = boxes.clone()
        clipped[:, 0::2] = clipped[:, 0::2].clamp(0, image_size[1])
        clipped[:, 1::2] = clipped[:, 1::2].clamp(0, image_size[0])
        return rasterize_polygons_at_sizes(polygons, clipped.numpy(), tuple(sizes))

    functions = {"mask": stage_mask_targets, "rasterise": rasterise_only}
    if reference:
        from refinemask.modeling.targets_reference import stage_mask_targets_reference

        functions["reference"] = stage_mask_targets_reference
    times: dict[str, list[float]] = {name: [] for name in [*functions, "semantic"]}
    for i, target in enumerate(targets):
        height, width = target["masks"].shape[-2:]
        boxes, gt_index = positive_rois(target["boxes"].as_subclass(torch.Tensor), positives, seed=i)
        for name, function in functions.items():
            start = CLOCK()
            function(boxes, gt_index, target, sizes, (height, width))
            times[name].append(CLOCK() - start)
        start = CLOCK()
        padded = ((height + 31) // 32 * 32, (width + 31) // 32 * 32)
        semantic_target([instance_union(target)], padded, (padded[0] // 4, padded[1] // 4))
        times["semantic"].append(CLOCK() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", default="800x1333", help="HxW of the generated images")
    parser.add_argument("--instances", type=int, default=7)
    parser.add_argument("--positives", type=int, default=128, help="positive RoIs per image (512 x 0.25)")
    parser.add_argument("--workers", type=int, default=4, help="data-loader workers (the COCO configs' 4)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--no-loader", action="store_true", help="skip the multi-worker DataLoader run")
    parser.add_argument("--reference", action="store_true",
                        help="also time the one-RoI-at-a-time targets (refinemask/modeling/targets_reference.py)")
    parser.add_argument("--data", help="reuse (or create) the generated data set here")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="time per-image steps in CPU time of this process (default) or wall time")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))

    from refinemask.data.coco import CocoDetection
    from refinemask.engine.data import TrainingSamples, sample_seed

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp)
        ann, image_dir = root / "train.json", root / "images"
        if not ann.is_file():
            ann, image_dir = write_dataset(root, args.images, height, width, args.instances)
        dataset = CocoDetection(ann, image_dir, keep_polygons=True, remove_empty=True)
        samples = TrainingSamples(dataset, flip_prob=0.5)
        keys = [(i, sample_seed(0, 0, 0, i)) for i in range(len(dataset))]

        load_seconds(samples, keys[:1])  # warm-up: first reads, imports
        per_sample = load_seconds(samples, keys)
        loaded = [samples[k][1] for k in keys]
        sent = bytes_per_image(dataset, samples, keys)
        timed = target_seconds(loaded, args.positives, reference=args.reference)
        mask_s, semantic_s = timed["mask"], timed["semantic"]
        coarse_s = target_seconds(loaded, args.positives, sizes=(28,))["mask"]
        loader_rate = None if args.no_loader else loader_images_per_second(samples, keys, args.workers, args.batch_size)

    load_s = statistics.median(per_sample)
    targets_s = mask_s + semantic_s
    result = {
        "size": f"{height}x{width}", "images": len(keys), "instances": args.instances, "positives": args.positives,
        "load_s_per_image": load_s, "images_per_s_per_worker": 1.0 / load_s,
        "workers": args.workers, "loader_images_per_s": loader_rate,
        "mask_targets_s_per_image": mask_s, "mask_targets_28_only_s_per_image": coarse_s,
        "semantic_target_s_per_image": semantic_s,
        "reference_mask_targets_s_per_image": timed.get("reference"),
        "rasterise_only_s_per_image": timed["rasterise"],
        "targets_s_per_iteration": targets_s * args.batch_size, "batch_size": args.batch_size,
        # the training process: images/s its targets allow, and the workers' ideal throughput
        "target_images_per_s": 1.0 / targets_s,
        "ideal_loader_images_per_s": args.workers / load_s,
        "device_bytes_per_image_all_bitmaps": sent["before"], "device_bytes_per_image_compact": sent["after"],
        "mask_bytes_per_image_all_bitmaps": sent["masks_before"], "mask_bytes_per_image_compact": sent["masks_after"],
        "clock": args.clock,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    result["images_per_s_one_process"] = min(result["target_images_per_s"], result["ideal_loader_images_per_s"])
    print(f"{len(keys)} images of {height}x{width}, {args.instances} instances each, {args.positives} positive RoIs; "
          f"load average {result['load_average'][0]:.2f} on {result['cpu_count']} cores; per-image times in "
          f"{'CPU' if args.clock == 'cpu' else 'wall'} time")
    print("| step | where | per image | images/s |")
    print("|---|---|---|---|")
    print(f"| load + decode masks + flip | one worker | {load_s * 1000:.1f} ms | {1 / load_s:.1f} |")
    if loader_rate is not None:
        print(f"| DataLoader, {args.workers} workers, batch {args.batch_size} | this machine | - | {loader_rate:.1f} |")
    print(f"| mask targets 14/28/56/112 | training process | {mask_s * 1000:.1f} ms | {1 / mask_s:.1f} |")
    print(f"| (of which rasterisation, the CPU part on a GPU) | training process | {timed['rasterise'] * 1000:.1f} ms | "
          f"{1 / timed['rasterise']:.1f} |")
    if args.reference:
        print(f"| (one RoI at a time, as before) | training process | {timed['reference'] * 1000:.1f} ms | "
              f"{1 / timed['reference']:.1f} |")
    print(f"| (Mask R-CNN: 28 only) | training process | {coarse_s * 1000:.1f} ms | {1 / coarse_s:.1f} |")
    print(f"| semantic target | training process | {semantic_s * 1000:.1f} ms | {1 / semantic_s:.1f} |")
    print(f"targets per iteration of {args.batch_size} images: {result['targets_s_per_iteration'] * 1000:.0f} ms; "
          f"one training process with {args.workers} workers (one core each) prepares "
          f"{result['images_per_s_one_process']:.1f} images/s "
          f"(workers {result['ideal_loader_images_per_s']:.1f}, targets {result['target_images_per_s']:.1f})")
    mib = 2**20
    print(f"bytes per image to the device (float32 image + target): {sent['before'] / mib:.1f} MiB with every "
          f"instance's bitmap (before), {sent['after'] / mib:.1f} MiB with the union instead of polygon bitmaps "
          f"(after); of which masks {sent['masks_before'] / mib:.2f} -> {sent['masks_after'] / mib:.2f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
